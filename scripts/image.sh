#!/usr/bin/env bash
# Builds the service image and proves it runs the way Kubernetes will run it.
#
#   scripts/image.sh build   build the Dockerfile into $IMAGE from the model artifact in $MODEL_DIR
#   scripts/image.sh build-args
#                            print the build arguments `build` passes, KEY=VALUE one a line: the one
#                            place they are computed, for local builds and the CI build job alike
#                            (scripts/release.sh build-env hands them to docker/build-push-action):
#                            BASE_IMAGE, MODEL_DIR (the artifact's path in the build context), VERSION,
#                            GIT_COMMIT (-dirty when tracked files have uncommitted changes),
#                            MODEL_VERSION (from the artifact's metadata.json), CREATED (the time of
#                            $SOURCE_DATE_EPOCH, else now) and, in GitHub Actions, SOURCE (the
#                            repository's URL; elsewhere the Dockerfile's default)
#   scripts/image.sh config-digest [IMAGE|TARBALL]
#                            print the configuration digest (sha256:..., the image ID) of IMAGE in the
#                            engine's store (default $IMAGE) or of an image tarball (`docker save`,
#                            buildx's type=docker output): the release compares it with the image
#                            it tags in the registry (scripts/release.sh verify-digest)
#   scripts/image.sh test    run $IMAGE as the chart does (UID 10001, read-only root file system,
#                            tmpfs /tmp, the chart's environment), wait for /readyz, run
#                            scripts/smoke-test.sh against it, stop it with SIGTERM and check that it
#                            exits with status 0 within the grace period
#
# Uses docker when a Docker engine answers (`docker info`), as on GitHub runners; otherwise podman
# with scripts/podman/containers.conf (podman, runc and debootstrap installed by
# scripts/install-tools.sh when missing), on a local stand-in for the python base image when no
# registry is reachable (scripts/build-base-image.sh).
#
# Environment:
#   MODEL_DIR          artifact to ship (default artifacts/model; trained first when missing there)
#   IMAGE              image reference (default wine-quality:<version in pyproject.toml>)
#   VERSION            the image's version label (default: the version in pyproject.toml)
#   BASE_IMAGE         base image; default: with docker the Dockerfile's pinned tag, plus the digest
#                      it names today where docker buildx can ask the registry (so a re-pushed tag
#                      cannot slip in); with podman the local stand-in
#   CONTAINER_ENGINE   force docker or podman
#   READY_TIMEOUT      seconds `test` waits for /readyz (default 60, the chart's startup probe budget)
set -euo pipefail
shopt -s inherit_errexit # failures inside $(...) stop the script too
cd "$(dirname "$0")/.."
repo=$PWD
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
LOG_NAME=image.sh
use_tools

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
  scripts/install-tools.sh podman runc debootstrap >&2
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
    # -L: `wine-quality train` makes the model directory a link to its current version.
    cp -RL "$model_dir" build/image-model
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

# The Dockerfile's default base image (a pinned tag) with the digest it names today, so the build
# cannot silently pick up a re-pushed tag; the tag alone where docker buildx cannot ask a registry.
base_image_by_digest() {
  local base digest
  base=$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile)
  [ -n "$base" ] || die "Dockerfile has no ARG BASE_IMAGE default"
  if ! docker buildx version >/dev/null 2>&1; then
    echo "$base"
    return
  fi
  digest=$(docker buildx imagetools inspect --format '{{.Manifest.Digest}}' "$base") \
    || die "cannot resolve $base to a digest"
  echo "$base@$digest"
}

base_image() {
  if [ -n "${BASE_IMAGE:-}" ]; then
    echo "$BASE_IMAGE"
  elif [ "$engine" = podman ]; then
    ensure_podman
    scripts/build-base-image.sh
  else
    base_image_by_digest
  fi
}

# build_args CONTEXT_MODEL: the Dockerfile's build arguments, KEY=VALUE one a line (see the header).
build_args() {
  local context_model=$1 base commit model_version
  base=$(base_image)
  commit=$(git_commit)
  model_version=$(metadata_field "$context_model" version)
  echo "BASE_IMAGE=$base"
  echo "MODEL_DIR=$context_model"
  echo "VERSION=${VERSION:-$version}"
  echo "GIT_COMMIT=$commit"
  echo "MODEL_VERSION=$model_version"
  echo "CREATED=$(created)"
  if [ -n "${GITHUB_REPOSITORY:-}" ]; then
    echo "SOURCE=${GITHUB_SERVER_URL:-https://github.com}/$GITHUB_REPOSITORY"
  fi
}

# One build at a time per checkout: concurrent builds would share build/image-model.
lock_build_context() {
  mkdir -p build
  exec 8>build/.image-build.lock
  flock --timeout 1800 8 || die "timed out waiting for another image build in this checkout"
}

print_build_args() {
  [ -f "$model_dir/metadata.json" ] || die "$model_dir/metadata.json not found (train or download the model first)"
  local context_model lines
  lock_build_context
  context_model=$(stage_model)
  lines=$(build_args "$context_model")
  echo "$lines"
}

# podman 4.3 (buildah 1.28) reuses a cached LABEL or ENV layer when only the build arguments it
# expands changed, so a rebuild for a new version or commit would keep the old labels. Prints, NUL
# separated, --label/--env options restating the Dockerfile's LABEL and ENV values that expand build
# arguments, with the arguments' values (options are applied after the cache: always current).
arg_expanding_options() {
  python3 - "$1" <<'EOF'
import re, shlex, sys
args = dict(line.split("=", 1) for line in sys.argv[1].splitlines() if "=" in line)
text = re.sub(r"\\\n", " ", open("Dockerfile").read())
out = []
for line in text.splitlines():
    words = line.strip().split(None, 1)
    if len(words) < 2 or words[0] not in ("LABEL", "ENV") or "${" not in words[1]:
        continue
    for pair in shlex.split(words[1]):
        key, value = pair.split("=", 1)
        if "${" in value:
            value = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), value)
            if "${" not in value:
                out += ["--" + words[0].lower(), f"{key}={value}"]
sys.stdout.write("".join(word + "\0" for word in out))
EOF
}

image_size() {
  "$engine" image inspect --format '{{.Size}}' "$image" | awk '{printf "%d bytes (%.0f MB)\n", $1, $1 / 1000000}'
}

build() {
  local context_model lines line base model_version start args=(--file Dockerfile --tag "$image")
  [ "$engine" = podman ] && ensure_podman
  lock_build_context
  context_model=$(stage_model)
  lines=$(build_args "$context_model")
  while IFS= read -r line; do
    args+=(--build-arg "$line")
  done <<<"$lines"
  base=$(sed -n 's/^BASE_IMAGE=//p' <<<"$lines")
  model_version=$(sed -n 's/^MODEL_VERSION=//p' <<<"$lines")
  if [ "$engine" = podman ]; then
    # chroot isolation: RUN steps cannot use the OCI runtime on these hosts. Docker format keeps
    # the HEALTHCHECK, which the OCI image format has no field for.
    args+=(--isolation=chroot --network=host --format=docker --layers)
    local options
    mapfile -d '' options < <(arg_expanding_options "$lines")
    args+=("${options[@]}")
  fi

  log "building $image with $engine from $base, model $model_version"
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

# The digest of the configuration blob a tarball's manifest.json names, or the image ID in the store.
config_digest() {
  local source=${1:-$image} config id
  if [ -f "$source" ]; then
    config=$(tar -xOf "$source" manifest.json |
      python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["Config"])') ||
      die "$source: no manifest.json naming a configuration (not an image tarball)"
    id=$(tar -xOf "$source" "$config" | sha256sum)
    id=${id%% *}
  else
    id=$("$engine" image inspect --format '{{.Id}}' "$source") || die "no image $source"
  fi
  id=${id#sha256:}
  [[ $id =~ ^[0-9a-f]{64}$ ]] || die "$source: '$id' is not a configuration digest"
  echo "sha256:$id"
}

# --- test ----------------------------------------------------------------------------------------

container=""

cleanup() {
  if [ -n "$container" ]; then
    "$engine" rm --force "$container" >/dev/null 2>&1 || true
  fi
  rm -f "${env_file:-}" "${rendered:-}"
}

fail() {
  log "FAILED: $*"
  if [ -n "$container" ]; then
    log "last lines of the container's log:"
    "$engine" logs --tail 40 "$container" >&2 2>&1 || true
  fi
  exit 1
}

# The environment and grace period the chart gives the container, rendered from its defaults and
# read with scripts/manifests.py. Writes the ConfigMap's data as an env file and prints the seconds
# the container gets after SIGTERM (terminationGracePeriodSeconds minus the preStop sleep, which
# happens before SIGTERM).
chart_env() {
  if ! command -v helm >/dev/null 2>&1; then
    [ -z "${CI:-}" ] || fail "helm is not installed (scripts/install-helm.sh installs it)"
    log "helm not found: running with the image's defaults instead of the chart's environment"
    : >"$env_file"
    echo 30
    return
  fi
  helm template image-test chart/wine-quality \
    --show-only templates/configmap.yaml --show-only templates/deployment.yaml >"$rendered"
  .venv/bin/python - "$rendered" "$env_file" <<'EOF' || fail "could not read the chart's environment and grace period"
import sys
from pathlib import Path

sys.path.insert(0, "scripts")
from manifests import documents

docs = documents(Path(sys.argv[1]))
data = next(doc for doc in docs if doc["kind"] == "ConfigMap")["data"]
pod = next(doc for doc in docs if doc["kind"] == "Deployment")["spec"]["template"]["spec"]
Path(sys.argv[2]).write_text("".join(f"{key}={value}\n" for key, value in data.items()))
pre_stop = pod["containers"][0].get("lifecycle", {}).get("preStop", {}).get("sleep", {})
print(pod["terminationGracePeriodSeconds"] - pre_stop.get("seconds", 0))
EOF
}

state() {
  "$engine" inspect --format "$1" "$container"
}

running() {
  [ "$(state '{{.State.Running}}')" = true ]
}

wait_ready() {
  local url=$1 timeout=${READY_TIMEOUT:-60} start=$SECONDS status=0
  wait_for_url "$url/readyz" "$timeout" running || status=$?
  case $status in
    0) log "ready after $((SECONDS - start)) s" ;;
    2) fail "the container exited before it was ready" ;;
    *) fail "$url/readyz did not answer 200 within $timeout s" ;;
  esac
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
  # the whole log first: grep -q under pipefail could end the pipe early and miss a match
  if grep -q Traceback <<<"$("$engine" logs "$container" 2>&1)"; then
    fail "the container's log holds a Python traceback"
  fi
  log "stopped by SIGTERM in ${elapsed} s (grace period $grace s), exit status 0"
}

run_test() {
  local port grace url container_port
  "$engine" image inspect "$image" >/dev/null 2>&1 || die "no image $image: run scripts/image.sh build first"
  [ -x scripts/smoke-test.sh ] || die "scripts/smoke-test.sh is missing"
  env_file=$(mktemp)
  rendered=$(mktemp)
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
  build-args) print_build_args ;;
  config-digest) config_digest "${2:-}" ;;
  test) run_test ;;
  *) echo "usage: scripts/image.sh build|build-args|config-digest|test   (see the header of this script)" >&2; exit 2 ;;
esac
