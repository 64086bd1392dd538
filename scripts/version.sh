#!/usr/bin/env bash
# The project's version, from its one source: `[project] version` in pyproject.toml.
#
#   scripts/version.sh            print the version in pyproject.toml (MAJOR.MINOR.PATCH)
#   scripts/version.sh next [TAKEN...]
#                                 print the version the next release gets; TAKEN versions (X.Y.Z,
#                                 for example the registry's version tags or reservations of
#                                 scripts/release.sh) count like the tags vX.Y.Z
#   scripts/version.sh stamp VER  write VER into pyproject.toml (CI workspace only; never committed)
#
# Release scheme (docs/pipeline.md): pyproject.toml holds the lowest version the next release may
# have. Every push to main that passes the pipeline releases
#   - that version itself, when no release tag vMAJOR.MINOR.* at or above it exists yet, else
#   - the highest existing vMAJOR.MINOR.N tag (or taken version) with N + 1.
# So patch releases need no commit; a maintainer cuts a minor or major release by setting
# version = "0.2.0" or "1.0.0" in pyproject.toml. Tags are read from the local git repository
# (CI checks out with full history).
set -euo pipefail
shopt -s inherit_errexit # failures inside $(...) stop the script too
cd "$(dirname "$0")/.."

semver='^([0-9]+)\.([0-9]+)\.([0-9]+)$'

current() {
  local version
  version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n 1)
  if ! [[ $version =~ $semver ]]; then
    echo "version.sh: pyproject.toml: version '$version' is not MAJOR.MINOR.PATCH" >&2
    exit 1
  fi
  echo "$version"
}

next() {
  local base major minor patch highest=-1 tag n taken
  base=$(current)
  [[ $base =~ $semver ]]
  major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]} patch=${BASH_REMATCH[3]}
  while IFS= read -r tag; do
    n=${tag#"v$major.$minor."}
    if [[ $n =~ ^[0-9]+$ ]] && (( 10#$n > highest )); then
      highest=$((10#$n))
    fi
  done < <(git tag --list "v$major.$minor.*"; for taken in "$@"; do echo "v$taken"; done)
  if (( highest < patch )); then
    echo "$major.$minor.$patch"
  else
    echo "$major.$minor.$((highest + 1))"
  fi
}

stamp() {
  local version=${1:?usage: version.sh stamp MAJOR.MINOR.PATCH}
  if ! [[ $version =~ $semver ]]; then
    echo "version.sh: '$version' is not MAJOR.MINOR.PATCH" >&2
    exit 1
  fi
  sed -i "0,/^version *= *\"[^\"]*\"/s//version = \"$version\"/" pyproject.toml
  [ "$(current)" = "$version" ]
}

case "${1:-current}" in
  current) current ;;
  next) shift; next "$@" ;;
  stamp) stamp "${2:-}" ;;
  *) echo "usage: scripts/version.sh [current|next|stamp VERSION]" >&2; exit 2 ;;
esac
