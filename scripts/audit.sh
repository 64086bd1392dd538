#!/usr/bin/env bash
# Known vulnerabilities in every pinned Python package (constraints.txt: what the image and the
# test environment install), checked with pip-audit against the PyPI advisory database.
# Needs that service online: the CI lint job runs it. With --strict a package that cannot be
# audited fails the run, so a machine that cannot reach the service fails here rather than
# report a clean audit.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
grep -E '^[A-Za-z0-9_.-]+==' constraints.txt > "$requirements"
.venv/bin/pip-audit --requirement "$requirements" --no-deps --disable-pip --strict --progress-spinner off
