"""Prediction intervals: the conformal arithmetic, the metadata's validation, and the coverage of
the shipped artifacts recomputed from scratch on the held-out wines of both files."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wine_quality.core.artifact import METADATA_FILE, load_artifact
from wine_quality.core.facts import MetadataError, ModelFacts
from wine_quality.training import intervals
from wine_quality.training.data import load_dataset
from wine_quality.training.train import split

TOLERANCE = 0.03  # coverage within 3 points of the level


def test_the_conformal_quantile_is_the_finite_sample_rank() -> None:
    scores = np.arange(10, 0, -1, dtype=float)  # 10 scores, unsorted
    assert intervals.conformal_quantile(scores, 0.8) == 9  # ceil(11 * 0.8) = 9th smallest
    assert intervals.conformal_quantile(scores, 0.5) == 6  # ceil(5.5) = 6th
    assert math.isinf(intervals.conformal_quantile(scores, 0.95))  # rank 11 > n


def test_calibration_covers_new_data_at_the_level_and_follows_the_difficulty() -> None:
    """Noise that grows with x: the intervals must widen with it and still cover ~80 %."""
    rng = np.random.default_rng(0)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X = rng.uniform(0, 1, (n, 11))
        prediction = 5 + X[:, 0]
        return X, prediction + rng.normal(0, 0.1 + X[:, 1], n), prediction

    X, y, oof = draw(2400)
    X_new, y_new, prediction_new = draw(20000)
    block, (low, high) = intervals.calibrate(
        X, y, oof, folds_of(len(X)), X_new, y_new, prediction_new, 0.8
    )
    assert abs(block["coverage_test"] - 0.8) < 0.015
    width = high - low
    hard, easy = X_new[:, 1] > 0.8, X_new[:, 1] < 0.2
    assert width[hard].mean() > 2 * width[easy].mean()
    assert block["mean_width_test"] < block["constant_width"]["mean_width_test"]
    assert [p["level"] for p in block["curve"]] == list(intervals.CURVE_LEVELS)


def folds_of(n: int, k: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    rows = np.arange(n)
    return [(rows[rows % k != i], rows[rows % k == i]) for i in range(k)]


def test_the_bounds_stay_on_the_grade_scale(small_model_dir: Path) -> None:
    facts = load_artifact(small_model_dir).facts.intervals
    metadata = json.loads((small_model_dir / METADATA_FILE).read_text())
    rows = np.tile(np.array(metadata["reference"]["inputs"])[:1], (3, 1))
    low, high = facts.bounds(rows, np.array([0.1, 5.0, 9.95]))
    assert low[0] == 0 and high[2] == 10
    assert np.all(low <= [0.1, 5.0, 9.95]) and np.all(high >= [0.1, 5.0, 9.95])


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda i: i.pop("level"), "intervals.level is missing"),
        (lambda i: i.update(level=1.5), "intervals.level must be between 0 and 1"),
        (lambda i: i.update(quantile=-1), "intervals.quantile must not be negative"),
        (lambda i: i.update(coverage_test="high"), "intervals.coverage_test must be a finite"),
        (lambda i: i["difficulty"]["weights"].pop("alcohol"), "difficulty.weights.alcohol is"),
        (lambda i: i["difficulty"].update(floor=0), "need 0 < floor <= ceiling"),
    ],
)
def test_a_wrong_intervals_field_is_named(small_model_dir: Path, change, problem) -> None:
    metadata = json.loads((small_model_dir / METADATA_FILE).read_text())
    change(metadata["intervals"])
    with pytest.raises(MetadataError, match=problem):
        ModelFacts.from_metadata(metadata)
    del metadata["intervals"]
    with pytest.raises(MetadataError, match="intervals is missing"):
        ModelFacts.from_metadata(metadata)


# ---------------------------------------------------------------- the shipped models


def recomputed_coverage(model_dir: Path, data_source: Path) -> tuple[dict, float, float]:
    """The held-out coverage and mean width, from the data file and the loaded artifact alone."""
    metadata = json.loads((model_dir / METADATA_FILE).read_text())
    dataset = load_dataset(data_source / metadata["data"]["file"])
    keep = dataset.first_occurrences()
    held_out = split(dataset.X[keep], dataset.y[keep], metadata["seed"])
    model = load_artifact(model_dir)
    low, high = model.facts.intervals.bounds(held_out.X_test, model.predict(held_out.X_test))
    inside = (held_out.y_test >= low) & (held_out.y_test <= high)
    return metadata, float(inside.mean()), float(np.mean(high - low))


def check_coverage(model_dir: Path, data_source: Path) -> None:
    metadata, coverage, width = recomputed_coverage(model_dir, data_source)
    recorded = metadata["intervals"]
    rows = recorded["test_rows"]
    assert abs(coverage - recorded["coverage_test"]) <= 1 / rows  # ONNX rounding: one wine at most
    assert width == pytest.approx(recorded["mean_width_test"], abs=1e-4)
    assert abs(coverage - recorded["level"]) <= TOLERANCE, (
        f"{metadata['wine']}: held-out coverage {coverage:.3f} is not within "
        f"{TOLERANCE} of the level {recorded['level']}"
    )


def test_red_wine_coverage_recomputed_from_the_artifact(model_dir, data_source) -> None:
    check_coverage(model_dir, data_source)


@pytest.mark.slow
def test_white_wine_coverage_recomputed_from_the_artifact(tmp_path, data_source) -> None:
    """The promoted white-wine model (extra trees, as with every candidate) and its intervals."""
    output = tmp_path / "white"
    command = [sys.executable, "-m", "wine_quality.cli", "train", "--quiet", "--wine", "white"]
    command += ["--data-dir", str(data_source), "--output", str(output)]
    subprocess.run([*command, "--candidates", "extra_trees", "--jobs", "2"], check=True)
    check_coverage(output, data_source)


def test_the_level_is_fixed_at_training(tmp_path, data_source) -> None:
    output = tmp_path / "model"
    command = [sys.executable, "-m", "wine_quality.cli", "train", "--quiet"]
    command += ["--data-dir", str(data_source), "--output", str(output)]
    subprocess.run(
        [*command, "--candidates", "ridge", "--folds", "2", "--interval-level", "0.9"], check=True
    )
    model = load_artifact(output)
    assert model.facts.intervals.level == 0.9
    metadata, coverage, _ = recomputed_coverage(output, data_source)
    assert metadata["intervals"]["coverage_test"] == pytest.approx(coverage, abs=1 / 272)
    bad = subprocess.run(
        [*command, "--candidates", "ridge", "--interval-level", "1.2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "--interval-level must be between 0 and 1" in bad.stderr
