#!/usr/bin/env bash
# Installs the system tools the test suite drives, when missing:
#   Debian packages: podman, runc, debootstrap (container image), prometheus + promtool
#   (observability tests), chromium (browser tests), wrk (benchmark), curl (smoke test);
#   Helm 4, Helm 3 and kubectl into .tools/bin (scripts/install-helm.sh).
# Needs root (or sudo) for apt-get; otherwise it names what is missing and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A wanted=(
  [podman]=podman [runc]=runc [debootstrap]=debootstrap [prometheus]=prometheus
  [promtool]=prometheus [chromium]=chromium [wrk]=wrk [curl]=curl
)
missing=()
for cmd in "${!wanted[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
done

if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "install-tools: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
      exit 1
    }
    sudo=sudo
  fi
  echo "install-tools: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

scripts/install-helm.sh
