#!/usr/bin/env bash
# The release steps of the CI workflow (docs/pipeline.md) and of `make release-local`: one logic, two
# transports. A version is reserved before anything is published under it and finalised last, so a
# published version never changes: a failed run leaves its reserved version behind, and the next run
# takes the next one.
#
#   version          compute the next version (scripts/version.sh next), stamp it into pyproject.toml
#                    of this workspace, print `version=X.Y.Z` (for $GITHUB_OUTPUT)
#   next-version     the next version, counting as taken the git tags, the reservations of the local
#                    transport and the version tags in the registry (image and chart)
#   build-env        print, for $GITHUB_ENV, SOURCE_DATE_EPOCH (the commit time: reproducible image
#                    timestamps) and BUILD_ARGS, the image's build arguments one a line as
#                    `scripts/image.sh build-args` computes them for local builds too (the base
#                    image by digest, the commit, the model version, ...), then stamp $VERSION into
#                    pyproject.toml
#   compare [--preview]
#                    champion/challenger: $MODEL_DIR/metadata.json against the latest release's
#                    metadata.json (or $CHAMPION_METADATA, a path or URL); fails when the new
#                    model is worse unless overridden ($ALLOW_WORSE_MODEL=true, or the label
#                    allow-worse-model on the merged pull request). --preview reports, never fails on
#                    a worse model (pull requests).
#   released         print the version this commit was released as; nothing when it was not
#   verify-digest    check that the image at $DIGEST in the registry has the configuration digest of
#                    the image the tests ran, $TESTED_CONFIG_DIGEST (sha256:...)
#   publish          the release itself, in this order; each step stops the release on failure:
#                      released?  an already released commit publishes nothing and says so
#                      verify     verify-digest
#                      reserve    fail if vX.Y.Z is a git tag, a reservation or a tag in the registry;
#                                 else reserve it (github: create the git tag vX.Y.Z through the API,
#                                 which fails if it exists; local: create $RELEASE_STORE/vX.Y.Z)
#                      image      tag $DIGEST as X.Y.Z and check the tag resolves to it; cosign-sign
#                                 the digest (github)
#                      chart      package-chart, push it as $REGISTRY/charts/wine-quality:X.Y.Z
#                      finalise   move X.Y, main and latest to $DIGEST; github: the GitHub release
#                                 vX.Y.Z (notes, model card, metadata.json, chart); local: the same
#                                 files into $RELEASE_STORE/vX.Y.Z, then its `released` mark
#   package-chart    helm package chart/wine-quality with version and appVersion = $VERSION
#   notes            write the release notes (Markdown)
#
# Transports ($RELEASE_TRANSPORT; default github inside GitHub Actions, else local):
#   github  registry ghcr.io/OWNER (the workflow logs in), the git tag and release through `gh`,
#           keyless cosign signatures
#   local   registry $REGISTRY (host:port on loopback, plain HTTP), releases recorded in
#           $RELEASE_STORE (default build/releases/HOST_PORT); the GitHub-only steps (cosign keyless,
#           gh release) are skipped with a line saying so
# Images are tagged with skopeo (a copy by digest within the repository, digests preserved), charts
# pushed with helm.
#
# Environment: VERSION (X.Y.Z), DIGEST (sha256:...: the tested image in the registry),
# TESTED_CONFIG_DIGEST, GH_TOKEN, GITHUB_* (set by Actions), REGISTRY, RELEASE_STORE,
# MODEL_DIR (default artifacts/model), RELEASE_DIR (default build/release),
# RELEASE_FAIL_AFTER=STEP (fail right after STEP: compare, verify, reserve, image, chart, finalise;
# for tests of what a failed release leaves behind).
# package-chart, notes and compare with $CHAMPION_METADATA need no network and run anywhere.
set -euo pipefail
shopt -s inherit_errexit # failures inside $(...) stop the script too
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
use_tools

MODEL_DIR=${MODEL_DIR:-artifacts/model}
RELEASE_DIR=${RELEASE_DIR:-build/release}
CHART_DIR=chart/wine-quality
OVERRIDE_LABEL=allow-worse-model
# Every step RELEASE_FAIL_AFTER may name: scripts/release-local.sh's own (build, smoke-test, push),
# then this script's.
RELEASE_STEPS=(build smoke-test push compare verify reserve image chart finalise)

if [ -n "${RELEASE_FAIL_AFTER:-}" ] && [[ " ${RELEASE_STEPS[*]} " != *" $RELEASE_FAIL_AFTER "* ]]; then
  die "RELEASE_FAIL_AFTER=$RELEASE_FAIL_AFTER is not a step (${RELEASE_STEPS[*]})"
fi
default_transport=local
[ "${GITHUB_ACTIONS:-}" = true ] && default_transport=github
TRANSPORT=${RELEASE_TRANSPORT:-$default_transport}
# skopeo and helm speak plain HTTP to the loopback registry of the local transport only.
tls=() copy_tls=() helm_tls=()
case "$TRANSPORT" in
  github) ;;
  local)
    tls=(--tls-verify=false)
    copy_tls=(--src-tls-verify=false --dest-tls-verify=false)
    helm_tls=(--plain-http)
    ;;
  *) die "RELEASE_TRANSPORT must be github or local, not '$TRANSPORT'" ;;
esac

need() { [ -n "${!1:-}" ] || die "$1 is not set"; }

# step_done STEP: the end of a step; RELEASE_FAIL_AFTER=STEP stops the release right here.
step_done() {
  if [ "${RELEASE_FAIL_AFTER:-}" = "$1" ]; then
    die "stopping after step '$1' as RELEASE_FAIL_AFTER asks"
  fi
}

owner() {
  need GITHUB_REPOSITORY_OWNER
  echo "${GITHUB_REPOSITORY_OWNER,,}" # GHCR names are lower-case
}

# The registry and name prefix releases go to: ghcr.io/OWNER, or the loopback $REGISTRY.
registry() {
  if [ "$TRANSPORT" = github ]; then
    echo "ghcr.io/$(owner)"
    return
  fi
  need REGISTRY
  [[ $REGISTRY =~ ^(127\.0\.0\.1|localhost|\[::1\]):[0-9]+$ ]] ||
    die "REGISTRY=$REGISTRY: the local transport speaks plain HTTP, so only to 127.0.0.1:PORT or localhost:PORT"
  echo "$REGISTRY"
}

image_repository() { echo "$(registry)/wine-quality"; }
chart_repository() { echo "$(registry)/charts"; }

# The image repository a packaged chart points at: the release's, or the chart's own default when
# the release's registry is not known (packaging alone, outside a release).
chart_image_repository() {
  if [ "$TRANSPORT" = local ] && [ -n "${REGISTRY:-}" ]; then
    image_repository
  elif [ -n "${GITHUB_REPOSITORY_OWNER:-}" ]; then
    echo "ghcr.io/$(owner)/wine-quality"
  fi
}

# Where the local transport records reservations and releases (the GitHub release's counterpart).
store() {
  local registry
  registry=$(registry)
  echo "${RELEASE_STORE:-build/releases/${registry//[^A-Za-z0-9.-]/_}}"
}

commit() {
  if [ "$TRANSPORT" = github ]; then
    need GITHUB_SHA
    echo "$GITHUB_SHA"
  else
    git rev-parse HEAD
  fi
}

# --- the registry ---------------------------------------------------------------------------------

# registry_tags REPOSITORY: its tags, one a line; nothing for a repository nothing was pushed to.
registry_tags() {
  local out err status=0
  err=$(mktemp)
  out=$(skopeo list-tags "${tls[@]}" "docker://$1" 2>"$err") || status=$?
  if [ "$status" -ne 0 ]; then
    if grep -qiE 'name unknown|not known to registry|manifest unknown|404' "$err"; then
      rm -f "$err"
      return 0
    fi
    log "cannot list the tags of $1: $(cat "$err")"
    rm -f "$err"
    return 1
  fi
  rm -f "$err"
  python3 -c 'import json, sys; print(*json.load(sys.stdin).get("Tags") or [], sep="\n")' <<<"$out"
}

# digest_of REFERENCE: the digest of the manifest (or index) REFERENCE names in the registry.
digest_of() {
  local sum
  sum=$(skopeo inspect "${tls[@]}" --raw "docker://$1" | sha256sum)
  echo "sha256:${sum%% *}"
}

# The configuration digest of the linux/amd64 image at REFERENCE (an index resolves to it): the
# image ID the tests saw, whatever the manifest around it.
pushed_config_digest() {
  local sum
  sum=$(skopeo inspect "${tls[@]}" --override-os linux --override-arch amd64 --config --raw \
    "docker://$1" | sha256sum)
  echo "sha256:${sum%% *}"
}

# tag_image TAG: TAG names $DIGEST (a copy within the repository, digests preserved); checked.
tag_image() {
  local repository got
  repository=$(image_repository)
  skopeo copy --quiet --all --preserve-digests "${copy_tls[@]}" \
    "docker://$repository@$DIGEST" "docker://$repository:$1" >&2
  got=$(digest_of "$repository:$1")
  [ "$got" = "$DIGEST" ] || die "$repository:$1 is $got after tagging, not $DIGEST"
  log "$repository:$1 -> $DIGEST"
}

version() {
  scripts/version.sh stamp "$(scripts/version.sh next)"
  echo "version=$(scripts/version.sh)"
}

build_env() {
  need VERSION
  [ -f "$MODEL_DIR/metadata.json" ] || die "$MODEL_DIR/metadata.json not found (download the model first)"
  local epoch args delimiter
  epoch=$(git log -1 --format=%ct)
  # Before the stamp below, which would mark the commit -dirty.
  args=$(SOURCE_DATE_EPOCH=$epoch VERSION=$VERSION MODEL_DIR=$MODEL_DIR scripts/image.sh build-args)
  scripts/version.sh stamp "$VERSION"
  # A random delimiter for $GITHUB_ENV's multi-line syntax: no value can end the block early.
  delimiter=BUILD_ARGS_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  echo "SOURCE_DATE_EPOCH=$epoch"
  printf 'BUILD_ARGS<<%s\n%s\n%s\n' "$delimiter" "$args" "$delimiter"
}

# Path or URL of the champion's metadata.json, or nothing when there is no release yet.
champion_metadata() {
  if [ -n "${CHAMPION_METADATA:-}" ]; then
    echo "$CHAMPION_METADATA"
    return
  fi
  if [ "$TRANSPORT" = local ]; then
    local_champion_metadata
    return
  fi
  need GITHUB_REPOSITORY
  local tag
  # Explicit returns: callers test this function in an `if`, where `set -e` does not apply, and an
  # unreadable release list must never look like "no release yet".
  tag=$(gh release list --repo "$GITHUB_REPOSITORY" --limit 1 --exclude-drafts \
    --exclude-pre-releases --json tagName --jq '.[0].tagName // empty') || return 1
  if [ -z "$tag" ]; then
    log "no GitHub release yet: the new model is the first champion"
    return
  fi
  local dir=$RELEASE_DIR/champion
  rm -rf "$dir" && mkdir -p "$dir" || return 1
  gh release download "$tag" --repo "$GITHUB_REPOSITORY" --pattern metadata.json --dir "$dir" >&2 ||
    { log "release $tag: no metadata.json asset could be downloaded; the workflow input" \
        "champion-metadata names another model to compare against"; return 1; }
  echo "$dir/metadata.json"
}

# The metadata.json of the newest release recorded in the local store (finalised ones only).
local_champion_metadata() {
  local dir latest=""
  dir=$(store) || return 1
  if [ -d "$dir" ]; then
    latest=$(find "$dir" -mindepth 2 -maxdepth 2 -name released -printf '%h\n' |
      sed 's|.*/v||' | sort -V | tail -n 1)
  fi
  if [ -z "$latest" ]; then
    log "no release in $dir yet: the new model is the first champion"
    return
  fi
  [ -f "$dir/v$latest/metadata.json" ] || { log "$dir/v$latest has no metadata.json"; return 1; }
  log "champion: release $latest ($dir/v$latest/metadata.json)"
  echo "$dir/v$latest/metadata.json"
}

# Prints the reason when a maintainer allowed releasing a worse model.
override_reason() {
  if [ "${ALLOW_WORSE_MODEL:-false}" = true ]; then
    echo "workflow input allow-worse-model"
    return
  fi
  if [ "${GITHUB_EVENT_NAME:-}" = push ] && [ -n "${GITHUB_SHA:-}" ]; then
    need GITHUB_REPOSITORY
    local labels
    # Read whole before searching: `gh ... | grep -q` would stop reading at the first match, and
    # under pipefail gh's SIGPIPE would turn a found label into a failure.
    labels=$(gh api "repos/$GITHUB_REPOSITORY/commits/$GITHUB_SHA/pulls" --jq '.[].labels[].name')
    if grep -qxF "$OVERRIDE_LABEL" <<<"$labels"; then
      echo "label $OVERRIDE_LABEL on the merged pull request"
    fi
  fi
}

# run_compare CHAMPION [FLAGS...]: the project's compare command, Markdown into $RELEASE_DIR/comparison.md.
run_compare() {
  local champion=$1
  shift
  rm -f "$RELEASE_DIR/comparison.md"
  PYTHONPATH=service${PYTHONPATH:+:$PYTHONPATH} python3 -m wine_quality.training.release \
    "$MODEL_DIR/metadata.json" --champion "$champion" --summary "$RELEASE_DIR/comparison.md" "$@"
}

compare() {
  local preview=false
  [ "${1:-}" = --preview ] && preview=true
  [ -f "$MODEL_DIR/metadata.json" ] || die "$MODEL_DIR/metadata.json not found (train first)"
  mkdir -p "$RELEASE_DIR"
  local report=$RELEASE_DIR/comparison.md champion reason status=0
  if ! champion=$(champion_metadata); then
    $preview || die "cannot read the champion's metadata"
    printf '## Champion / challenger\n\n_Preview skipped: the latest release could not be read._\n' \
      > "$report"
  else
    run_compare "$champion" || status=$?
    # A worse model: look for a maintainer's override only now (it needs the GitHub API).
    if [ "$status" -eq 1 ] && ! $preview; then
      reason=$(override_reason)
      if [ -n "$reason" ]; then
        status=0
        run_compare "$champion" --allow-worse || status=$?
        printf '\nOverride: %s.\n' "$reason" >> "$report"
      fi
    fi
    if $preview && [ "$status" -eq 1 ]; then
      printf '\n_Preview: merged as it is, this model would not be released._\n' >> "$report"
      status=0
    fi
  fi
  if [ -n "${GITHUB_STEP_SUMMARY:-}" ] && [ -f "$report" ]; then
    cat "$report" >> "$GITHUB_STEP_SUMMARY"
  fi
  [ "$status" -eq 0 ] || return "$status"
  $preview || step_done compare
}

package_chart() {
  need VERSION
  local work=$RELEASE_DIR/chart
  rm -rf "$work" && mkdir -p "$work"
  cp -R "$CHART_DIR" "$work/"
  # The chart points at the image of its release: a fork's, or the local registry's.
  local target
  target=$(chart_image_repository)
  if [ -n "$target" ]; then
    local values=$work/wine-quality/values.yaml
    sed -i "s|^\(  repository: \)ghcr\.io/[^/]*/wine-quality\$|\1$target|" "$values"
    grep -q "^  repository: $target\$" "$values" ||
      die "could not set image.repository in $values"
  fi
  # Artifact Hub's image list names the image this release's chart deploys.
  local chart_yaml=$work/wine-quality/Chart.yaml repository
  repository=$(sed -n 's/^  repository: //p' "$work/wine-quality/values.yaml")
  [ -n "$repository" ] || die "no image.repository in $work/wine-quality/values.yaml"
  sed -i "s|^\(      image: \)[^ ]*/wine-quality:[^ ]*\$|\1$repository:$VERSION|" "$chart_yaml"
  grep -q "^      image: $repository:$VERSION\$" "$chart_yaml" ||
    die "could not set the artifacthub.io/images annotation in $chart_yaml"
  helm package "$work/wine-quality" --version "$VERSION" --app-version "$VERSION" \
    --destination "$RELEASE_DIR" >&2
  echo "$RELEASE_DIR/wine-quality-$VERSION.tgz"
}

notes() {
  need VERSION
  mkdir -p "$RELEASE_DIR"
  local file=$RELEASE_DIR/notes.md owner_name=${GITHUB_REPOSITORY_OWNER:-OWNER} image charts signed
  image=ghcr.io/${owner_name,,}/wine-quality charts=oci://ghcr.io/${owner_name,,}/charts signed=true
  if [ "$TRANSPORT" = local ] && [ -n "${REGISTRY:-}" ]; then
    image=$(image_repository) charts="oci://$(chart_repository)" signed=false
  fi
  {
    echo "## wine-quality $VERSION"
    echo
    if $signed; then
      echo "- Image: \`$image:$VERSION\`${DIGEST:+ (\`$DIGEST\`)}, signed keyless with cosign"
      echo "- Chart: \`helm install wine-quality $charts/wine-quality --version $VERSION\`"
    else
      echo "- Image: \`$image:$VERSION\`${DIGEST:+ (\`$DIGEST\`)}, not signed (cosign keyless signing runs on GitHub only)"
      echo "- Chart: \`helm install wine-quality $charts/wine-quality --version $VERSION --plain-http\`"
    fi
    echo "- Model card and metadata.json are attached."
    echo
    if $signed; then
      echo "Verify the image signature:"
      echo
      echo '```sh'
      echo "cosign verify $image:$VERSION \\"
      # Anchored to the workflow file and branch that sign releases, not any workflow of the repository.
      echo "  --certificate-identity https://github.com/${GITHUB_REPOSITORY:-OWNER/REPO}/.github/workflows/ci.yml@refs/heads/main \\"
      echo "  --certificate-oidc-issuer https://token.actions.githubusercontent.com"
      echo '```'
      echo
    fi
    if [ -f "$RELEASE_DIR/comparison.md" ]; then
      sed 's/^## /### /' "$RELEASE_DIR/comparison.md"
    fi
  } > "$file"
  echo "$file"
}

# --- publish --------------------------------------------------------------------------------------

# published_release TAG: 0 when the GitHub release TAG exists and is published (not a draft),
# 1 when there is none; any other answer of the API stops the release.
published_release() {
  local out err status=0
  err=$(mktemp)
  out=$(gh release view "$1" --repo "$GITHUB_REPOSITORY" --json isDraft --jq .isDraft 2>"$err") ||
    status=$?
  if [ "$status" -ne 0 ]; then
    grep -qi 'release not found' "$err" || { cat "$err" >&2; rm -f "$err"; die "cannot read release $1"; }
    rm -f "$err"
    return 1
  fi
  rm -f "$err"
  [ "$out" = false ]
}

# The version this commit was released as (finalised); nothing when it was not.
released_version() {
  local head tag dir
  head=$(commit)
  if [ "$TRANSPORT" = github ]; then
    need GITHUB_REPOSITORY
    while IFS= read -r tag; do
      [ -n "$tag" ] || continue
      if published_release "$tag"; then
        echo "${tag#v}"
        return
      fi
    done < <(git tag --points-at "$head" --list 'v*' | sort -V -r)
    return
  fi
  dir=$(store)
  [ -d "$dir" ] || return 0
  while IFS= read -r dir; do
    if [ -f "$dir/released" ] && [ "$(cat "$dir/commit" 2>/dev/null)" = "$head" ]; then
      echo "${dir##*/v}"
      return
    fi
  done < <(find "$dir" -mindepth 1 -maxdepth 1 -type d -name 'v*' | sort -V -r)
}

# Every version taken, one a line: git tags, local reservations, version tags of image and chart.
taken_versions() {
  local semver='^[0-9]+\.[0-9]+\.[0-9]+$' image_tags chart_tags
  image_tags=$(registry_tags "$(image_repository)")
  chart_tags=$(registry_tags "$(chart_repository)/wine-quality")
  {
    git tag --list 'v*' | sed 's/^v//'
    if [ "$TRANSPORT" = local ] && [ -d "$(store)" ]; then
      find "$(store)" -mindepth 1 -maxdepth 1 -type d -name 'v*' -printf '%f\n' | sed 's/^v//'
    fi
    printf '%s\n%s\n' "$image_tags" "$chart_tags"
  } | sed -nE "/$semver/p" | sort -u -V
}

next_version() {
  local taken
  taken=$(taken_versions)
  # shellcheck disable=SC2086 # one argument per taken version
  scripts/version.sh next $taken
}

# Why VERSION cannot be reserved; nothing when it is free.
version_taken() {
  local version=$1 image_tags chart_tags
  # Whole lists, then searched: `registry_tags | grep -q` could fail on SIGPIPE under pipefail.
  image_tags=$(registry_tags "$(image_repository)")
  chart_tags=$(registry_tags "$(chart_repository)/wine-quality")
  if git rev-parse --quiet --verify "refs/tags/v$version" >/dev/null; then
    echo "the git tag v$version exists"
  elif [ "$TRANSPORT" = local ] && [ -e "$(store)/v$version" ]; then
    echo "$(store)/v$version exists"
  elif grep -qxF "$version" <<<"$image_tags"; then
    echo "the image tag $(image_repository):$version exists"
  elif grep -qxF "$version" <<<"$chart_tags"; then
    echo "the chart $(chart_repository)/wine-quality:$version exists"
  fi
}

reserve() {
  local why
  why=$(version_taken "$VERSION")
  [ -z "$why" ] || die "version $VERSION is taken ($why). A version is never published twice: the" \
    "next run computes the next free version (on GitHub: push again, or re-run all jobs). On GitHub" \
    "versions are counted from the git tags: a registry tag without its git tag v$VERSION (deleted" \
    "by hand) keeps blocking $VERSION until that git tag exists again"
  if [ "$TRANSPORT" = github ]; then
    # Creating the ref fails when the tag exists: the reservation is atomic on GitHub's side.
    gh api --method POST "repos/$GITHUB_REPOSITORY/git/refs" \
      -f "ref=refs/tags/v$VERSION" -f "sha=$(commit)" >/dev/null ||
      die "could not create the git tag v$VERSION (taken by a concurrent run, or no contents: write)"
  else
    mkdir -p "$(store)"
    mkdir "$(store)/v$VERSION" || die "$(store)/v$VERSION was reserved by a concurrent run"
    commit > "$(store)/v$VERSION/commit"
    echo "$DIGEST" > "$(store)/v$VERSION/digest"
  fi
  log "reserved version $VERSION for commit $(commit)"
}

verify_digest() {
  need DIGEST
  need TESTED_CONFIG_DIGEST
  local reference pushed
  reference="$(image_repository)@$DIGEST"
  pushed=$(pushed_config_digest "$reference")
  [ "$pushed" = "$TESTED_CONFIG_DIGEST" ] ||
    die "$reference holds the image configuration $pushed, but the tests ran $TESTED_CONFIG_DIGEST:" \
      "the image to release is not the tested one"
  log "$reference is the tested image (configuration $pushed)"
}

sign() {
  local reference
  reference="$(image_repository)@$DIGEST"
  if [ "$TRANSPORT" = github ]; then
    cosign sign --yes "$reference"
  else
    log "skipped: cosign keyless signing of $reference (GitHub only: it needs the workflow's OIDC identity)"
  fi
}

publish_chart() {
  local package
  package=$(package_chart)
  if [ "$TRANSPORT" = github ]; then
    need GH_TOKEN
    need GITHUB_ACTOR
    printf '%s' "$GH_TOKEN" | helm registry login ghcr.io --username "$GITHUB_ACTOR" --password-stdin
  fi
  helm push "$package" "oci://$(chart_repository)" "${helm_tls[@]}" >&2
  local tags
  tags=$(registry_tags "$(chart_repository)/wine-quality")
  grep -qxF "$VERSION" <<<"$tags" ||
    die "chart $VERSION is not in $(chart_repository)/wine-quality after the push"
  log "chart $(chart_repository)/wine-quality:$VERSION"
}

# The release's assets: notes, model card, metadata.json, chart package.
release_assets() {
  local package="$RELEASE_DIR/wine-quality-$VERSION.tgz" file
  [ -f "$package" ] || package=$(package_chart)
  for file in "$MODEL_DIR/MODEL_CARD.md" "$MODEL_DIR/metadata.json"; do
    [ -f "$file" ] || die "$file not found"
  done
  printf '%s\n' "$(notes)" "$MODEL_DIR/MODEL_CARD.md" "$MODEL_DIR/metadata.json" "$package"
}

finalise() {
  local tag assets dir
  # The moving tags name a version only once its image and chart are published. They move before
  # the GitHub release: if that fails, the commit is not released and the next run moves them again.
  for tag in "${VERSION%.*}" main latest; do
    tag_image "$tag"
  done
  mapfile -t assets < <(release_assets)
  if [ "$TRANSPORT" = github ]; then
    need GITHUB_REPOSITORY
    gh release create "v$VERSION" --repo "$GITHUB_REPOSITORY" --verify-tag \
      --title "wine-quality $VERSION" --notes-file "${assets[0]}" --generate-notes "${assets[@]:1}"
  else
    dir=$(store)/v$VERSION
    cp "${assets[@]}" "$dir/"
    date -u +%Y-%m-%dT%H:%M:%SZ > "$dir/released.tmp"
    mv "$dir/released.tmp" "$dir/released"
    log "skipped: the GitHub release (GitHub only); the release's files are in $dir"
  fi
}

publish() {
  need DIGEST
  local released
  released=$(released_version)
  if [ -n "$released" ]; then
    log "commit $(commit) is already released as $released: nothing to publish"
    return
  fi
  VERSION=${VERSION:-$(next_version)}
  log "releasing $VERSION from $(image_repository)@$DIGEST"
  verify_digest
  step_done verify
  reserve
  step_done reserve
  tag_image "$VERSION"
  sign
  step_done image
  publish_chart
  step_done chart
  finalise
  step_done finalise
  log "released $VERSION: $(image_repository):{$VERSION,${VERSION%.*},main,latest} at $DIGEST," \
    "chart $(chart_repository)/wine-quality:$VERSION"
  if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    printf '## Released %s\n\nImage \x60%s@%s\x60\n' "$VERSION" "$(image_repository)" "$DIGEST" \
      >> "$GITHUB_STEP_SUMMARY"
  fi
}

command=${1:-}
shift || true
case "$command" in
  version) version ;;
  build-env) build_env ;;
  compare) compare "$@" ;;
  package-chart) package_chart ;;
  notes) notes ;;
  released) released_version ;;
  next-version) next_version ;;
  verify-digest) verify_digest ;;
  publish) publish ;;
  *) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//p}' "$0" >&2; exit 2 ;;
esac
