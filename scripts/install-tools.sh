#!/usr/bin/env bash
# Installs the system tools the test suite drives, when missing:
#   Debian packages: podman, runc, debootstrap and Debian's archive keyring (container image),
#   prometheus + promtool (observability tests), chromium (browser tests), wrk (benchmark), curl
#   (smoke test),
#   docker-registry (the CNCF distribution registry) and skopeo (a real OCI registry on loopback
#   and its client, for the release tests: scripts/registry.sh, scripts/release-local.sh);
#   Helm 4, Helm 3 and kubectl into .tools/bin (scripts/install-helm.sh).
# Needs root (or sudo) for apt-get; otherwise it names what is missing and stops.
#
# Usage: scripts/install-tools.sh [COMMAND...]
#   With COMMANDs (for example `podman runc debootstrap`, what scripts/image.sh needs), only the
#   Debian packages of those commands, and Helm and kubectl only when `helm` is one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# command -> Debian package. podman and chromium come with their recommended packages (podman
# kube play needs catatonit for its pause container, chromium its fonts); prometheus without them
# (a web of exporters the tests do not need).
# shellcheck disable=SC2034 # both tables are read through missing_of's name reference
declare -A wanted=(
  [podman]=podman [runc]=runc [debootstrap]=debootstrap [chromium]=chromium [wrk]=wrk [curl]=curl
  [/usr/libexec/podman/catatonit]=catatonit
  [docker-registry]=docker-registry [skopeo]=skopeo
  [/usr/share/keyrings/debian-archive-keyring.gpg]=debian-archive-keyring
)
# shellcheck disable=SC2034
declare -A lean=([prometheus]=prometheus [promtool]=prometheus)
helm=true

if [ $# -gt 0 ]; then
  declare -A requested=()
  for cmd in "$@"; do
    [ -n "${wanted[$cmd]:-}${lean[$cmd]:-}" ] || [ "$cmd" = helm ] || die "unknown tool '$cmd'"
    requested[$cmd]=1
  done
  for cmd in "${!wanted[@]}"; do
    [ -n "${requested[$cmd]:-}" ] || unset "wanted[$cmd]"
  done
  for cmd in "${!lean[@]}"; do
    [ -n "${requested[$cmd]:-}" ] || unset "lean[$cmd]"
  done
  [ -n "${requested[helm]:-}" ] || helm=false
fi

missing_of() {
  local -n table=$1
  local cmd
  for cmd in "${!table[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || [ -e "$cmd" ] || echo "${table[$cmd]}"
  done | sort -u
}
mapfile -t missing < <(missing_of wanted)
mapfile -t missing_lean < <(missing_of lean)

if [ ${#missing[@]} -gt 0 ] || [ ${#missing_lean[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 ||
      die "missing Debian packages: ${missing[*]} ${missing_lean[*]} (run as root or install them)"
    sudo=sudo
  fi
  log "installing ${missing[*]} ${missing_lean[*]}"
  $sudo apt-get update -qq
  export DEBIAN_FRONTEND=noninteractive
  if [ ${#missing[@]} -gt 0 ]; then
    $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if [ ${#missing_lean[@]} -gt 0 ]; then
    $sudo apt-get install -y -qq --no-install-recommends "${missing_lean[@]}" >/dev/null
  fi
fi

if $helm; then
  scripts/install-helm.sh
fi
