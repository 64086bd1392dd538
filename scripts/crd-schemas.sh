#!/usr/bin/env bash
# Prints the folder of the Prometheus Operator CRD JSON schemas (ServiceMonitor, PrometheusRule,
# PodMonitor; files named monitoring.coreos.com-<kind>_v1.json) used to validate the chart:
# $CRD_SCHEMA_DIR, else ../shared/schemas/crds beside the repo, else a copy downloaded once from
# the datreeio CRDs-catalog into .tools/cache/crds, at a pinned commit of the catalog, each file
# checked against its pinned sha256 (a cached copy too, before it is trusted again).
# To move the pin: take a newer commit of datreeio/CRDs-catalog and the sha256 of its three files.
set -euo pipefail
cd "$(dirname "$0")/.."

catalog=https://raw.githubusercontent.com/datreeio/CRDs-catalog/7b1e26ef9deea49293714d204c1a2270aab1178f
declare -A sha256=(
  [servicemonitor]=8978f86e2a7cb281a9ca7bc30d857e0553666658dfe062078c51e99d3f20cd14
  [prometheusrule]=9cd71d75b714b541a0be960b46bd961dbf1f0106071381cd88f54dfe80b8bd9d
  [podmonitor]=a33fd47f73be948090327c6d2076f4739217111e1caf8a2999a5562c59eade9c
)
pinned() { echo "${sha256[$1]}  $2" | sha256sum --check --status; }
dir=${CRD_SCHEMA_DIR:-../shared/schemas/crds}
if [ -d "$dir" ]; then
  (cd "$dir" && pwd)
  exit 0
fi
dir=.tools/cache/crds
mkdir -p "$dir"
# Each schema goes to a temporary file first and into place only once complete, non-empty, valid
# JSON and the pinned file, so an interrupted or failed download never leaves a file that later
# runs would trust.
tmp=""
trap 'rm -f "$tmp"' EXIT
for kind in servicemonitor prometheusrule podmonitor; do
  file=$dir/monitoring.coreos.com-${kind}_v1.json
  if [ -s "$file" ]; then
    pinned "$kind" "$file" && continue
    echo "crd-schemas: $file is not the pinned schema; downloading it again" >&2
  fi
  url=$catalog/monitoring.coreos.com/${kind}_v1.json
  tmp=$(mktemp "$dir/.download.XXXXXX")
  curl -fsSL --max-time 60 -o "$tmp" "$url"
  [ -s "$tmp" ] || { echo "crd-schemas: $url is empty" >&2; exit 1; }
  python3 -m json.tool "$tmp" >/dev/null || { echo "crd-schemas: $url is not valid JSON" >&2; exit 1; }
  pinned "$kind" "$tmp" \
    || { echo "crd-schemas: $url does not match its pinned sha256 ${sha256[$kind]}" >&2; exit 1; }
  mv "$tmp" "$file"
  tmp=""
done
(cd "$dir" && pwd)
