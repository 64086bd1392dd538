"""Train the linear baseline as an artifact, for the benchmark's "same service, linear model" row.

`wine-quality train` never writes the baseline: its quality gate requires the promoted model to
beat LinearRegression strictly, so `--candidates linear_regression` stops with exit status 3.
The benchmark still needs the baseline served by the very same service to measure what the
promoted model costs. This script runs the project's own training pipeline with the only
candidate `linear_regression` and the gate replaced by a verdict that says it was not applied,
so the artifact is complete (checksums, ONNX export, reference predictions) and honest about how
it was made. It is written under build/ and is never shipped.

    python benchmarks/linear_artifact.py --data-dir DIR --output build/bench/linear-model
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from wine_quality.training import train


def _not_applied(candidates: dict[str, Any], promoted: str) -> dict[str, Any]:
    test = candidates[promoted]["test"]
    return {
        "passed": True,
        "rule": "not applied: benchmark comparison artifact of the baseline itself",
        "promoted": {k: test[k] for k in ("rmse", "mae")},
        "baseline": {k: test[k] for k in ("rmse", "mae")},
        "failures": [],
    }


def build(data_dir: Path, output: Path, wine: str = "red", seed: int = 0) -> dict[str, Any]:
    train.gate = _not_applied
    config = train.TrainConfig(
        data_dir=data_dir, output=output, wine=wine, seed=seed, candidates=(train.BASELINE,)
    )
    return train.train(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--wine", default="red")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    metadata = build(args.data_dir, args.output, args.wine, args.seed)
    print(f"{args.output}: {metadata['algorithm']} {metadata['version']}")


if __name__ == "__main__":
    main()
