#!/usr/bin/env bash
# Runs the Helm chart's workload with the real image under `podman kube play`, for machines without
# a Kubernetes cluster: renders the chart with the local image, keeps what podman understands (the
# Deployment and its ConfigMaps; its Secrets as podman secrets), publishes the `http` port on 127.0.0.1, waits for
# /readyz, checks the pod runs as the chart says (UID/GID 10001, read-only root file system, the
# chart's environment), runs scripts/smoke-test.sh and the chart's `helm test` script against it,
# then tears it down.
# This proves the chart's port, probe paths, env variable names, UID and read-only root file system
# work with the image. (The image comes from `scripts/image.sh build`.)
#
# Environment:
#   IMAGE            image to run (default wine-quality:<version in pyproject.toml>; a name without
#                    a registry means podman's localhost/)
#   KUBE_PLAY_PORT   host port on 127.0.0.1 (default: a free one)
#   READY_TIMEOUT    seconds to wait for /readyz (default 90)
#   KUBE_PLAY_VALUES extra values file for the chart (optional)
#   KUBE_PLAY_SCRAPE 1: also render the chart's ServiceMonitor and, after the smoke test, have a real
#                    Prometheus scrape the pod as it says (scripts/prometheus-scrape.sh); default 0
#   CONTAINERS_CONF  podman configuration (default scripts/podman/containers.conf)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
use_tools
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/podman/containers.conf}

chart=chart/wine-quality
# A release name of its own per run, so that concurrent runs on one machine never share a pod.
release=kube-play-$$
python=.venv/bin/python
image=${IMAGE:-wine-quality:$(scripts/version.sh)}
[[ ${image%%:*} == */* ]] || image=localhost/$image
ready_timeout=${READY_TIMEOUT:-90}

podman image exists "$image" || die "image $image not found; build it with scripts/image.sh build"
command -v helm >/dev/null 2>&1 || scripts/install-helm.sh

port=${KUBE_PLAY_PORT:-$(free_port)}
mkdir -p build
work=$(mktemp -d build/kube-play.XXXXXX)
manifest=$work/kube-play.yaml
played=false
pod=""
secrets=()

cleanup() {
  local status=$?
  if $played; then
    if [ $status -ne 0 ]; then
      log "failed; logs of the pod follow"
      [ -z "$pod" ] || podman pod logs "$pod" 2>&1 | grep -v '"path":"/readyz"' | tail -n 60 >&2 || true
    fi
    podman kube down "$manifest" >/dev/null 2>&1 || log "podman kube down failed"
  fi
  local secret
  for secret in "${secrets[@]}"; do
    podman secret rm "$secret" >/dev/null 2>&1 || log "podman secret rm $secret failed"
  done
  rm -rf "$work"
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

values_args=(
  --set "image.repository=${image%:*}" --set "image.tag=${image##*:}" --set image.pullPolicy=Never
)
[ -z "${KUBE_PLAY_VALUES:-}" ] || values_args+=(--values "$KUBE_PLAY_VALUES")
scrape=${KUBE_PLAY_SCRAPE:-0}
[ "$scrape" != 1 ] || values_args+=(--set serviceMonitor.enabled=true)
helm template "$release" "$chart" "${values_args[@]}" >"$work/rendered.yaml"
"$python" scripts/manifests.py kube-play "$work/rendered.yaml" "$manifest" --host-port "$port" \
  --secrets "$work/secrets"
# The chart's Secrets (the CSRF key) become podman secrets, which the pod's secretKeyRef reads.
for file in "$work"/secrets/*.json; do
  [ -e "$file" ] || continue
  name=$(basename "$file" .json)
  podman secret create "$name" "$file" >/dev/null || die "podman secret create $name failed"
  secrets+=("$name")
done

log "podman kube play: $image as release $release on 127.0.0.1:$port"
played=true
podman kube play "$manifest" >"$work/play.log" || { cat "$work/play.log" >&2; die "podman kube play failed"; }
# `podman kube play` prints "Pod:" and the new pod's ID on the next line.
pod=$(sed -n '/^Pod:/{n;p;q}' "$work/play.log")
[ -n "$pod" ] || { cat "$work/play.log" >&2; die "podman kube play reported no pod"; }
log "pod $(podman pod inspect --format '{{.Name}}' "$pod")"

url=http://127.0.0.1:$port
start=$SECONDS
wait_for_url "$url/readyz" "$ready_timeout" \
  || die "$url/readyz not ready within ${ready_timeout}s: $(curl -sS --max-time 2 "$url/readyz" 2>&1)"
log "ready after $((SECONDS - start))s: $(curl -fsS --max-time 2 "$url/readyz")"

# The container runs as the chart says, not only as the image defaults.
container=$(podman ps --filter "pod=$pod" --format '{{.Names}}' | grep -v -- '-infra$' | head -n 1)
[ -n "$container" ] || die "no container of pod $pod is running"
ids=$(podman exec "$container" id -u):$(podman exec "$container" id -g)
[ "$ids" = 10001:10001 ] || die "container runs as uid:gid $ids, expected 10001:10001"
root_mode=$(podman exec "$container" cat /proc/mounts | awk '$2 == "/" { split($4, o, ","); print o[1] }')
[ "$root_mode" = ro ] || die "the root file system is mounted '$root_mode', expected read-only"
podman exec "$container" sh -c ': > /tmp/.write-test && rm /tmp/.write-test' || die "/tmp is not writable"
workers=$(podman exec "$container" printenv GUNICORN_WORKERS) || die "GUNICORN_WORKERS is not set in the container"
log "uid:gid $ids, read-only root file system, writable /tmp, GUNICORN_WORKERS=$workers"
# The CSRF key comes from the chart's Secret (never printed).
key_length=$(podman exec "$container" sh -c 'printf %s "${WINE_QUALITY_SECRET_KEY:-}" | wc -c')
[ "$key_length" -gt 0 ] || die "WINE_QUALITY_SECRET_KEY is not set in the container"
log "WINE_QUALITY_SECRET_KEY from the chart's Secret: $key_length characters"

scripts/smoke-test.sh "$url"

# The chart's `helm test` check (readiness, then one real prediction), run by the host's curl.
"$python" scripts/manifests.py helm-test-script "$work/rendered.yaml" >"$work/helm-test.sh"
URL=$url sh -e "$work/helm-test.sh" >"$work/helm-test.log" 2>&1 \
  || { cat "$work/helm-test.log" >&2; die "the helm test script failed"; }
log "helm test script passed: $(tail -n 1 "$work/helm-test.log")"
if [ "$scrape" = 1 ]; then
  # kube play publishes the container port named http; the ServiceMonitor must scrape that one.
  scraped=$("$python" scripts/scrape-config.py endpoint "$work/rendered.yaml" \
    | "$python" -c 'import json, sys; print(json.load(sys.stdin)["port_name"])')
  [ "$scraped" = http ] || die "the ServiceMonitor scrapes container port '$scraped', kube play publishes only http"
  scripts/prometheus-scrape.sh "$work/rendered.yaml" \
    "$(podman pod inspect --format '{{.Name}}' "$pod")=127.0.0.1:$port"
fi
log "memory in use after the smoke test: $(podman stats --no-stream --format '{{.MemUsage}}' "$container" 2>/dev/null || echo unknown)"
log "passed"
