#!/usr/bin/env bash
# A real Prometheus scrapes the chart's pods as the chart's ServiceMonitor says, then a PromQL query
# must find the predictions the smoke test made:
#   scripts/prometheus-scrape.sh RENDERED POD=HOST:PORT [POD=HOST:PORT...]
# RENDERED is the chart's rendered manifests (with the ServiceMonitor); each POD=HOST:PORT is one
# pod's container port named by the ServiceMonitor's endpoint, reachable from here (published by
# podman or forwarded by kubectl). scripts/scrape-config.py writes the scrape job (path, interval,
# timeout, labels) from the ServiceMonitor; promtool checks it; Prometheus runs on a free port of
# 127.0.0.1 with its storage in a temporary folder, both removed on exit.
# Passes when every target is up and the query returns a series; prints each series' value.
#
# Environment:
#   PROMETHEUS        the prometheus command (default: prometheus)
#   PROMQL            query that must return a series (default: wine_quality_predictions_total > 0)
#   SCRAPE_TIMEOUT    seconds to wait for the targets and the query (default: 3 scrape intervals + 30)
#   PYTHON            python with PyYAML (default: .venv/bin/python, else python3)
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

[ $# -ge 2 ] || die "usage: $0 RENDERED POD=HOST:PORT [POD=HOST:PORT...]"
rendered=$1
shift
PROMETHEUS=${PROMETHEUS:-prometheus}
PROMQL=${PROMQL:-wine_quality_predictions_total > 0}
# The project's .venv, else the system's python3 (with PyYAML), as on the CI's e2e-kind runner.
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
command -v "$PROMETHEUS" >/dev/null 2>&1 || die "$PROMETHEUS not found (scripts/install-tools.sh prometheus)"

targets=()
for target in "$@"; do targets+=(--target "$target"); done
endpoint=$("$python" scripts/scrape-config.py endpoint "$rendered")
field() { "$python" -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$endpoint" "$1"; }
interval=$(field interval)
# Prometheus durations such as 30s, 1m or 1m30s, in seconds.
interval_seconds=$("$python" -c '
import re, sys
units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
parts = re.findall(r"(\d+)(ms|s|m|h)", sys.argv[1])
print(max(1, round(sum(int(n) * units[u] for n, u in parts))))' "$interval")
timeout=${SCRAPE_TIMEOUT:-$((3 * interval_seconds + 30))}

mkdir -p build
work=$(mktemp -d build/prometheus-scrape.XXXXXX)
prometheus_pid=""
cleanup() {
  local status=$?
  if [ -n "$prometheus_pid" ]; then
    kill "$prometheus_pid" 2>/dev/null && wait "$prometheus_pid" 2>/dev/null
    [ "$status" -eq 0 ] || tail -n 20 "$work/prometheus.log" >&2 || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$python" scripts/scrape-config.py prometheus "$rendered" "${targets[@]}" >"$work/prometheus.yml"
if command -v promtool >/dev/null 2>&1; then
  promtool check config "$work/prometheus.yml" >/dev/null || die "promtool rejects the generated configuration"
fi
log "job $(field job): $(field path) on container port $(field port_name)/$(field container_port)," \
  "every $interval (timeout $(field scrape_timeout)), targets: $*"

port=$(free_port)
api=http://127.0.0.1:$port/api/v1
"$PROMETHEUS" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$port" >"$work/prometheus.log" 2>&1 &
prometheus_pid=$!
wait_for_url "http://127.0.0.1:$port/-/ready" 60 kill -0 "$prometheus_pid" \
  || die "prometheus did not become ready on 127.0.0.1:$port"

# Prints "up/total" of the active targets, and the reason of the first that is down.
targets_up() {
  curl -fsS --max-time 5 "$api/targets?state=active" | "$python" -c '
import json, sys
active = json.load(sys.stdin)["data"]["activeTargets"]
up = [t for t in active if t["health"] == "up"]
down = [t["scrapeUrl"] + ": " + (t["lastError"] or t["health"]) for t in active if t["health"] != "up"]
print(f"{len(up)}/{len(active)}", *down[:1])'
}
# Prints one line per series of the query's result: labels and value.
query() {
  curl -fsS --max-time 5 --get --data-urlencode "query=$PROMQL" "$api/query" | "$python" -c '
import json, sys
for series in json.load(sys.stdin)["data"]["result"]:
    labels = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(series["metric"].items()))
    value = series["value"][1]
    print(f"{{{labels}}} {value}")'
}

deadline=$((SECONDS + timeout))
state=""
until [[ $state == "$#/$#" ]]; do
  [ "$SECONDS" -lt "$deadline" ] || die "targets not all up after ${timeout}s: $state"
  sleep 1
  state=$(targets_up) || state="(targets API unavailable)"
done
log "targets up: $state"
result=""
until [ -n "$result" ]; do
  [ "$SECONDS" -lt "$deadline" ] || die "'$PROMQL' returned nothing after ${timeout}s"
  result=$(query) || result=""
  [ -n "$result" ] || sleep 1
done
while read -r line; do log "$PROMQL: $line"; done <<<"$result"
log "passed"
