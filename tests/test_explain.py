"""Explanations (core/explain.py): exact additivity for every family that can be promoted, on both
wines; the explainer file's format and its verification when an artifact is loaded."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from wine_quality.core import explain
from wine_quality.core.artifact import METADATA_FILE, ArtifactError, load_artifact
from wine_quality.training.data import load_dataset
from wine_quality.training.train import CANDIDATES, promotable

ROWS = 500


@pytest.fixture(scope="module", params=["red", "white"])
def wine_data(request, data_source: Path) -> tuple[str, np.ndarray, np.ndarray]:
    dataset = load_dataset(data_source / f"winequality-{request.param}.csv")
    return request.param, dataset.X, dataset.y


@pytest.mark.parametrize("name", promotable(tuple(CANDIDATES)))
def test_contributions_sum_to_the_prediction_on_500_rows(wine_data, name) -> None:
    wine, X, y = wine_data
    fit_rows = np.arange(len(X)) % 5 != 0  # the other rows are wines the model never saw
    model = CANDIDATES[name](0, 2).fit(X[fit_rows], y[fit_rows])
    explainer = explain.from_bytes(explain.to_bytes(explain.build(model, X[fit_rows])))
    rows = np.vstack([X[~fit_rows][: ROWS // 2], X[fit_rows][: ROWS // 2]])
    explanation = explainer.explain(rows)
    assert explanation.contributions.shape == (ROWS, 11)
    error = np.abs(explanation.total - model.predict(rows))
    assert error.max() < 1e-9, f"{wine} {name}: off by up to {error.max():.3g}"
    # every feature gets its own number, and the contributions are not all zero
    assert np.count_nonzero(np.abs(explanation.contributions).sum(axis=0)) >= 5
    assert np.all(explanation.base_value == explanation.base_value[0])


def test_linear_contribution_is_coefficient_times_distance_from_the_training_mean(wine_data):
    _, X, y = wine_data
    model = CANDIDATES["ridge"](0, 1).fit(X, y)
    explanation = explain.build(model, X).explain(X[:3])
    scale, ridge = model[0].scale_, model[-1]
    expected = ridge.coef_ / scale * (X[:3] - X.mean(axis=0))
    np.testing.assert_allclose(explanation.contributions, expected, rtol=1e-12, atol=1e-12)
    # the base value is the prediction at the training means
    assert explanation.base_value[0] == pytest.approx(model.predict(X.mean(axis=0)[None])[0])


def test_a_tree_base_value_is_the_mean_training_target_of_the_forest(wine_data) -> None:
    """Each tree's root holds the mean target of its (bootstrap) sample; without bootstrap
    (extra trees) that is the training mean itself."""
    _, X, y = wine_data
    model = CANDIDATES["extra_trees"](0, 2).fit(X[:600], y[:600])
    assert explain.build(model, X[:600]).explain(X[:1]).base_value[0] == pytest.approx(
        y[:600].mean()
    )


def test_svr_cannot_be_explained_and_is_not_promotable() -> None:
    assert "svr" in CANDIDATES and "svr" not in promotable(tuple(CANDIDATES))
    with pytest.raises(explain.ExplainerError, match="SVR"):
        explain.build(CANDIDATES["svr"](0, 1), np.zeros((2, 11)))


def test_svr_alone_is_refused_before_training(tmp_path, data_source) -> None:
    from wine_quality.training.train import TrainConfig, train

    config = TrainConfig(data_source, tmp_path / "model", candidates=("svr",))
    with pytest.raises(ValueError, match="exact explanation"):
        train(config)
    assert not (tmp_path / "model").exists()


def test_the_file_is_byte_identical_for_the_same_model(wine_data) -> None:
    _, X, y = wine_data
    model = CANDIDATES["random_forest"](0, 2).fit(X[:300], y[:300])
    first = explain.to_bytes(explain.build(model, X[:300]))
    assert first == explain.to_bytes(explain.build(model, X[:300]))


def _rewritten(data: bytes, change) -> bytes:
    """The explainer file with its arrays passed through `change` (a dict -> dict function)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays = change(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def forest_file(data_source: Path) -> bytes:
    dataset = load_dataset(data_source / "winequality-red.csv")
    model = CANDIDATES["random_forest"](0, 2).fit(dataset.X[:300], dataset.y[:300])
    return explain.to_bytes(explain.build(model, dataset.X[:300]))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda a: {k: v for k, v in a.items() if k != "value"}, "'value' is missing"),
        (lambda a: {**a, "left": a["left"] + 10**6}, "left must hold whole numbers"),
        (lambda a: {**a, "feature": np.full_like(a["feature"], 11)}, "feature must hold"),
        (lambda a: {**a, "value": a["value"][:-1]}, "must hold one (number|entry) per node"),
        (lambda a: {**a, "value": np.where(a["value"] > 0, np.nan, 0)}, "finite numbers"),
        (lambda a: {**a, "method": np.str_("shap")}, "unknown method 'shap'"),
        (lambda a: {**a, "format": np.int64(2)}, "format 2"),
    ],
)
def test_a_malformed_file_is_refused_naming_the_problem(forest_file, change, problem) -> None:
    with pytest.raises(explain.ExplainerError, match=problem):
        explain.from_bytes(_rewritten(forest_file, change))


def test_a_pickled_array_is_never_loaded(forest_file) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        entry = io.BytesIO()
        np.save(entry, np.array([object()], dtype=object), allow_pickle=True)
        archive.writestr("value.npy", entry.getvalue())
    with pytest.raises(explain.ExplainerError, match="not a readable explainer file"):
        explain.from_bytes(buffer.getvalue())
    with pytest.raises(explain.ExplainerError, match="not a readable"):
        explain.from_bytes(forest_file[: len(forest_file) // 2])


# ---------------------------------------------------------------- inside the artifact


def test_the_artifact_ships_a_verified_explainer(small_model_dir: Path) -> None:
    metadata = json.loads((small_model_dir / METADATA_FILE).read_text())
    assert metadata["explainer"]["file"] == explain.EXPLAINER_FILE
    assert metadata["explainer"]["method"] == explain.LINEAR
    model = load_artifact(small_model_dir)
    rows = np.asarray(metadata["reference"]["inputs"])
    np.testing.assert_allclose(model.explainer.explain(rows).total, model.predict(rows), atol=1e-6)


def test_a_modified_explainer_file_is_refused(small_model_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(small_model_dir, tmp_path / "model")
    path = copy / explain.EXPLAINER_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"explainer\.npz: sha256 mismatch"):
        load_artifact(copy)


def test_an_explainer_that_does_not_reproduce_the_model_is_refused(
    small_model_dir: Path, tmp_path: Path
) -> None:
    """A consistent checksum is not enough: the explanations must add up to the references."""
    copy = shutil.copytree(small_model_dir, tmp_path / "model")
    path = copy / explain.EXPLAINER_FILE
    data = _rewritten(path.read_bytes(), lambda a: {**a, "base": a["base"] + 0.5})
    path.write_bytes(data)
    metadata = json.loads((copy / METADATA_FILE).read_text())
    metadata["explainer"]["sha256"] = __import__("hashlib").sha256(data).hexdigest()
    (copy / METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(ArtifactError, match="does not reproduce the reference predictions"):
        load_artifact(copy)


def test_an_artifact_without_an_explainer_serves_but_refuses_explain(
    small_model_dir, tmp_path
) -> None:
    from wine_quality.app import create_app
    from wine_quality.app.settings import Settings

    copy = shutil.copytree(small_model_dir, tmp_path / "model")
    metadata = json.loads((copy / METADATA_FILE).read_text())
    del metadata["explainer"]
    (copy / METADATA_FILE).write_text(json.dumps(metadata))
    model = load_artifact(copy)
    assert model.explainer is None
    client = create_app(Settings.from_env({}), model=model).test_client()
    wine = {f["name"]: f["quantiles"]["0.5"] for f in metadata["features"]}
    assert client.post("/v1/predict", json=wine).status_code == 200
    refused = client.post("/v1/predict?explain=1", json=wine)
    assert refused.status_code == 409
    assert refused.json["error"]["message"] == "the served model has no explanation"
