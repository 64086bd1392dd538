#!/usr/bin/env bash
# Prints the folder of the Prometheus Operator CRD JSON schemas (ServiceMonitor, PrometheusRule,
# PodMonitor; files named monitoring.coreos.com-<kind>_v1.json) used to validate the chart:
# $CRD_SCHEMA_DIR, else ../shared/schemas/crds beside the repo, else a copy downloaded once from
# the datreeio CRDs-catalog into .tools/cache/crds.
set -euo pipefail
cd "$(dirname "$0")/.."

catalog=https://raw.githubusercontent.com/datreeio/CRDs-catalog/main
dir=${CRD_SCHEMA_DIR:-../shared/schemas/crds}
if [ -d "$dir" ]; then
  (cd "$dir" && pwd)
  exit 0
fi
dir=.tools/cache/crds
mkdir -p "$dir"
# Each schema goes to a temporary file first and into place only once complete, non-empty and valid
# JSON, so an interrupted or failed download never leaves a file that later runs would trust.
tmp=""
trap 'rm -f "$tmp"' EXIT
for kind in servicemonitor prometheusrule podmonitor; do
  file=$dir/monitoring.coreos.com-${kind}_v1.json
  [ -s "$file" ] && continue
  url=$catalog/monitoring.coreos.com/${kind}_v1.json
  tmp=$(mktemp "$dir/.download.XXXXXX")
  curl -fsSL --max-time 60 -o "$tmp" "$url"
  [ -s "$tmp" ] || { echo "crd-schemas: $url is empty" >&2; exit 1; }
  python3 -m json.tool "$tmp" >/dev/null || { echo "crd-schemas: $url is not valid JSON" >&2; exit 1; }
  mv "$tmp" "$file"
  tmp=""
done
(cd "$dir" && pwd)
