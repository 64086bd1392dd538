#!/usr/bin/env bash
# Builds the service image and proves it runs the way Kubernetes will run it.
#
#   scripts/image.sh build   build the Dockerfile into $IMAGE from the model artifact in $MODEL_DIR
#   scripts/image.sh test    run $IMAGE as the chart does (UID 10001, read-only root file system,
#                            tmpfs /tmp, the chart's environment), wait for /readyz, run
#                            scripts/smoke-test.sh against it, stop it with SIGTERM and check that it
#                            exits with status 0 within the grace period
#
# Uses docker when a Docker engine answers (`docker info`), as on GitHub runners; otherwise podman
# with scripts/podman/containers.conf, on a local stand-in for the python base image when no
# registry is reachable (scripts/build-base-image.sh).
#
# Environment:
#   MODEL_DIR          artifact to ship (default artifacts/model; trained first when missing there)
#   IMAGE              image reference (default wine-quality:<version in pyproject.toml>)
#   BASE_IMAGE         base image; default: the Dockerfile's with docker, the local stand-in with podman
#   CONTAINER_ENGINE   force docker or podman
#   READY_TIMEOUT      seconds `test` waits for /readyz (default 60, the chart's startup probe budget)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

log() { echo "image.sh: $*" >&2; }
die() { log "$*"; exit 1; }

choose_engine() {
  if [ -n "${CONTAINER_ENGINE:-}" ]; then
    echo "$CONTAINER_ENGINE"
  elif command -v docker >/dev/null 2>&1 && timeout 30 docker info >/dev/null 2>&1; then
    echo docker
  else
    echo podman
  fi
}

engine=$(choose_engine)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/scripts/podman/containers.conf}
version=$(scripts/version.sh)
image=${IMAGE:-wine-quality:$version}
model_dir=${MODEL_DIR:-artifacts/model}

# podman, runc and debootstrap from Debian, when missing (needs root or sudo).
ensure_podman() {
  local cmd missing=() sudo=""
  for cmd in podman runc debootstrap; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "missing ${missing[*]}: install them (apt-get install ${missing[*]})"
    sudo=sudo
  fi
  log "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

metadata_field() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1/metadata.json" "$2"
}

# The artifact as a path inside the build context: artifacts/model itself, or a copy of an artifact
# from anywhere else in build/image-model (the only other place .dockerignore lets through).
stage_model() {
  if [ ! -f "$model_dir/metadata.json" ]; then
    [ "$model_dir" = artifacts/model ] || die "$model_dir/metadata.json not found: MODEL_DIR must name a trained artifact"
    log "no artifact in $model_dir: training one first (make train)"
    make --no-print-directory train MODEL_DIR="$model_dir" >&2
  fi
  local resolved
  resolved=$(realpath "$model_dir")
  if [ "$resolved" = "$repo/artifacts/model" ] || [ "$resolved" = "$repo/build/image-model" ]; then
    echo "${resolved#"$repo/"}"
  else
    rm -rf build/image-model
    cp -R "$model_dir" build/image-model
    echo build/image-model
  fi
}

git_commit() {
  local commit
  commit=$(git rev-parse HEAD 2>/dev/null) || { echo unknown; return; }
  # Uncommitted changes to tracked files make the image differ from the commit it names.
  if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit-dirty"
  fi
  echo "$commit"
}

# Build time, or SOURCE_DATE_EPOCH for reproducible builds.
created() {
  date -u --date "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y-%m-%dT%H:%M:%SZ
}

image_size() {
  "$engine" image inspect --format '{{.Size}}' "$image" | awk '{printf "%d bytes (%.0f MB)\n", $1, $1 / 1000000}'
}

build() {
  local context_model model_version base start
  [ "$engine" = podman ] && ensure_podman
  # One build at a time per checkout: concurrent builds would share build/image-model.
  mkdir -p build
  exec 8>build/.image-build.lock
  flock --timeout 1800 8 || die "timed out waiting for another image build in this checkout"
  context_model=$(stage_model)
  model_version=$(metadata_field "$context_model" version)

  local args=(
    --file Dockerfile --tag "$image"
    --build-arg "MODEL_DIR=$context_model"
    --build-arg "VERSION=$version"
    --build-arg "GIT_COMMIT=$(git_commit)"
    --build-arg "MODEL_VERSION=$model_version"
    --build-arg "CREATED=$(created)"
  )
  base=${BASE_IMAGE:-}
  if [ "$engine" = podman ]; then
    [ -n "$base" ] || base=$(scripts/build-base-image.sh)
    # chroot isolation: RUN steps cannot use the OCI runtime on these hosts. Docker format keeps
    # the HEALTHCHECK, which the OCI image format has no field for.
    args+=(--isolation=chroot --network=host --format=docker --layers)
  fi
  [ -n "$base" ] && args+=(--build-arg "BASE_IMAGE=$base")

  log "building $image with $engine from ${base:-the default base image}, model $model_version"
  start=$SECONDS
  if [ "$engine" = docker ]; then
    if docker buildx version >/dev/null 2>&1; then
      docker buildx build --load "${args[@]}" .
    else
      docker build "${args[@]}" .
    fi
  else
    podman build "${args[@]}" .
  fi
  log "built $image in $((SECONDS - start)) s; size $(image_size)"
  # The image this build replaced under the same tag is left untagged; drop such leftovers of the
  # project's earlier builds (never a tagged image, never one a container uses).
  "$engine" image prune --force --filter "label=org.opencontainers.image.title=wine-quality" \
    >/dev/null || log "could not remove the untagged images of earlier builds"
}

# --- test ----------------------------------------------------------------------------------------

container=""

cleanup() {
  if [ -n "$container" ]; then
    "$engine" rm --force "$container" >/dev/null 2>&1 || true
  fi
  rm -f "${env_file:-}"
}

fail() {
  log "FAILED: $*"
  if [ -n "$container" ]; then
    log "last lines of the container's log:"
    "$engine" logs --tail 40 "$container" >&2 2>&1 || true
  fi
  exit 1
}

find_helm() {
  PATH="$repo/.tools/bin:$PATH" command -v helm || true
}

# The environment and grace period the chart gives the container, rendered from its defaults.
# Writes the ConfigMap's data as an env file and prints the seconds the container gets after SIGTERM
# (terminationGracePeriodSeconds minus the preStop sleep, which happens before SIGTERM).
chart_env() {
  local helm rendered grace pre_stop
  helm=$(find_helm)
  if [ -z "$helm" ]; then
    [ -z "${CI:-}" ] || fail "helm is not installed (scripts/install-helm.sh installs it)"
    log "helm not found: running with the image's defaults instead of the chart's environment"
    : >"$env_file"
    echo 30
    return
  fi
  rendered=$("$helm" template image-test chart/wine-quality \
    --show-only templates/configmap.yaml --show-only templates/deployment.yaml)
  awk '/^data:/ { in_data = 1; next } /^[^ ]/ { in_data = 0 }
       in_data && /^  [A-Z_][A-Z0-9_]*: / { key = $1; sub(/:$/, "", key); value = substr($0, length($1) + 4);
         gsub(/^"|"$/, "", value); print key "=" value }' <<<"$rendered" >"$env_file"
  grace=$(sed -n 's/^ *terminationGracePeriodSeconds: *\([0-9]*\)$/\1/p' <<<"$rendered")
  pre_stop=$(awk '/preStop:/ { p = 1 } p && /seconds:/ { print $2; exit }' <<<"$rendered")
  [ -s "$env_file" ] && [ -n "$grace" ] || fail "could not read the chart's environment and grace period"
  echo $((grace - ${pre_stop:-0}))
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

state() {
  "$engine" inspect --format "$1" "$container"
}

wait_ready() {
  local url=$1 deadline=$((SECONDS + ${READY_TIMEOUT:-60}))
  while [ $SECONDS -lt $deadline ]; do
    [ "$(state '{{.State.Running}}')" = true ] || fail "the container exited before it was ready"
    if curl -fsS --max-time 2 "$url/readyz" >/dev/null 2>&1; then
      log "ready after $((SECONDS - deadline + ${READY_TIMEOUT:-60})) s"
      return 0
    fi
    sleep 1
  done
  fail "$url/readyz did not answer 200 within ${READY_TIMEOUT:-60} s"
}

# The image's own HEALTHCHECK command, run inside the container: it must pass without curl.
check_healthcheck() {
  local test_cmd
  mapfile -d '' test_cmd < <("$engine" image inspect --format '{{json .Config.Healthcheck.Test}}' "$image" |
    python3 -c 'import json, sys; t = json.load(sys.stdin) or ["NONE"]
args = t[1:] if t[0] == "CMD" else ["sh", "-c", t[1]] if t[0] == "CMD-SHELL" else []
sys.stdout.write("".join(a + "\0" for a in args))')
  [ ${#test_cmd[@]} -gt 0 ] || fail "the image has no HEALTHCHECK"
  "$engine" exec "$container" "${test_cmd[@]}" || fail "the image's HEALTHCHECK command fails"
  log "HEALTHCHECK command: healthy"
}

# SIGTERM, as the kubelet sends it; gunicorn must finish and exit 0 before the grace period ends.
check_graceful_stop() {
  local grace=$1 start elapsed code
  start=$SECONDS
  "$engine" stop --time "$grace" "$container" >/dev/null
  elapsed=$((SECONDS - start))
  code=$(state '{{.State.ExitCode}}')
  [ "$code" = 0 ] || fail "exit status $code after SIGTERM (137 = killed when the $grace s grace period ran out)"
  [ "$elapsed" -lt "$grace" ] || fail "took ${elapsed} s to stop; the grace period is $grace s"
  if "$engine" logs "$container" 2>&1 | grep -q Traceback; then
    fail "the container's log holds a Python traceback"
  fi
  log "stopped by SIGTERM in ${elapsed} s (grace period $grace s), exit status 0"
}

run_test() {
  local port grace url container_port
  "$engine" image inspect "$image" >/dev/null 2>&1 || die "no image $image: run scripts/image.sh build first"
  [ -x scripts/smoke-test.sh ] || die "scripts/smoke-test.sh is missing"
  env_file=$(mktemp)
  trap cleanup EXIT
  grace=$(chart_env)
  port=$(free_port)
  url=http://127.0.0.1:$port
  # The port the container listens on: PORT of the environment it gets, else the image's EXPOSE.
  container_port=$(sed -n 's/^PORT=//p' "$env_file")
  container_port=${container_port:-$(sed -n 's/^EXPOSE \([0-9]*\)$/\1/p' Dockerfile)}
  [ -n "$container_port" ] || fail "no PORT in the chart's environment and no EXPOSE in the Dockerfile"

  local args=(
    --detach --name "wine-quality-image-test-$$"
    --user 10001:10001 --read-only --tmpfs "/tmp:rw,nosuid,nodev,size=64m,mode=1777"
    --cap-drop ALL --security-opt no-new-privileges
    --env-file "$env_file" --publish "127.0.0.1:$port:$container_port"
  )
  # podman adds writable tmpfs mounts (/run, /var/tmp, ...) to read-only containers; Kubernetes
  # does not. Its HEALTHCHECK timers need systemd; check_healthcheck runs the command instead.
  [ "$engine" = podman ] && args+=(--read-only-tmpfs=false --no-healthcheck)

  log "running $image on $url ($engine; UID 10001, read-only, tmpfs /tmp, the chart's environment)"
  container=$("$engine" run "${args[@]}" "$image")
  wait_ready "$url"
  check_healthcheck
  scripts/smoke-test.sh "$url" || fail "scripts/smoke-test.sh $url failed"
  check_graceful_stop "$grace"
  log "image size: $(image_size)"
  log "PASSED: $image"
}

case "${1:-}" in
  build) build ;;
  test) run_test ;;
  *) echo "usage: scripts/image.sh build|test   (see the header of this script)" >&2; exit 2 ;;
esac
