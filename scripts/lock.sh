#!/usr/bin/env bash
# Regenerates constraints.txt: resolves pyproject.toml's dependencies (all extras) in a clean
# virtual environment and pins every package that ends up installed.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --disable-pip-version-check ".[dev]"
{
  sed -n '1,3p' constraints.txt
  "$tmp/venv/bin/pip" freeze --exclude wine-quality
} > "$tmp/constraints.txt"
mv "$tmp/constraints.txt" constraints.txt
