"""The fast runtime (ONNX Runtime) serves what the scikit-learn model predicts, and cheaply.

Every row of both UCI files goes through both runtimes of the session's real artifact: the
largest difference must stay within the tolerance recorded in the model metadata. Single rows
(the service's common case) take onnxruntime's one-row code path, so they are checked one by one
too. The hot path must not warn per request and must not build pandas objects per request.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wine_quality.app import create_app
from wine_quality.app.settings import Settings
from wine_quality.core import runtime
from wine_quality.core.artifact import load_artifact
from wine_quality.core.features import FEATURE_KEYS, FEATURE_NAMES
from wine_quality.training.data import file_name, load_dataset

pytestmark = pytest.mark.slow

STATED_TOLERANCE = 1e-5  # the promise of docs/inference.md


@pytest.fixture(scope="module")
def runtimes(model_dir: Path) -> dict:
    return {name: load_artifact(model_dir, name) for name in ("sklearn", "onnx")}


def _rows(data_source: Path, wine: str) -> np.ndarray:
    return load_dataset(data_source / file_name(wine)).X


def test_the_artifact_serves_onnx_and_records_its_tolerance(runtimes: dict) -> None:
    fast = runtimes["onnx"]
    assert fast.runtime == "onnx"
    recorded = fast.metadata["runtimes"]["onnx"]
    assert recorded["tolerance"] == runtime.ONNX_TOLERANCE
    assert 0 < recorded["tolerance"] <= STATED_TOLERANCE
    assert recorded["max_abs_error"] <= recorded["tolerance"]


@pytest.mark.parametrize("wine", ["red", "white"])
def test_onnx_equals_sklearn_on_every_row(runtimes: dict, data_source: Path, wine: str) -> None:
    rows = _rows(data_source, wine)
    tolerance = runtimes["onnx"].metadata["runtimes"]["onnx"]["tolerance"]
    reference = runtimes["sklearn"].predict(rows)
    batch = runtimes["onnx"].predict(rows)
    one_by_one = np.array([runtimes["onnx"].predict(rows[i : i + 1])[0] for i in range(len(rows))])
    assert reference.shape == batch.shape == one_by_one.shape == (len(rows),)
    for name, fast in (("batch", batch), ("single rows", one_by_one)):
        difference = np.abs(fast - reference)
        worst = int(np.argmax(difference))
        assert difference[worst] <= tolerance, (
            f"{wine} data, {name}: row {worst} differs by {difference[worst]:.3g} "
            f"(ONNX {fast[worst]!r}, scikit-learn {reference[worst]!r}, tolerance {tolerance:g})"
        )


@pytest.mark.parametrize("name", ["sklearn", "onnx"])
def test_predicting_one_numpy_row_emits_no_warning(
    runtimes: dict, data_source: Path, name: str
) -> None:
    row = _rows(data_source, "red")[:1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prediction = runtimes[name].predict(row)
    assert prediction.shape == (1,) and 0 <= prediction[0] <= 10


@pytest.fixture
def client(runtimes: dict):
    app = create_app(
        Settings.from_env({"WINE_QUALITY_LOG_LEVEL": "warning"}), model=runtimes["onnx"]
    )
    return app.test_client()


def test_a_request_builds_no_pandas_object_and_emits_no_warning(
    client, data_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _rows(data_source, "red")[:3]
    created: list[str] = []
    for cls in (pd.DataFrame, pd.Series):
        original = cls.__init__

        def counting(self, *args, _original=original, _name=cls.__name__, **kwargs):
            created.append(_name)
            _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", counting)
    pd.DataFrame({"probe": [1]})
    assert created == ["DataFrame"], "the probe must see pandas objects being built"
    created.clear()

    csv_body = (
        ",".join(FEATURE_NAMES) + "\n" + "\n".join(",".join(map(repr, r)) for r in rows.tolist())
    )
    requests = [
        ("/v1/predict", {"json": dict(zip(FEATURE_KEYS, rows[0].tolist(), strict=True))}),
        (
            "/v1/predict",
            {
                "json": {
                    "instances": [dict(zip(FEATURE_KEYS, r, strict=True)) for r in rows.tolist()]
                }
            },
        ),
        ("/v1/predict", {"data": csv_body, "content_type": "text/csv"}),
        (
            "/v2/models/wine-quality/infer",
            {
                "json": {
                    "inputs": [
                        {
                            "name": "input-0",
                            "shape": [3, 11],
                            "datatype": "FP64",
                            "data": rows.reshape(-1).tolist(),
                        }
                    ]
                }
            },
        ),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path, kwargs in requests:
            response = client.post(path, **kwargs)
            assert response.status_code == 200, (path, response.get_json())
    assert created == [], f"pandas objects built while serving: {created}"
    assert [str(w.message) for w in caught] == []
