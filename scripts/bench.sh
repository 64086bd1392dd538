#!/usr/bin/env bash
# `make bench`: latency and throughput of the service against the seed paper's way of serving and
# against MLflow's model server, all in one run on this machine (benchmarks/README.md).
# Writes benchmarks/results/latest.{md,json} and rewrites the results block of README.md,
# benchmarks/README.md and docs/inference.md. About 7 minutes on 2 cores, plus about a minute the
# first time to install MLflow into .cache/bench/peer-mlflow and train the linear baseline.
# Extra arguments go to benchmarks/run.py (see `.venv/bin/python benchmarks/run.py --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

model_dir=${MODEL_DIR:-artifacts/model}
command -v wrk >/dev/null || die "wrk is not installed (scripts/install-tools.sh installs it)"
[ -f "$model_dir/metadata.json" ] || die "no artifact in $model_dir (run \`make train\`)"
exec .venv/bin/python benchmarks/run.py --model-dir "$model_dir" --update-docs "$@"
