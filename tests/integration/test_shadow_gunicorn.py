"""The shadow model and the prediction log under gunicorn with several workers: metrics exact
across workers for every API (the web page's form and upload too), one whole log line per row,
answers byte-identical to a server without a shadow, readiness untouched by a broken shadow."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from gunicorn_server import GunicornServer
from wine_quality.core.features import FEATURE_KEYS
from wine_quality.training.data import load_dataset

pytestmark = pytest.mark.slow

WORKERS = 3


@pytest.fixture(scope="module")
def red_rows(data_source: Path) -> np.ndarray:
    return load_dataset(data_source / "winequality-red.csv").X


TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def shadowed(
    small_model_dir: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornServer]:
    server = GunicornServer.start(
        small_model_dir,
        tmp_path_factory.mktemp("shadowed"),
        GUNICORN_WORKERS=str(WORKERS),
        GUNICORN_SHUTDOWN_DELAY="0",
        stdout_pipe=True,  # as in a container: the workers' lines meet in one pipe
        WINE_QUALITY_SHADOW_MODEL_DIR=str(model_dir),
        WINE_QUALITY_PREDICTION_LOG="stdout",
    )
    try:
        yield server
    finally:
        server.stop()


def requests_to_send(rows: np.ndarray) -> list[tuple[str, dict, int]]:
    """(path, requests keyword arguments, rows in it): JSON single and batch, CSV, v2."""
    records = [dict(zip(FEATURE_KEYS, row, strict=True)) for row in rows.tolist()]
    csv_body = "\n".join([",".join(FEATURE_KEYS), *(",".join(map(str, r)) for r in rows[:5])])
    tensor = {
        "name": "input-0",
        "shape": [3, 11],
        "datatype": "FP64",
        "data": rows[:3].ravel().tolist(),
    }
    sent = []
    for i in range(40):
        sent.append(("/v1/predict", {"json": records[i]}, 1))
    for i in range(0, 100, 10):
        sent.append(("/v1/predict", {"json": {"instances": records[i : i + 10]}}, 10))
    for _ in range(6):
        sent.append(("/v1/predict", {"data": csv_body, "headers": {"Content-Type": "text/csv"}}, 5))
        sent.append(("/v2/models/wine-quality/infer", {"json": {"inputs": [tensor]}}, 3))
    return sent


class Page:
    """A browser on the web page: its CSRF cookie and the form's token."""

    def __init__(self, server: GunicornServer) -> None:
        self.url = server.url
        self.session = requests.Session()
        page = self.session.get(self.url + "/", timeout=10)
        self.token = TOKEN.search(page.text).group(1)

    def predict_one(self, row: np.ndarray, request_id: str) -> requests.Response:
        fields = {"csrf_token": self.token, **dict(zip(FEATURE_KEYS, map(str, row), strict=True))}
        return self.session.post(
            self.url + "/", data=fields, headers={"X-Request-ID": request_id}, timeout=30
        )

    def upload(self, rows: np.ndarray, request_id: str) -> requests.Response:
        content = "\n".join([",".join(FEATURE_KEYS), *(",".join(map(str, r)) for r in rows)])
        return self.session.post(
            self.url + "/batch",
            data={"csrf_token": self.token},
            files={"file": ("wines.csv", content.encode(), "text/csv")},
            headers={"X-Request-ID": request_id},
            timeout=30,
        )


def without_tokens(page: bytes) -> bytes:
    return re.sub(rb'name="csrf_token" value="[^"]+"', b"", page)


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} " if labels else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


COUNTED = (
    "wine_quality_shadow_predictions_total",
    "wine_quality_shadow_difference_count",
    "wine_quality_prediction_log_lines_total",
)


def counts(server: GunicornServer) -> dict[str, float]:
    scraped = requests.get(server.url + "/metrics", timeout=10).text
    found = {name: metric(scraped, name) for name in COUNTED}
    for agreement in ("agree", "differ"):
        found[agreement] = metric(scraped, "wine_quality_shadow_grades_total", agreement=agreement)
    return found


def settled_counts(server: GunicornServer, before: dict[str, float], rows: int) -> dict:
    """The counters once the shadow's threads have scored `rows` more rows (they score off the
    request path, within SCORING_DELAY_SECONDS and a model call), or after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        found = counts(server)
        scored = (
            found["wine_quality_shadow_predictions_total"]
            - before["wine_quality_shadow_predictions_total"]
        )
        if scored >= rows or time.monotonic() > deadline:
            time.sleep(0.2)  # then nothing more may come
            return counts(server)
        time.sleep(0.05)


def logged_rows(server: GunicornServer, request_ids: set[str], expected: int) -> list[dict]:
    """The prediction-log lines of these requests, once `expected` of them have come through the
    pipe (a thread copies it to the file) or 10 s have passed. Every line must be whole JSON."""
    deadline = time.monotonic() + 10
    while True:
        complete = server.stdout.read_text().split("\n")[:-1]  # not a line still being copied
        lines = [json.loads(line) for line in complete]
        logged = [
            line
            for line in lines
            if line.get("type") == "prediction" and line.get("request_id") in request_ids
        ]
        if len(logged) >= expected or time.monotonic() > deadline:
            return logged
        time.sleep(0.1)


def test_shadow_counts_and_log_lines_are_exact_across_workers(shadowed, red_rows):
    sent = requests_to_send(red_rows)
    before = counts(shadowed)

    def send(item: tuple[str, dict, int]) -> tuple[str, int]:
        path, kwargs, rows = item
        request_id = uuid.uuid4().hex
        headers = {**kwargs.pop("headers", {}), "X-Request-ID": request_id}
        response = requests.post(shadowed.url + path, headers=headers, timeout=60, **kwargs)
        assert response.status_code == 200, response.text
        assert response.headers["X-Request-ID"] == request_id
        return request_id, rows

    def browse(item: tuple[str, np.ndarray]) -> tuple[str, int]:
        kind, rows = item
        request_id, page = uuid.uuid4().hex, Page(shadowed)
        if kind == "form":
            response = page.predict_one(rows[0], request_id)
        else:
            response = page.upload(rows, request_id)
        assert response.status_code == 200, response.text[:500]
        return request_id, len(rows)

    web = [("form", red_rows[i : i + 1]) for i in range(200, 206)]
    web += [("upload", red_rows[i : i + 7]) for i in range(300, 330, 10)]
    with ThreadPoolExecutor(8) as pool:
        answered = list(pool.map(send, [(p, dict(k), n) for p, k, n in sent]))
        answered += list(pool.map(browse, web))
    total = sum(rows for _, rows in answered)

    after = settled_counts(shadowed, before, total)
    added = {name: after[name] - before[name] for name in after}
    assert added == {
        **dict.fromkeys(COUNTED, total),
        "agree": added["agree"],
        "differ": total - added["agree"],
    }

    ours = {request_id for request_id, _ in answered}
    logged = logged_rows(shadowed, ours, total)
    assert len(logged) == total
    expected = {(request_id, row) for request_id, rows in answered for row in range(rows)}
    assert {(line["request_id"], line["row"]) for line in logged} == expected
    assert {line["api"] for line in logged} == {"v1.json", "v1.csv", "v2", "web.form", "web.batch"}
    assert all(line["shadow_quality"] is not None for line in logged)
    assert len({line["shadow_version"] for line in logged}) == 1


def test_answers_are_byte_identical_with_and_without_a_shadow(
    small_model_server, shadowed, red_rows
):
    plain = small_model_server
    for path, kwargs, _ in requests_to_send(red_rows[:100])[::7]:
        headers = {**kwargs.get("headers", {}), "Accept": "text/csv"} if "data" in kwargs else {}
        options = {**kwargs, "headers": headers, "timeout": 30}
        ours, theirs = (requests.post(s.url + path, **options) for s in (plain, shadowed))
        assert (ours.status_code, ours.content) == (200, theirs.content), path
    pages = [Page(plain), Page(shadowed)]
    forms = [page.predict_one(red_rows[0], "form") for page in pages]
    uploads = [page.upload(red_rows[:25], "upload") for page in pages]
    for answers, result in ((forms, b'id="interval-low"'), (uploads, b'class="interval"')):
        assert [a.status_code for a in answers] == [200, 200]
        assert result in answers[0].content  # a page with a prediction, not an error page
        assert without_tokens(answers[0].content) == without_tokens(answers[1].content)


def test_a_broken_shadow_leaves_readiness_and_answers_untouched(
    small_model_dir: Path, tmp_path: Path, red_rows
):
    server = GunicornServer.start(
        small_model_dir,
        tmp_path,
        GUNICORN_SHUTDOWN_DELAY="0",
        WINE_QUALITY_SHADOW_MODEL_DIR=str(tmp_path / "no-such-model"),
    )
    try:
        assert {
            requests.get(server.url + "/readyz", timeout=10).status_code for _ in range(10)
        } == {200}
        body = {
            "instances": [dict(zip(FEATURE_KEYS, r, strict=True)) for r in red_rows[:3].tolist()]
        }
        answer = requests.post(server.url + "/v1/predict", json=body, timeout=30)
        assert answer.status_code == 200 and answer.json()["count"] == 3
        shadow = requests.get(server.url + "/v1/model", timeout=10).json()["shadow"]
        assert shadow["loaded"] is False and "no-such-model" in shadow["error"]
        scraped = requests.get(server.url + "/metrics", timeout=10).text
        assert metric(scraped, "wine_quality_shadow_failures_total", stage="load") >= 1
        assert metric(scraped, "wine_quality_shadow_predictions_total") == 0
    finally:
        server.stop()


def test_rows_queued_for_the_shadow_are_scored_before_a_worker_stops(
    small_model_dir: Path, model_dir: Path, tmp_path: Path, red_rows
):
    server = GunicornServer.start(
        small_model_dir,
        tmp_path,
        GUNICORN_WORKERS="2",
        GUNICORN_SHUTDOWN_DELAY="0",
        stdout_pipe=True,
        WINE_QUALITY_SHADOW_MODEL_DIR=str(model_dir),
        WINE_QUALITY_PREDICTION_LOG="stdout",
    )
    request_ids = set()
    try:
        for path, kwargs, _ in requests_to_send(red_rows)[:40]:  # single rows
            request_id = uuid.uuid4().hex
            response = requests.post(
                server.url + path, headers={"X-Request-ID": request_id}, timeout=30, **kwargs
            )
            assert response.status_code == 200
            request_ids.add(request_id)
    finally:
        server.stop()  # SIGTERM right after the last answer: its row is still queued
    logged = logged_rows(server, request_ids, len(request_ids))
    assert {line["request_id"] for line in logged} == request_ids
    assert all(line["shadow_quality"] is not None for line in logged)
