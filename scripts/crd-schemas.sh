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
for kind in servicemonitor prometheusrule podmonitor; do
  file=$dir/monitoring.coreos.com-${kind}_v1.json
  [ -s "$file" ] || curl -fsSL --max-time 60 -o "$file" "$catalog/monitoring.coreos.com/${kind}_v1.json"
done
(cd "$dir" && pwd)
