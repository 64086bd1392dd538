#!/usr/bin/env bash
# Creates .venv with the project and its pinned dependencies (constraints.txt).
# Usage: scripts/bootstrap.sh [EXTRAS]   (default extras: dev)
set -euo pipefail
cd "$(dirname "$0")/.."

extras=${1:-dev}
python=${PYTHON:-python3}
stamp=.venv/.installed-$extras

if [ -f "$stamp" ] && [ "$stamp" -nt constraints.txt ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -c constraints.txt -e ".[$extras]"
touch "$stamp"
