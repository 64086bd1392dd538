#!/usr/bin/env bash
# The release steps of the CI workflow (docs/pipeline.md), one subcommand per workflow step:
#
#   version          compute the next version (scripts/version.sh next), stamp it into pyproject.toml
#                    of this workspace, print `version=X.Y.Z` (for $GITHUB_OUTPUT)
#   build-env        print, for $GITHUB_ENV, SOURCE_DATE_EPOCH (the commit time: reproducible image
#                    timestamps) and BUILD_ARGS, the image's build arguments one a line as
#                    `scripts/image.sh build-args` computes them for local builds too (the base
#                    image by digest, the commit, the model version, ...), then stamp $VERSION into
#                    pyproject.toml
#   compare [--preview]
#                    champion/challenger: artifacts/model/metadata.json against the latest GitHub
#                    release's metadata.json (or $CHAMPION_METADATA, a path or URL); fails when the new
#                    model is worse unless overridden ($ALLOW_WORSE_MODEL=true, or the label
#                    allow-worse-model on the merged pull request). --preview reports, never fails on
#                    a worse model (pull requests).
#   package-chart    helm package chart/wine-quality with version and appVersion = $VERSION
#   notes            write the release notes (Markdown)
#   image            add the version tags ($TAGS, one a line) to the pushed image $DIGEST, cosign-sign it
#   chart            package-chart, then push the chart to oci://ghcr.io/OWNER/charts
#   github           create the GitHub release vX.Y.Z with notes, model card, metadata.json and chart
#
# Environment: VERSION (X.Y.Z), DIGEST (sha256:...), TAGS, GH_TOKEN, GITHUB_* (set by Actions),
# MODEL_DIR (default artifacts/model), RELEASE_DIR (default build/release).
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

need() { [ -n "${!1:-}" ] || die "$1 is not set"; }

owner() {
  need GITHUB_REPOSITORY_OWNER
  echo "${GITHUB_REPOSITORY_OWNER,,}" # GHCR names are lower-case
}

image_repository() { echo "ghcr.io/$(owner)/wine-quality"; }

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

# Prints the reason when a maintainer allowed releasing a worse model.
override_reason() {
  if [ "${ALLOW_WORSE_MODEL:-false}" = true ]; then
    echo "workflow input allow-worse-model"
    return
  fi
  if [ "${GITHUB_EVENT_NAME:-}" = push ] && [ -n "${GITHUB_SHA:-}" ]; then
    need GITHUB_REPOSITORY
    if gh api "repos/$GITHUB_REPOSITORY/commits/$GITHUB_SHA/pulls" --jq '.[].labels[].name' |
      grep -qx "$OVERRIDE_LABEL"; then
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
  return "$status"
}

package_chart() {
  need VERSION
  local work=$RELEASE_DIR/chart
  rm -rf "$work" && mkdir -p "$work"
  cp -R "$CHART_DIR" "$work/"
  # A fork's chart points at the fork's image.
  if [ -n "${GITHUB_REPOSITORY_OWNER:-}" ]; then
    local values=$work/wine-quality/values.yaml
    sed -i "s|^\(  repository: \)ghcr\.io/[^/]*/wine-quality\$|\1$(image_repository)|" "$values"
    grep -q "^  repository: $(image_repository)\$" "$values" ||
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
  local file=$RELEASE_DIR/notes.md owner_name=${GITHUB_REPOSITORY_OWNER:-OWNER}
  local image=ghcr.io/${owner_name,,}/wine-quality
  {
    echo "## wine-quality $VERSION"
    echo
    echo "- Image: \`$image:$VERSION\`${DIGEST:+ (\`$DIGEST\`)}, signed keyless with cosign"
    echo "- Chart: \`helm install wine-quality oci://ghcr.io/${owner_name,,}/charts/wine-quality --version $VERSION\`"
    echo "- Model card and metadata.json are attached."
    echo
    echo "Verify the image signature:"
    echo
    echo '```sh'
    echo "cosign verify $image:$VERSION \\"
    # Anchored to the workflow file and branch that sign releases, not any workflow of the repository.
    echo "  --certificate-identity https://github.com/${GITHUB_REPOSITORY:-OWNER/REPO}/.github/workflows/ci.yml@refs/heads/main \\"
    echo "  --certificate-oidc-issuer https://token.actions.githubusercontent.com"
    echo '```'
    echo
    if [ -f "$RELEASE_DIR/comparison.md" ]; then
      sed 's/^## /### /' "$RELEASE_DIR/comparison.md"
    fi
  } > "$file"
  echo "$file"
}

image() {
  need DIGEST
  need TAGS
  local source tag tags=()
  source="$(image_repository)@$DIGEST"
  # shellcheck disable=SC2153 # TAGS comes from the environment (docker/metadata-action's tags)
  while IFS= read -r tag; do
    [ -n "$tag" ] && tags+=(--tag "$tag")
  done <<< "$TAGS"
  [ ${#tags[@]} -gt 0 ] || die "TAGS holds no tag"
  # One source: a carbon copy of the pushed index (image, SBOM, provenance); the digest is unchanged.
  docker buildx imagetools create "${tags[@]}" "$source"
  cosign sign --yes "$source"
}

chart() {
  need GH_TOKEN
  need GITHUB_ACTOR
  local package
  package=$(package_chart)
  printf '%s' "$GH_TOKEN" | helm registry login ghcr.io --username "$GITHUB_ACTOR" --password-stdin
  helm push "$package" "oci://ghcr.io/$(owner)/charts"
}

github() {
  need VERSION
  need GITHUB_SHA
  need GITHUB_REPOSITORY
  local package="$RELEASE_DIR/wine-quality-$VERSION.tgz" notes_file
  [ -f "$package" ] || package=$(package_chart)
  notes_file=$(notes)
  gh release create "v$VERSION" --repo "$GITHUB_REPOSITORY" --target "$GITHUB_SHA" \
    --title "wine-quality $VERSION" --notes-file "$notes_file" --generate-notes \
    "$MODEL_DIR/MODEL_CARD.md" "$MODEL_DIR/metadata.json" "$package"
}

command=${1:-}
shift || true
case "$command" in
  version) version ;;
  build-env) build_env ;;
  compare) compare "$@" ;;
  package-chart) package_chart ;;
  notes) notes ;;
  image) image ;;
  chart) chart ;;
  github) github ;;
  *) sed -n '2,23s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
