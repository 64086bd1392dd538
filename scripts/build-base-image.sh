#!/usr/bin/env bash
# The base image for podman builds: the shipped base (the Dockerfile's ARG BASE_IMAGE default, a
# pinned python:3.11.x-slim-bookworm) whenever a registry serves it, else a local stand-in for it on
# machines that cannot pull from a container registry: a minimal Debian bookworm root file system
# (debootstrap, every package checked against Debian's archive keyring: --force-check-gpg) with
# Debian's Python 3.11, pip, venv and CA certificates, imported into podman.
#
# Usage: scripts/build-base-image.sh [--force]
#   Prints the image reference. Reuses an image already present; --force rebuilds the stand-in.
# Environment:
#   BASE_IMAGE_PULL  auto (default): pull the shipped base, fall back to the stand-in when no
#                    registry answers; never: the stand-in only
#   BASE_IMAGE_TAG   stand-in image reference to create (default localhost/python-base:bookworm)
#   DEBIAN_MIRROR    Debian mirror for debootstrap (default http://deb.debian.org/debian; plain
#                    HTTP is safe here because the Release file's signature is checked)
#   DEBIAN_KEYRING   the archive keyring (default /usr/share/keyrings/debian-archive-keyring.gpg,
#                    package debian-archive-keyring; on Ubuntu too)
#   CONTAINERS_CONF  podman configuration (default scripts/podman/containers.conf)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

tag=${BASE_IMAGE_TAG:-localhost/python-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
keyring=${DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
pull=${BASE_IMAGE_PULL:-auto}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/podman/containers.conf}
force=false
case "${1:-}" in
  --force) force=true ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

# Several jobs on one machine may ask for the base image at once; build it only once.
mkdir -p build
exec 9>build/.python-base.lock
flock --timeout 900 9 || die "timed out waiting for another build of $tag"

# The Dockerfile's default base, fully qualified (podman does not guess a registry for short names).
shipped_base() {
  local base first
  base=$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile)
  [ -n "$base" ] || die "Dockerfile has no ARG BASE_IMAGE default"
  first=${base%%/*}
  if [[ $base == */* ]] && [[ $first == *.* || $first == *:* || $first == localhost ]]; then
    echo "$base"
  elif [[ $base == */* ]]; then
    echo "docker.io/$base"
  else
    echo "docker.io/library/$base"
  fi
}

case "$pull" in
  auto)
    shipped=$(shipped_base)
    if podman image exists "$shipped" || timeout 300 podman pull --quiet "$shipped" >/dev/null 2>&1; then
      log "using the shipped base $shipped"
      echo "$shipped"
      exit 0
    fi
    log "cannot pull $shipped (no registry reachable): using the local stand-in $tag"
    ;;
  never) ;;
  *) die "BASE_IMAGE_PULL must be auto or never, not '$pull'" ;;
esac

if ! $force && podman image exists "$tag"; then
  log "reusing $tag"
  echo "$tag"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
[ -f "$keyring" ] || scripts/install-tools.sh /usr/share/keyrings/debian-archive-keyring.gpg >&2
[ -f "$keyring" ] || die "$keyring not found (package debian-archive-keyring)"
rootfs=$(mktemp -d /var/tmp/python-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

start=$SECONDS
log "debootstrap bookworm into $rootfs (from $mirror, signatures checked with $keyring)"
debootstrap --variant=minbase --keyring="$keyring" --force-check-gpg \
  --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
  tail -n 30 "$rootfs.log" >&2
  rm -f "$rootfs.log"
  exit 1
}
rm -f "$rootfs.log"

# Package downloads on these machines may pass through a TLS-intercepting proxy whose CA is only
# in the host's bundle; Debian's pip reads this bundle, so builds on top of the image work.
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
# Like debian:bookworm-slim, which the official python slim images start from: no package lists,
# caches, documentation or message translations.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +

tar --numeric-owner -C "$rootfs" -c . | podman import --quiet \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  - "$tag" >/dev/null
log "built $tag in $((SECONDS - start)) s ($(podman image inspect --format '{{.Size}}' "$tag") bytes)"
echo "$tag"
