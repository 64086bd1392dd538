"""The verified loader: a good artifact loads; a tampered, truncated or mismatched one does not."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from support import sample_intervals
from wine_quality.core.artifact import (
    METADATA_FILE,
    ArtifactError,
    load_artifact,
    save_artifact,
)
from wine_quality.core.features import FEATURE_KEYS, FEATURES
from wine_quality.core.runtime import ONNX_TOLERANCE
from wine_quality.training.data import load_dataset


@pytest.fixture
def artifact(small_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's trained artifact, free to be damaged."""
    copy = tmp_path / "model"
    shutil.copytree(small_model_dir, copy)
    return copy


def edit_metadata(directory: Path, change) -> None:
    path = directory / METADATA_FILE
    metadata = json.loads(path.read_text())
    change(metadata)
    path.write_text(json.dumps(metadata))


def refused(directory: Path, runtime: str = "auto") -> str:
    with pytest.raises(ArtifactError) as caught:
        load_artifact(directory, runtime)
    return str(caught.value)


# --------------------------------------------------------------------------- a good artifact


def test_loads_with_the_onnx_runtime_by_default(model_dir):
    model = load_artifact(model_dir)
    metadata = json.loads((model_dir / METADATA_FILE).read_text())
    assert model.runtime == "onnx"
    assert model.version == metadata["version"] and model.algorithm == metadata["algorithm"]
    assert model.load_seconds > 0
    assert model.metadata == metadata


def test_runtimes_agree_on_every_row_of_the_data(model_dir, data_source):
    rows = load_dataset(data_source / "winequality-red.csv").X
    onnx = load_artifact(model_dir, "onnx").predict(rows)
    sklearn = load_artifact(model_dir, "sklearn").predict(rows)
    assert onnx.dtype == sklearn.dtype == np.float64
    assert onnx.shape == sklearn.shape == (len(rows),)
    assert np.max(np.abs(onnx - sklearn)) <= ONNX_TOLERANCE


@pytest.mark.parametrize("runtime", ["onnx", "sklearn"])
def test_predicting_a_bare_array_emits_no_warning(model_dir, runtime):
    model = load_artifact(model_dir, runtime)
    rows = np.asarray(model.metadata["reference"]["inputs"], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predictions = model.predict(rows[:1])
    assert predictions.shape == (1,)


def test_reference_predictions_are_reproduced(model_dir):
    model = load_artifact(model_dir, "sklearn")
    reference = model.metadata["reference"]
    predicted = model.predict(np.asarray(reference["inputs"]))
    assert np.allclose(predicted, reference["outputs"], rtol=0, atol=reference["tolerance"])


# --------------------------------------------------------------------------- refusals


def test_tampered_model_file(artifact):
    path = artifact / "model.joblib"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    message = refused(artifact, "sklearn")
    assert str(path) in message and "sha256 mismatch" in message and "refusing" in message
    # the ONNX runtime never reads the pickle
    assert load_artifact(artifact).runtime == "onnx"


def test_truncated_model_file(artifact):
    path = artifact / "model.joblib"
    path.write_bytes(path.read_bytes()[:1000])
    message = refused(artifact, "sklearn")
    assert str(path) in message and "sha256 mismatch" in message


def test_wrong_checksum_in_metadata(artifact):
    edit_metadata(artifact, lambda m: m["model_file"].update(sha256="0" * 64))
    message = refused(artifact, "sklearn")
    assert "model.joblib: sha256 mismatch" in message and "0" * 64 in message


def test_missing_model_file(artifact):
    (artifact / "model.joblib").unlink()
    assert "model.joblib: cannot read the scikit-learn model" in refused(artifact, "sklearn")
    assert load_artifact(artifact).runtime == "onnx"  # as in the image, which has no pickle


def test_other_scikit_learn_version(artifact):
    edit_metadata(artifact, lambda m: m["versions"].update({"scikit-learn": "1.2.2"}))
    message = refused(artifact, "sklearn")
    assert "scikit-learn 1.2.2" in message
    assert f"scikit-learn {version('scikit-learn')} is installed" in message


def test_missing_metadata(artifact):
    (artifact / METADATA_FILE).unlink()
    message = refused(artifact)
    assert str(artifact / METADATA_FILE) in message and "missing" in message


def test_unreadable_metadata(artifact):
    (artifact / METADATA_FILE).write_text('{"name": "wine-quality",')
    assert "not readable JSON" in refused(artifact)


def test_metadata_without_required_keys(artifact):
    edit_metadata(artifact, lambda m: m.pop("model_file"))
    assert "missing key(s) model_file" in refused(artifact)


def test_missing_reference_tolerance_is_named(artifact):
    edit_metadata(artifact, lambda m: m["reference"].pop("tolerance"))
    assert "reference.tolerance is missing" in refused(artifact, "sklearn")


def test_missing_onnx_tolerance_is_refused(artifact):
    edit_metadata(artifact, lambda m: m["runtimes"]["onnx"].pop("tolerance"))
    assert "runtimes.onnx.tolerance is missing" in refused(artifact)


def test_missing_directory(tmp_path):
    assert "model directory not found" in refused(tmp_path / "nothing")


def test_reference_outputs_not_reproduced(artifact):
    edit_metadata(
        artifact,
        lambda m: m["reference"].update(outputs=[v + 0.5 for v in m["reference"]["outputs"]]),
    )
    message = refused(artifact, "sklearn")
    assert "does not reproduce the reference predictions" in message
    assert "largest difference 0.5" in message


def test_model_file_outside_the_artifact_is_refused(artifact):
    edit_metadata(artifact, lambda m: m["model_file"].update(path="../elsewhere.joblib"))
    assert "invalid file name" in refused(artifact, "sklearn")
    edit_metadata(artifact, lambda m: m["runtimes"]["onnx"].update(file="/etc/hostname"))
    assert "invalid file name '/etc/hostname' for the ONNX model" in refused(artifact)


def test_tampered_onnx_file_is_refused_not_skipped(artifact):
    path = artifact / "model.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    message = refused(artifact, "auto")
    assert str(path) in message and "sha256 mismatch" in message
    # scikit-learn alone does not read the ONNX file at all
    assert load_artifact(artifact, "sklearn").runtime == "sklearn"


def test_unknown_runtime(model_dir):
    assert "unknown runtime 'gpu'" in refused(model_dir, "gpu")


# ------------------------------------------------------------------- no fallback to the pickle


def test_no_onnx_model_is_refused_and_the_pickle_is_not_used(artifact):
    edit_metadata(artifact, lambda m: m.update(runtimes={"onnx": None, "reason": "export failed"}))
    for runtime in ("auto", "onnx"):
        message = refused(artifact, runtime)
        assert "the artifact has no ONNX model (export failed)" in message
        assert "never unpickles model.joblib" in message
    assert load_artifact(artifact, "sklearn").runtime == "sklearn"  # only when chosen


def test_missing_onnxruntime_is_refused(model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    assert "onnxruntime is not available" in refused(model_dir)


def test_onnx_not_reproducing_the_references_is_refused(model_dir, tmp_path):
    artifact = tmp_path / "model"
    shutil.copytree(model_dir, artifact)
    # Tighter than the float32 output of the tree ensemble can meet: the ONNX check fails.
    edit_metadata(artifact, lambda m: m["runtimes"]["onnx"].update(tolerance=0.0))
    assert "model.onnx: does not reproduce the reference predictions" in refused(artifact)


def test_sklearn_runtime_without_scikit_learn_names_it(artifact, monkeypatch):
    from wine_quality.core import artifact as module

    installed = module.importlib_metadata.version

    def version_without_sklearn(name: str) -> str:
        if name == "scikit-learn":
            raise module.importlib_metadata.PackageNotFoundError(name)
        return installed(name)

    monkeypatch.setattr(module.importlib_metadata, "version", version_without_sklearn)
    message = refused(artifact, "sklearn")
    assert "runtime sklearn needs scikit-learn" in message and "not installed" in message


# --------------------------------------------------------------------------- writing


def tiny_model() -> tuple[Pipeline, dict]:
    rng = np.random.default_rng(0)
    X = rng.uniform(0.5, 1.0, (30, 11))
    y = X @ np.arange(11) / 10
    model = Pipeline([("regressor", LinearRegression())]).fit(X, y)
    metadata = {
        "name": "wine-quality",
        "algorithm": "linear_regression",
        "git_commit": None,
        "reference": {
            "inputs": X[:3].tolist(),
            "outputs": model.predict(X[:3]).tolist(),
            "tolerance": 1e-9,
        },
        "runtimes": {"onnx": None, "reason": "not exported"},
        **served_facts(X, y),
    }
    return model, metadata


def served_facts(X: np.ndarray, y: np.ndarray) -> dict:
    """The metadata fields the service reads (wine_quality.core.facts), for a hand-made model."""
    return {
        "wine": "red",
        "trained_at": "2026-12-01T00:00:00+00:00",
        "data": {"rows": len(y), "test_rows": 0},
        "metrics": {"test": {}},
        "target": {"mean": float(y.mean())},
        "intervals": sample_intervals(),
        "features": [
            {
                "name": f.name,
                "train_min": float(X[:, i].min()),
                "train_max": float(X[:, i].max()),
                "quantiles": {"0.5": float(np.median(X[:, i]))},
            }
            for i, f in enumerate(FEATURES)
        ],
    }


def test_save_then_load_round_trip(tmp_path):
    model, metadata = tiny_model()
    written = save_artifact(tmp_path / "model", model, metadata)
    loaded = load_artifact(tmp_path / "model", "sklearn")
    assert loaded.version == written["version"]
    assert written["version"].endswith(f"+m{written['model_id']}")
    assert written["model_file"]["sha256"].startswith(written["model_id"])
    assert written["versions"]["scikit-learn"] == version("scikit-learn")


def test_failed_save_leaves_the_previous_artifact_untouched(tmp_path):
    model, metadata = tiny_model()
    output = tmp_path / "model"
    first = save_artifact(output, model, metadata)
    before = {p.name: p.read_bytes() for p in output.iterdir()}

    def crash(directory, meta):
        (directory / "MODEL_CARD.md").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_artifact(output, model, metadata, write_docs=crash)
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before
    assert not list(tmp_path.glob(".model.new-*"))  # no staging directory left
    assert load_artifact(output, "sklearn").version == first["version"]


def test_save_replaces_a_previous_artifact_completely(tmp_path):
    model, metadata = tiny_model()
    output = tmp_path / "model"
    output.mkdir()
    (output / "stale.txt").write_text("old")
    save_artifact(output, model, metadata)
    assert sorted(p.name for p in output.iterdir()) == ["metadata.json", "model.joblib"]
    # the plain directory was swapped for a link atomically, then removed
    assert output.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir() if p != output.resolve()) == [
        ".model.lock",
        "model",
    ]


def test_each_write_switches_the_link_and_keeps_only_the_replaced_version(tmp_path):
    model, metadata = tiny_model()
    output = tmp_path / "model"
    versions = []
    for _ in range(3):
        save_artifact(output, model, metadata)
        versions.append(output.resolve())
    assert len(set(versions)) == 3 and all(v.parent == tmp_path for v in versions)
    # the live version and the one it replaced (a loader may still be reading it); older ones go
    assert sorted(tmp_path.glob(".model.v-*")) == sorted(versions[1:])
    assert load_artifact(output, "sklearn").predict(np.ones((1, 11))).shape == (1,)


def test_leftovers_of_a_killed_write_are_removed_by_the_next(tmp_path):
    model, metadata = tiny_model()
    output = tmp_path / "model"
    save_artifact(output, model, metadata)
    live = output.resolve()
    staging = tmp_path / ".model.new-abc123"
    staging.mkdir()
    (staging / "model.joblib").write_bytes(b"half" * 1000)
    orphan = tmp_path / ".model.v-deadbeef-0000"  # renamed, but the link never switched to it
    shutil.copytree(live, orphan)
    (tmp_path / ".model.link-0000").symlink_to(orphan.name)
    unrelated = tmp_path / ".modelling-notes"
    unrelated.write_text("kept")
    save_artifact(output, model, metadata)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        [".model.lock", ".modelling-notes", "model", live.name, output.resolve().name]
    )


def test_a_second_writer_is_refused_while_one_writes(tmp_path):
    import fcntl

    model, metadata = tiny_model()
    output = tmp_path / "model"
    save_artifact(output, model, metadata)
    with (tmp_path / ".model.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(ArtifactError, match="another process is writing this artifact"):
            save_artifact(output, model, metadata)
    assert load_artifact(output, "sklearn")


# --------------------------------------------------------------------------- the predict command


def predict(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wine_quality.cli", "predict", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_predict_scores_a_uci_csv_file(model_dir, data_source, tmp_path):
    lines = (data_source / "winequality-red.csv").read_text().splitlines()[:6]
    path = tmp_path / "wines.csv"
    path.write_text("\n".join(lines) + "\n")
    result = predict("--model-dir", str(model_dir), str(path))
    assert result.returncode == 0, result.stderr
    printed = [float(line) for line in result.stdout.split()]
    expected = load_artifact(model_dir, "sklearn").predict(load_dataset(path).X)
    assert np.allclose(printed, expected, atol=1e-4)


def test_predict_reads_json_from_stdin(model_dir):
    metadata = json.loads((model_dir / METADATA_FILE).read_text())
    row = metadata["reference"]["inputs"][0]
    body = json.dumps([dict(zip(FEATURE_KEYS, row, strict=True))] * 2)
    result = predict("--model-dir", str(model_dir), "--json", "-", stdin=body)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["model_version"] == metadata["version"] and answer["runtime"] == "onnx"
    expected = metadata["reference"]["outputs"][0]
    assert answer["predictions"] == [pytest.approx(expected, abs=1e-5)] * 2


def test_predict_names_the_bad_row_and_field(model_dir):
    metadata = json.loads((model_dir / METADATA_FILE).read_text())
    good = dict(zip(FEATURE_KEYS, metadata["reference"]["inputs"][0], strict=True))
    body = json.dumps({"instances": [good, {**good, "ph": 15}]})
    result = predict("--model-dir", str(model_dir), "-", stdin=body)
    assert result.returncode == 2
    assert "row 1, field 'pH': 15 is outside the physical bounds" in result.stderr


def test_predict_refuses_a_broken_artifact(artifact):
    metadata = json.loads((artifact / METADATA_FILE).read_text())
    body = json.dumps(dict(zip(FEATURE_KEYS, metadata["reference"]["inputs"][0], strict=True)))
    (artifact / "model.onnx").write_bytes(b"not a model")
    result = predict("--model-dir", str(artifact), "-", stdin=body)
    assert result.returncode == 1 and result.stdout == ""
    assert "model.onnx: sha256 mismatch" in result.stderr
