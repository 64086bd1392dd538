#!/usr/bin/env bash
# `make release-local`: the release of the CI workflow against a real OCI registry on loopback, with
# the same scripts/release.sh steps as the GitHub job (its local transport); only the transport
# differs. In order, each step stopping the release on failure:
#
#   released?   a commit that is already released publishes nothing and says so
#   compare     the champion/challenger gate against the newest release in $RELEASE_STORE
#   build       reuse $IMAGE when its labels name the release version and $MODEL_DIR's model, else
#               build localhost/wine-quality-release:X.Y.Z (scripts/image.sh build)
#   smoke-test  scripts/image.sh test: run it as the chart does and smoke-test it
#   push        push it as $REGISTRY/wine-quality:sha-<commit>, the build job's tag
#   publish     scripts/release.sh publish: the pushed configuration is the tested one; reserve
#               X.Y.Z; tags X.Y.Z; chart $REGISTRY/charts/wine-quality:X.Y.Z (helm push --plain-http);
#               then X.Y, main, latest and the release's files in $RELEASE_STORE/vX.Y.Z
# cosign keyless signing and the GitHub release exist on GitHub only: skipped, with a line saying so.
#
# Usage: REGISTRY=127.0.0.1:PORT make release-local   (scripts/registry.sh start runs a registry)
# Environment:
#   REGISTRY            host:port of the registry, on loopback (plain HTTP); required
#   IMAGE               an image in podman's store to release when its labels fit (see build)
#   MODEL_DIR           the model released (default artifacts/model)
#   RELEASE_STORE       reservations and releases (default build/releases/HOST_PORT): the previous
#                       release's metadata.json for the gate is read from there
#   ALLOW_WORSE_MODEL   true: release a model the gate finds worse (the maintainer's override)
#   CHAMPION_METADATA   compare against this metadata.json instead of the newest release's
#   RELEASE_FAIL_AFTER  stop with a failure right after this step (build, smoke-test, push, compare,
#                       or a step of scripts/release.sh publish): for tests of what a failure leaves
set -euo pipefail
shopt -s inherit_errexit # failures inside $(...) stop the script too
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
use_tools

[ -n "${REGISTRY:-}" ] || die "REGISTRY is not set (host:port of a loopback registry; scripts/registry.sh start runs one)"
export RELEASE_TRANSPORT=local CONTAINER_ENGINE=podman
export MODEL_DIR=${MODEL_DIR:-artifacts/model}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/podman/containers.conf}

step_done() {
  if [ "${RELEASE_FAIL_AFTER:-}" = "$1" ]; then
    die "stopping after step '$1' as RELEASE_FAIL_AFTER asks"
  fi
}

label() {
  podman image inspect --format "{{index .Labels \"$2\"}}" "$1" 2>/dev/null || true
}

model_version() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$MODEL_DIR/metadata.json"
}

# The image to release: $IMAGE when it says it is this version with this model, else a new build.
release_image() {
  local version=$1 model
  model=$(model_version)
  if [ -n "${IMAGE:-}" ] && [ "$(label "$IMAGE" org.opencontainers.image.version)" = "$version" ] &&
    [ "$(label "$IMAGE" io.github.wine-quality.model.version)" = "$model" ]; then
    log "reusing $IMAGE (version $version, model $model)"
    echo "$IMAGE"
    return
  fi
  [ -z "${IMAGE:-}" ] || log "$IMAGE is not version $version with model $model: building"
  # Not localhost/wine-quality:VERSION, the name `make image` and the tests build under.
  IMAGE=localhost/wine-quality-release:$version VERSION=$version scripts/image.sh build >&2
  echo "localhost/wine-quality-release:$version"
}

released=$(scripts/release.sh released)
if [ -n "$released" ]; then
  log "commit $(git rev-parse HEAD) is already released as $released: nothing to publish"
  exit 0
fi
[ -f "$MODEL_DIR/metadata.json" ] || die "$MODEL_DIR/metadata.json not found (make train)"
# The gate first: a refused model costs no build.
scripts/release.sh compare
version=$(scripts/release.sh next-version)
log "next version: $version"

image=$(release_image "$version")
step_done build
IMAGE=$image scripts/image.sh test
step_done smoke-test

staging=$REGISTRY/wine-quality:sha-$(git rev-parse --short=7 HEAD)
digest_file=$(mktemp)
trap 'rm -f "$digest_file"' EXIT
podman push --quiet --tls-verify=false --digestfile "$digest_file" "$image" "docker://$staging"
digest=$(cat "$digest_file")
log "pushed $image as $staging ($digest)"
step_done push

VERSION=$version DIGEST=$digest TESTED_CONFIG_DIGEST=$(scripts/image.sh config-digest "$image") \
  scripts/release.sh publish
