#!/usr/bin/env bash
# Every linter of the project, in one place: `make lint`, the CI lint job and .ci/run call this.
#   ruff (Python: lint and format), import-linter (the package's layers), hadolint and checkov
#   (Dockerfile), shellcheck (scripts/*.sh, .ci/run), yamllint (all YAML but the chart's Go
#   templates), check-jsonschema (workflows, Dependabot config), zizmor (workflow
#   security audit), helm lint --strict (the chart).
# Runs every linter even when one fails, then exits non-zero if any failed.
# zizmor runs offline unless GH_TOKEN is set (the CI lint job sets it, which adds the online audits,
# for example that every pinned commit really belongs to the action's repository).
set -euo pipefail
shopt -s inherit_errexit # failures inside $(...) stop the script too
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

bin=.venv/bin
use_tools
failed=()

run() {
  local name=$1
  shift
  echo "lint: $name"
  if ! "$@"; then
    failed+=("$name")
  fi
}

# Files other parts of the project add over time: lint what exists, never fail on absence.
present() {
  local file
  for file in "$@"; do
    [ -e "$file" ] && printf '%s\n' "$file"
  done
  return 0
}

run ruff "$bin/ruff" check .
run ruff-format "$bin/ruff" format --check .
# The layers of docs/architecture.md: core imports neither training nor serving, serving never
# imports training, no import cycles (contracts in pyproject.toml).
run import-contracts "$bin/lint-imports" --no-cache

if [ -f Dockerfile ]; then
  run hadolint "$bin/hadolint" Dockerfile
  run checkov-dockerfile "$bin/checkov" --framework dockerfile --file Dockerfile --quiet --compact \
    --skip-download
fi

mapfile -t shell_scripts < <(present scripts/*.sh scripts/*/*.sh .ci/run)
# --external-sources: follow `source scripts/lib.sh` (the scripts' `# shellcheck source=` lines).
run shellcheck "$bin/shellcheck" --external-sources "${shell_scripts[@]}"

run yamllint "$bin/yamllint" --strict -c .yamllint.yaml .

mapfile -t workflows < <(present .github/workflows/*.yml .github/workflows/*.yaml)
if [ ${#workflows[@]} -gt 0 ]; then
  run workflow-schema "$bin/check-jsonschema" --builtin-schema vendor.github-workflows "${workflows[@]}"
  if [ -n "${GH_TOKEN:-}" ]; then
    run zizmor "$bin/zizmor" --no-progress --strict-collection .github
  else
    run zizmor "$bin/zizmor" --offline --no-progress --strict-collection .github
  fi
fi
if [ -f .github/dependabot.yml ]; then
  run dependabot-schema "$bin/check-jsonschema" --builtin-schema vendor.dependabot .github/dependabot.yml
fi

if [ -f chart/wine-quality/Chart.yaml ]; then
  if command -v helm >/dev/null 2>&1; then
    run helm-lint helm lint --strict chart/wine-quality
  elif [ -n "${CI:-}" ]; then
    echo "lint: helm is not installed (scripts/install-helm.sh installs it)" >&2
    failed+=(helm-lint)
  else
    echo "lint: helm lint skipped: helm is not installed (scripts/install-helm.sh installs it)"
  fi
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "lint: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "lint: all linters passed"
