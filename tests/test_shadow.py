"""The shadow model and the prediction log through Flask's test client: answers never change,
metrics and log lines say what the shadow did."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from support import PAPER_ROW
from wine_quality.app import create_app
from wine_quality.app import shadow as shadow_module
from wine_quality.app.prediction_log import APIS
from wine_quality.app.settings import Settings
from wine_quality.app.state import state
from wine_quality.core.features import FEATURE_KEYS, FEATURE_NAMES

WINE = dict(zip(FEATURE_NAMES, PAPER_ROW, strict=True))
LOG_KEYS = {
    "type",
    "time",
    "request_id",
    "api",
    "model_version",
    "row",
    "inputs",
    "quality",
    "grade",
}


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def app_with(loaded_model, **settings: object):
    base = Settings.from_env({"WINE_QUALITY_SECRET_KEY": "k"})
    return create_app(dataclasses.replace(base, **settings), model=loaded_model)


@pytest.fixture
def log_pipe(tmp_path):
    """A file standing in for the worker's stdout: (a reader of what was written, its fd)."""
    path = tmp_path / "stdout"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    yield path, fd
    os.close(fd)


def log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def batch(rows: np.ndarray) -> dict:
    return {"instances": [dict(zip(FEATURE_KEYS, row, strict=True)) for row in rows.tolist()]}


def test_answers_are_byte_identical_with_and_without_a_shadow(loaded_model, model_dir, red_rows):
    plain = app_with(loaded_model).test_client()
    shadowed = app_with(loaded_model, shadow_model_dir=model_dir).test_client()
    for body in (WINE, batch(red_rows[:50])):
        assert (
            plain.post("/v1/predict", json=body).data
            == shadowed.post("/v1/predict", json=body).data
        )
    csv_body = "\n".join([",".join(FEATURE_KEYS), *(",".join(map(str, r)) for r in red_rows[:20])])
    headers = {"Content-Type": "text/csv", "Accept": "text/csv"}
    assert (
        plain.post("/v1/predict", data=csv_body, headers=headers).data
        == shadowed.post("/v1/predict", data=csv_body, headers=headers).data
    )


def test_shadow_metrics_count_every_row_of_every_api(loaded_model, model_dir, red_rows):
    app = app_with(loaded_model, shadow_model_dir=model_dir)
    with app.app_context():
        current = state()
    registry, shadow = current.metrics.registry, current.shadow.model
    client = app.test_client()
    client.post("/v1/predict", json=batch(red_rows[:30]))
    client.post("/v1/predict", json=WINE)
    tensor = {
        "name": "input-0",
        "shape": [5, 11],
        "datatype": "FP64",
        "data": red_rows[30:35].ravel().tolist(),
    }
    assert (
        client.post("/v2/models/wine-quality/infer", json={"inputs": [tensor]}).status_code == 200
    )
    sent = np.vstack([red_rows[:30], [PAPER_ROW], red_rows[30:35]])
    assert current.shadow.wait_until_scored()
    assert sample(registry, "wine_quality_shadow_predictions_total") == len(sent)
    agree = sample(registry, "wine_quality_shadow_grades_total", agreement="agree")
    differ = sample(registry, "wine_quality_shadow_grades_total", agreement="differ")
    champion, challenger = loaded_model.predict(sent), shadow.predict(sent)
    expected_differ = int(np.sum(np.floor(champion + 0.5) != np.floor(challenger + 0.5)))
    assert (agree, differ) == (len(sent) - expected_differ, expected_differ)
    assert sample(registry, "wine_quality_shadow_difference_count") == len(sent)
    assert sample(registry, "wine_quality_shadow_difference_sum") == pytest.approx(
        float(np.sum(np.abs(champion - challenger))), abs=1e-6
    )
    assert (
        sample(
            registry,
            "wine_quality_shadow_info",
            version=shadow.version,
            algorithm=shadow.algorithm,
            runtime=shadow.runtime,
        )
        == 1
    )
    assert client.get("/v1/model").json["shadow"] == {
        "loaded": True,
        "version": shadow.version,
        "algorithm": shadow.algorithm,
        "runtime": shadow.runtime,
    }


class HeldShadow:
    """The loaded model as a shadow whose predict waits until released, counting its calls."""

    def __init__(self, model) -> None:
        self.model = model
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self.model, name)

    def predict(self, rows):
        self.calls.append(len(rows))
        self.entered.set()
        assert self.release.wait(30)
        return self.model.predict(rows)


def held_shadow_app(loaded_model, model_dir, **settings):
    app = app_with(loaded_model, shadow_model_dir=model_dir, **settings)
    with app.app_context():
        current = state()
    held = current.shadow.model = HeldShadow(current.shadow.model)
    return app, current, held


def test_answers_do_not_wait_for_the_shadow_and_its_rows_are_scored_together(
    loaded_model, model_dir, red_rows
):
    app, current, held = held_shadow_app(loaded_model, model_dir)
    client = app.test_client()
    assert client.post("/v1/predict", json=WINE).status_code == 200
    assert held.entered.wait(10)  # the shadow is stuck on the first request's row...
    for row in red_rows[:20]:  # ...and every later request is answered all the same
        answer = client.post("/v1/predict", json=dict(zip(FEATURE_KEYS, row.tolist(), strict=True)))
        assert answer.status_code == 200
    held.release.set()
    assert current.shadow.wait_until_scored()
    assert held.calls == [1, 20]  # the 20 queued rows in one call
    registry = current.metrics.registry
    assert sample(registry, "wine_quality_shadow_predictions_total") == 21
    assert sample(registry, "wine_quality_shadow_difference_count") == 21


def test_rows_beyond_the_queue_bound_are_counted_unscored_and_logged_without_shadow(
    loaded_model, model_dir, red_rows, log_pipe, monkeypatch
):
    monkeypatch.setattr(shadow_module, "MAX_QUEUED_ROWS", 10)
    app, current, held = held_shadow_app(loaded_model, model_dir, prediction_log="stdout")
    current.prediction_log.fd = log_pipe[1]
    client = app.test_client()
    assert client.post("/v1/predict", json=WINE).status_code == 200
    assert held.entered.wait(10)
    for start in (0, 5, 10):  # 5 + 5 rows wait; the third batch would make 15
        response = client.post(
            "/v1/predict",
            json=batch(red_rows[start : start + 5]),
            headers={"X-Request-ID": f"from-{start}"},
        )
        assert response.status_code == 200
    registry = current.metrics.registry
    assert sample(registry, "wine_quality_shadow_failures_total", stage="queue") == 1
    unscored = log_lines(log_pipe[0])  # the dropped request's lines are written at once
    assert [(line["request_id"], line["shadow_quality"]) for line in unscored] == [
        ("from-10", None)
    ] * 5
    held.release.set()
    assert current.shadow.wait_until_scored()
    assert held.calls == [1, 10]
    assert sample(registry, "wine_quality_shadow_predictions_total") == 11
    lines = log_lines(log_pipe[0])
    assert len(lines) == 16 and sum(line["shadow_quality"] is not None for line in lines) == 11


def test_closing_scores_what_is_queued_and_refuses_later_rows(loaded_model, model_dir, red_rows):
    app, current, held = held_shadow_app(loaded_model, model_dir)
    client = app.test_client()
    for row in red_rows[:3]:
        client.post("/v1/predict", json=dict(zip(FEATURE_KEYS, row.tolist(), strict=True)))
    assert held.entered.wait(10)
    closing = threading.Thread(target=current.shadow.close)
    closing.start()
    held.release.set()
    closing.join(10)
    assert not closing.is_alive()
    registry = current.metrics.registry
    assert sample(registry, "wine_quality_shadow_predictions_total") == 3
    assert client.post("/v1/predict", json=WINE).status_code == 200
    assert sample(registry, "wine_quality_shadow_failures_total", stage="queue") == 1
    assert sample(registry, "wine_quality_shadow_predictions_total") == 3


def test_an_idle_shadow_thread_ends_and_the_next_request_starts_another(
    loaded_model, model_dir, monkeypatch
):
    monkeypatch.setattr(shadow_module, "IDLE_SECONDS", 0.1)
    app = app_with(loaded_model, shadow_model_dir=model_dir)
    with app.app_context():
        current = state()
    client = app.test_client()
    assert client.post("/v1/predict", json=WINE).status_code == 200
    assert current.shadow.wait_until_scored()
    first = current.shadow._thread
    first.join(5)
    assert not first.is_alive() and current.shadow._thread is None
    assert client.post("/v1/predict", json=WINE).status_code == 200
    assert current.shadow.wait_until_scored()
    registry = current.metrics.registry
    assert sample(registry, "wine_quality_shadow_predictions_total") == 2


def test_a_shadow_that_fails_to_load_changes_nothing_but_says_so(
    loaded_model, small_model_dir, tmp_path
):
    broken = tmp_path / "shadow"
    shutil.copytree(small_model_dir, broken)
    (broken / "model.onnx").write_bytes(b"not the exported model")
    app = app_with(loaded_model, shadow_model_dir=broken)
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    answer = client.post("/v1/predict", json=WINE)
    assert answer.status_code == 200
    assert answer.data == app_with(loaded_model).test_client().post("/v1/predict", json=WINE).data
    described = client.get("/v1/model").json["shadow"]
    assert described["loaded"] is False and "sha256 mismatch" in described["error"]
    with app.app_context():
        registry = state().metrics.registry
    assert sample(registry, "wine_quality_shadow_failures_total", stage="load") == 1
    assert sample(registry, "wine_quality_shadow_predictions_total") == 0


def test_a_shadow_that_fails_on_a_request_is_counted_and_the_answer_stands(
    loaded_model, small_model_dir, log_pipe
):
    app = app_with(loaded_model, shadow_model_dir=small_model_dir, prediction_log="stdout")
    with app.app_context():
        current = state()

    class Failing:
        def __getattr__(self, name):
            return getattr(loaded_model, name)

        def predict(self, rows):
            raise RuntimeError("the shadow cannot score this")

    current.shadow.model = Failing()
    current.prediction_log.fd = log_pipe[1]
    answer = app.test_client().post("/v1/predict", json=WINE)
    assert answer.status_code == 200 and answer.json["grade"] in range(11)
    assert current.shadow.wait_until_scored()
    assert (
        sample(current.metrics.registry, "wine_quality_shadow_failures_total", stage="predict") == 1
    )
    (line,) = log_lines(log_pipe[0])
    assert line["shadow_quality"] is None and line["shadow_version"] == loaded_model.version


def test_one_log_line_per_row_with_the_response_request_id(
    loaded_model, model_dir, red_rows, log_pipe
):
    app = app_with(loaded_model, shadow_model_dir=model_dir, prediction_log="stdout")
    with app.app_context():
        current = state()
    current.prediction_log.fd = log_pipe[1]
    client = app.test_client()
    response = client.post(
        "/v1/predict", json=batch(red_rows[:7]), headers={"X-Request-ID": "batch-7"}
    )
    assert current.shadow.wait_until_scored()
    lines = log_lines(log_pipe[0])
    assert [line["row"] for line in lines] == list(range(7))
    assert (
        {line["request_id"] for line in lines} == {response.headers["X-Request-ID"]} == {"batch-7"}
    )
    for line, row, answer in zip(lines, red_rows[:7], response.json["predictions"], strict=True):
        assert set(line) == LOG_KEYS | {"shadow_version", "shadow_quality"}
        assert line["type"] == "prediction" and line["api"] == "v1.json"
        assert line["model_version"] == loaded_model.version
        assert line["inputs"] == dict(zip(FEATURE_KEYS, row.tolist(), strict=True))
        assert (line["quality"], line["grade"]) == (answer["quality"], answer["grade"])
        assert line["shadow_version"] == current.shadow.model.version
        assert line["shadow_quality"] == pytest.approx(
            float(current.shadow.model.predict(row[None, :])[0]), abs=1e-6
        )
    assert sample(current.metrics.registry, "wine_quality_prediction_log_lines_total") == 7


def test_log_lines_name_the_api_and_have_no_shadow_keys_without_a_shadow(
    loaded_model, log_pipe, red_rows
):
    app = app_with(loaded_model, prediction_log="stdout")
    with app.app_context():
        state().prediction_log.fd = log_pipe[1]
    client = app.test_client()
    client.post("/predict", data="alcohol,pH\n1,2", headers={"Content-Type": "text/csv"})  # 422
    csv_body = "\n".join([",".join(FEATURE_KEYS), ",".join(map(str, red_rows[0]))])
    client.post("/v1/predict", data=csv_body, headers={"Content-Type": "text/csv"})
    tensor = {"name": "input-0", "shape": [1, 11], "datatype": "FP64", "data": red_rows[0].tolist()}
    client.post("/v2/models/wine-quality/infer", json={"inputs": [tensor]})
    lines = log_lines(log_pipe[0])
    assert [line["api"] for line in lines] == ["v1.csv", "v2"]
    assert all(set(line) == LOG_KEYS for line in lines)
    assert {line["api"] for line in lines} <= set(APIS)


@pytest.mark.parametrize(
    ("fraction", "low", "high"), [(0.0, 0, 0), (0.5, 380, 620), (1.0, 1000, 1000)]
)
def test_the_sample_setting_logs_that_share_of_rows(
    loaded_model, log_pipe, red_rows, fraction, low, high
):
    app = app_with(loaded_model, prediction_log="stdout", prediction_log_sample=fraction)
    with app.app_context():
        state().prediction_log.fd = log_pipe[1]
    client = app.test_client()
    for start in range(0, 1000, 100):
        assert (
            client.post("/v1/predict", json=batch(red_rows[start : start + 100])).status_code == 200
        )
    assert low <= len(log_lines(log_pipe[0])) <= high


def test_a_failed_log_write_is_counted_and_the_request_answers(loaded_model):
    app = app_with(loaded_model, prediction_log="stdout")
    with app.app_context():
        current = state()
    read, write = os.pipe()
    os.close(read)  # nobody reads: every write fails with EPIPE
    current.prediction_log.fd = write
    try:
        assert app.test_client().post("/v1/predict", json=WINE).status_code == 200
    finally:
        os.close(write)
    assert sample(current.metrics.registry, "wine_quality_prediction_log_dropped_total") == 1


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("WINE_QUALITY_PREDICTION_LOG", "file", "is not one of off, stdout"),
        ("WINE_QUALITY_PREDICTION_LOG_SAMPLE", "1.5", "must be from 0 to 1"),
        ("WINE_QUALITY_PREDICTION_LOG_SAMPLE", "half", "is not a number"),
    ],
)
def test_bad_log_settings_are_refused_naming_the_variable(env, value, named):
    from wine_quality.app.settings import SettingsError

    with pytest.raises(SettingsError, match=f"{env}=.*{named}"):
        Settings.from_env({env: value})


@pytest.fixture(scope="module")
def red_rows(data_source: Path) -> np.ndarray:
    from wine_quality.training.data import load_dataset

    return load_dataset(data_source / "winequality-red.csv").X
