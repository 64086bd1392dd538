#!/usr/bin/env bash
# A real OCI registry on loopback (Debian's docker-registry: the CNCF distribution registry), for
# `make release-local` and the release tests.
#
#   scripts/registry.sh start [DIR]   start one on a free 127.0.0.1 port with its storage, config,
#                                     log and pid file in DIR (default: a new folder under
#                                     build/registry); wait until it answers; print
#                                     REGISTRY=127.0.0.1:PORT and REGISTRY_DIR=DIR
#   scripts/registry.sh stop DIR      stop the registry started with DIR
#
# Plain HTTP on 127.0.0.1 only: clients need --tls-verify=false (podman, skopeo) or --plain-http
# (helm). docker-registry and skopeo are installed by scripts/install-tools.sh when missing.
set -euo pipefail
shopt -s inherit_errexit # failures inside $(...) stop the script too
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

start() {
  local dir=${1:-} port pid
  if [ -z "$dir" ]; then
    mkdir -p build/registry
    dir=$(mktemp -d "$PWD/build/registry/run.XXXXXX")
  fi
  mkdir -p "$dir/data"
  dir=$(cd "$dir" && pwd)
  if ! command -v docker-registry >/dev/null 2>&1 || ! command -v skopeo >/dev/null 2>&1; then
    scripts/install-tools.sh docker-registry skopeo >&2
  fi
  port=$(free_port)
  cat >"$dir/config.yml" <<YAML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $dir/data}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$port}
YAML
  setsid docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/pid"
  if ! wait_for_url "http://127.0.0.1:$port/v2/" 30 kill -0 "$pid"; then
    tail -n 20 "$dir/registry.log" >&2
    kill "$pid" 2>/dev/null || true
    die "the registry did not answer on 127.0.0.1:$port"
  fi
  log "registry on 127.0.0.1:$port (storage $dir/data)"
  echo "REGISTRY=127.0.0.1:$port"
  echo "REGISTRY_DIR=$dir"
}

stop() {
  local dir=${1:?usage: scripts/registry.sh stop DIR} pid
  [ -f "$dir/pid" ] || die "$dir/pid not found: no registry was started with $dir"
  pid=$(cat "$dir/pid")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$dir/pid"
  log "registry of $dir stopped"
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) sed -n '2,13s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
