"""Training: the real red-wine model beats the baseline; the gate, determinism, white wine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from wine_quality.core.artifact import load_artifact
from wine_quality.core.features import CSV_COLUMNS, FEATURE_KEYS, FEATURE_NAMES, FEATURES
from wine_quality.training.data import SHA256, load_dataset
from wine_quality.training.train import BASELINE, CANDIDATES, score, split

METRICS = {"rmse", "mae", "r2", "within_0_5", "within_1"}
# A quick configuration for the tests that train several times (the full run is `model_dir`).
QUICK = ["--folds", "2", "--candidates", "random_forest"]


def train(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """`wine-quality train` as a user runs it (stderr is not a terminal here, so no progress)."""
    return subprocess.run(
        [sys.executable, "-m", "wine_quality.cli", "train", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=check,
    )


def metadata_of(directory: Path) -> dict:
    return json.loads((directory / "metadata.json").read_text())


# --------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def metadata(model_dir: Path) -> dict:
    return metadata_of(model_dir)


@pytest.mark.slow
def test_promoted_model_beats_the_baseline_on_held_out_red_wine(model_dir, metadata, data_source):
    """Recompute the held-out metrics from the data and the loaded model, not only from metadata."""
    dataset = load_dataset(data_source / "winequality-red.csv")
    keep = dataset.first_occurrences()
    data = split(dataset.X[keep], dataset.y[keep], metadata["seed"])
    model = load_artifact(model_dir, "sklearn")
    promoted = score(data.y_test, model.predict(data.X_test))
    baseline = score(
        data.y_test, LinearRegression().fit(data.X_train, data.y_train).predict(data.X_test)
    )
    assert promoted["rmse"] < baseline["rmse"]
    assert promoted["mae"] < baseline["mae"]
    assert metadata["algorithm"] != BASELINE
    assert promoted == pytest.approx(metadata["metrics"]["test"], abs=1e-12)
    assert baseline == pytest.approx(metadata["metrics"]["baseline"]["test"], abs=1e-9)
    assert metadata["metrics"]["gate"]["passed"] is True


def test_metadata_has_the_contract_fields(metadata):
    assert metadata["name"] == "wine-quality"
    assert f"+m{metadata['model_id']}" in metadata["version"]
    assert metadata["wine"] == "red" and metadata["seed"] == 0
    assert metadata["algorithm"] in CANDIDATES and metadata["params"]
    assert metadata["data"] == {
        "file": "winequality-red.csv",
        "sha256": SHA256["winequality-red.csv"],
        "published_uci_file": True,
        "rows": 1599,
        "duplicates": 240,
        "rows_without_duplicates": 1359,
        "train_rows": 1087,
        "test_rows": 272,
    }
    for package in ("python", "numpy", "scikit-learn", "joblib", "onnxruntime", "skl2onnx"):
        assert metadata["versions"][package]
    assert metadata["model_file"]["path"] == "model.joblib"
    assert len(metadata["model_file"]["sha256"]) == 64
    assert metadata["timing"]["training_seconds"] > 0
    onnx = metadata["runtimes"]["onnx"]
    assert onnx["file"] == "model.onnx" and onnx["max_abs_error"] <= onnx["tolerance"] == 1e-5
    assert onnx["checked_rows"] == 1599


def test_metadata_features_follow_the_schema(metadata, data_source):
    features = metadata["features"]
    assert [f["name"] for f in features] == list(FEATURE_NAMES)
    assert [f["key"] for f in features] == list(FEATURE_KEYS)
    X = load_dataset(data_source / "winequality-red.csv").X
    for index, (entry, feature) in enumerate(zip(features, FEATURES, strict=True)):
        assert (entry["minimum"], entry["maximum"]) == (feature.minimum, feature.maximum)
        quantiles = [entry["quantiles"][q] for q in ("0.01", "0.25", "0.5", "0.75", "0.99")]
        assert quantiles == sorted(quantiles)
        assert entry["train_min"] <= quantiles[0] and quantiles[-1] <= entry["train_max"]
        assert X[:, index].min() <= entry["train_min"] and entry["train_max"] <= X[:, index].max()
    target = metadata["target"]
    assert 5.4 < target["mean"] < 5.8 and target["min"] == 3 and target["max"] == 8


def test_both_protocols_report_every_candidate(metadata):
    protocols = metadata["metrics"]["protocols"]
    assert set(protocols) == {"leakage_free", "paper"}
    for block in protocols.values():
        assert set(block["candidates"]) == set(CANDIDATES)
        for result in block["candidates"].values():
            assert set(result["cv"]) == set(result["test"]) == METRICS
    assert protocols["paper"]["train_rows"] + protocols["paper"]["test_rows"] == 1599
    assert protocols["leakage_free"]["train_rows"] + protocols["leakage_free"]["test_rows"] == 1359
    selection = metadata["metrics"]["selection"]
    cv_rmse = {n: r["cv"]["rmse"] for n, r in protocols["leakage_free"]["candidates"].items()}
    assert selection["promoted"] == metadata["algorithm"] == min(cv_rmse, key=cv_rmse.get)


def test_duplicates_inflate_the_paper_protocol(metadata):
    """Copies of a wine on both sides of the split flatter the forests (data README)."""
    protocols = metadata["metrics"]["protocols"]
    leaky = protocols["paper"]["candidates"]["extra_trees"]["cv"]["within_0_5"]
    honest = protocols["leakage_free"]["candidates"]["extra_trees"]["cv"]["within_0_5"]
    assert leaky > honest + 0.05


def test_model_card_and_plots(model_dir, metadata):
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert metadata["version"] in card and "leakage_free" in card and "paper" in card
    plots = ("predicted_vs_true.png", "residuals.png", "feature_importance.png")
    for name in (*plots, "interval_coverage.png"):
        png = (model_dir / "plots" / name).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
        assert f"](plots/{name})" in card
    intervals = metadata["intervals"]
    section = card[card.index("## Prediction intervals") :]
    assert f"{intervals['coverage_test']:.1%}" in section
    assert f"{intervals['mean_width_test']:.2f}" in section
    assert f"On the {intervals['test_rows']} held-out wines" in section


def test_score_follows_cortez_tolerances():
    metrics = score(np.array([5.0, 6.0, 7.0, 4.0]), np.array([5.5, 6.6, 7.0, 5.0]))
    assert metrics["within_0_5"] == 0.5  # |error| <= 0.5: 5.5 and 7.0
    assert metrics["within_1"] == 1.0
    assert metrics["mae"] == pytest.approx((0.5 + 0.6 + 0 + 1) / 4)
    assert metrics["rmse"] == pytest.approx(np.sqrt((0.25 + 0.36 + 1) / 4))


# --------------------------------------------------------------------------- the quality gate


def write_linear_wines(folder: Path, rows: int = 240) -> Path:
    """A file whose grade is an exact linear function of alcohol: the baseline fits it perfectly
    (test errors ~1e-15), so no candidate can beat it by more than floating-point noise."""
    rng = np.random.default_rng(1)
    X = np.column_stack(
        [
            rng.uniform(
                f.minimum + (f.maximum - f.minimum) * 0.1,
                f.minimum + (f.maximum - f.minimum) * 0.3,
                rows,
            )
            for f in FEATURES
        ]
    )
    alcohol = FEATURE_NAMES.index("alcohol")
    X[:, alcohol] = rng.integers(8, 15, rows)
    y = X[:, alcohol] - 5
    folder.mkdir(parents=True, exist_ok=True)
    lines = [";".join(f'"{c}"' for c in CSV_COLUMNS)]
    lines += [";".join([*(f"{v:.6f}" for v in x), str(int(q))]) for x, q in zip(X, y, strict=True)]
    path = folder / "winequality-red.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("candidates", ["ridge,svr", ",".join(CANDIDATES)])
def test_quality_gate_failure_exits_non_zero_and_writes_nothing(tmp_path, candidates):
    data_dir = tmp_path / "data"
    write_linear_wines(data_dir)
    output = tmp_path / "artifacts" / "model"
    output.parent.mkdir()
    result = train(
        "--data-dir",
        str(data_dir),
        "--output",
        str(output),
        "--folds",
        "3",
        "--candidates",
        candidates,
    )
    assert result.returncode == 3, result.stderr
    assert "quality gate failed" in result.stderr
    assert f"does not beat the {BASELINE} baseline" in result.stderr
    assert "test RMSE" in result.stderr and "is not below the baseline's" in result.stderr
    assert f"No artifact was written to {output}" in result.stderr
    assert "leakage_free" in result.stderr  # the candidates' metrics explain the failure
    assert not output.exists()
    assert list(output.parent.iterdir()) == []  # no staging directory left behind either


def test_gate_failure_keeps_the_previous_artifact(tmp_path):
    data_dir = tmp_path / "data"
    write_linear_wines(data_dir)
    output = tmp_path / "model"
    output.mkdir()
    (output / "metadata.json").write_text('{"previous": true}')
    result = train(
        "--data-dir",
        str(data_dir),
        "--output",
        str(output),
        "--folds",
        "3",
        "--candidates",
        "ridge",
    )
    assert result.returncode == 3
    assert [p.name for p in output.iterdir()] == ["metadata.json"]
    assert json.loads((output / "metadata.json").read_text()) == {"previous": True}


# --------------------------------------------------------------------------- options, errors


def test_invalid_data_exits_2_naming_the_file(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "winequality-red.csv").write_text("a,b,c\n1,2,3\n")
    result = train("--data-dir", str(data_dir), "--output", str(tmp_path / "model"))
    assert result.returncode == 2
    assert str(data_dir / "winequality-red.csv") in result.stderr and "line 1" in result.stderr
    assert not (tmp_path / "model").exists()


def test_unknown_candidate_exits_2(tmp_path, data_source):
    result = train(
        "--data-dir",
        str(data_source),
        "--output",
        str(tmp_path / "model"),
        "--candidates",
        "ridge,deep_net",
    )
    assert result.returncode == 2 and "unknown candidate(s) ['deep_net']" in result.stderr


@pytest.mark.parametrize("jobs", ["0", "-1"])
def test_jobs_below_one_exits_2_before_training(tmp_path, data_source, jobs):
    result = train(
        "--data-dir",
        str(data_source),
        "--output",
        str(tmp_path / "model"),
        "--jobs",
        jobs,
        "--progress",
    )
    assert result.returncode == 2
    assert f"--jobs must be at least 1, got {jobs}" in result.stderr
    assert "fold" not in result.stderr  # refused before any training step
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_training_is_deterministic_and_quiet_without_a_terminal(tmp_path, data_source):
    runs = []
    for name in ("first", "second"):
        output = tmp_path / name
        result = train("--data-dir", str(data_source), "--output", str(output), *QUICK, check=True)
        assert result.stderr == ""  # no progress lines in logs
        assert "artifact written to" in result.stdout
        runs.append(output)
    first, second = (metadata_of(run) for run in runs)
    assert first["metrics"] == second["metrics"]
    assert first["reference"] == second["reference"]
    assert first["model_file"]["sha256"] == second["model_file"]["sha256"]
    assert first["version"] == second["version"]
    rows = load_dataset(data_source / "winequality-red.csv").X
    predictions = [load_artifact(run, "sklearn").predict(rows) for run in runs]
    assert np.array_equal(predictions[0], predictions[1])


def test_progress_is_shown_on_request(tmp_path, data_source):
    result = train(
        "--data-dir",
        str(data_source),
        "--output",
        str(tmp_path / "model"),
        "--folds",
        "2",
        "--candidates",
        "ridge",
        "--progress",
        check=True,
    )
    assert "leakage_free: ridge fold 2/2" in result.stderr
    assert "s] " in result.stderr  # elapsed time


@pytest.mark.slow
def test_white_wine_through_the_option(tmp_path, data_source):
    output = tmp_path / "white"
    train(
        "--data-dir",
        str(data_source),
        "--output",
        str(output),
        "--wine",
        "white",
        *QUICK,
        check=True,
    )
    metadata = metadata_of(output)
    assert metadata["wine"] == "white"
    assert metadata["data"]["file"] == "winequality-white.csv"
    assert (metadata["data"]["rows"], metadata["data"]["duplicates"]) == (4898, 937)
    assert metadata["target"]["max"] == 9
    gate = metadata["metrics"]["gate"]
    assert gate["passed"] and gate["promoted"]["rmse"] < gate["baseline"]["rmse"]
    assert "white" in (output / "MODEL_CARD.md").read_text()


# --------------------------------------------------------------------------- the command line


def test_help_lists_every_command_and_serve_lists_every_setting():
    from wine_quality.app.settings import SETTINGS

    top = subprocess.run(
        [sys.executable, "-m", "wine_quality.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for command in ("data", "train", "predict", "serve"):
        assert command in top
    serve = subprocess.run(
        [sys.executable, "-m", "wine_quality.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for setting in SETTINGS:
        assert setting.env in serve


def test_serve_runs_the_gunicorn_of_this_environment():
    from wine_quality.cli import gunicorn_command

    command = gunicorn_command()
    assert Path(command[0]).parent == Path(sys.executable).parent
    assert Path(command[0]).is_file()
    app = "wine_quality.app:create_app()"
    assert command[1:] == ["-c", "python:wine_quality.app.gunicorn_conf", app]


# --------------------------------------------------------------------------- servable candidates


class Unexportable(LinearRegression):
    """A regressor skl2onnx has no converter for: its export fails, as an exotic model's would."""


def fitted_pipelines() -> dict[str, object]:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.uniform(1, 10, size=(60, len(FEATURES)))
    y = X @ rng.uniform(-0.2, 0.2, len(FEATURES)) + 5
    return {
        "exotic": make_pipeline(StandardScaler(), Unexportable()).fit(X, y),
        "linear": make_pipeline(StandardScaler(), LinearRegression()).fit(X, y),
        "X": X,
    }


def test_a_candidate_without_an_exact_export_is_passed_over_with_its_reason():
    from wine_quality.training.train import first_servable

    fitted = fitted_pipelines()
    X = fitted.pop("X")
    name, onnx_bytes, runtimes = first_servable(["exotic", "linear"], fitted, X, lambda _: None)
    assert name == "linear" and onnx_bytes.startswith(b"\x08")  # an ONNX ModelProto
    assert runtimes["onnx"]["max_abs_error"] <= runtimes["onnx"]["tolerance"]
    assert list(runtimes["passed_over"]) == ["exotic"]
    assert "cannot export Unexportable to ONNX" in runtimes["passed_over"]["exotic"]


def test_no_servable_candidate_means_no_artifact_and_the_reasons():
    from wine_quality.training.train import QualityGateError, first_servable

    fitted = fitted_pipelines()
    X = fitted.pop("X")
    with pytest.raises(QualityGateError, match=r"none has an exact ONNX export.*exotic: export"):
        first_servable(["exotic"], {"exotic": fitted["exotic"]}, X, lambda _: None)
