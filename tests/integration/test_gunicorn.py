"""The real gunicorn server on a free local port, with the repository's gunicorn config.

- metrics across 4 workers: the scraped request counter equals the number of requests sent;
- a 10,000-row CSV batch (and 10,001 rows refused with 413);
- graceful shutdown: SIGTERM during a slow batch upload: readiness turns 503 first, the batch
  still completes, and gunicorn exits cleanly.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from gunicorn_server import GunicornServer
from support import PAPER_ROW
from wine_quality.app.metrics import FLUSH_SECONDS
from wine_quality.core.features import FEATURE_NAMES

pytestmark = pytest.mark.slow

WINE = dict(zip(FEATURE_NAMES, PAPER_ROW, strict=True))


@pytest.fixture(scope="module")
def four_workers(
    small_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornServer]:
    server = GunicornServer.start(
        small_model_dir,
        tmp_path_factory.mktemp("gunicorn"),
        GUNICORN_WORKERS="4",
        GUNICORN_SHUTDOWN_DELAY="0",
        GUNICORN_GRACEFUL_TIMEOUT="10",
    )
    yield server
    server.stop()


def scrape(server: GunicornServer) -> dict[str, float]:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def total(samples: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(prefix))


def settled_scrape(server: GunicornServer) -> dict[str, float]:
    """The metrics once every worker has written the counts of the requests before (each writes
    within FLUSH_SECONDS of a request)."""
    time.sleep(FLUSH_SECONDS + 0.5)
    return scrape(server)


def test_metrics_add_up_across_four_workers(four_workers: GunicornServer):
    sent = 120
    before = settled_scrape(four_workers)
    for _ in range(sent):  # a new connection per request, so the kernel spreads them over workers
        response = requests.post(
            f"{four_workers.url}/v1/predict", json=WINE, timeout=10, headers={"Connection": "close"}
        )
        assert response.status_code == 200
    after = settled_scrape(four_workers)

    served_by = {line["pid"] for line in four_workers.access_log() if line["path"] == "/v1/predict"}
    assert len(served_by) >= 2, "the requests all went to one worker; nothing was aggregated"
    count = (
        'flask_http_request_duration_seconds_count{method="POST",path="/v1/predict",status="200"}'
    )
    assert after[count] - before.get(count, 0) == sent
    predictions = "wine_quality_predictions_total"
    assert after[predictions] - before.get(predictions, 0) == sent
    counter = "flask_http_request_total{"
    assert total(after, counter) - total(before, counter) == sent
    info = [k for k in after if k.startswith("wine_quality_model_info{")]
    assert len(info) == 1 and after[info[0]] == 1


def test_access_log_is_json_with_the_request_id(four_workers: GunicornServer):
    response = requests.get(
        f"{four_workers.url}/healthz", headers={"X-Request-ID": "trace-42"}, timeout=10
    )
    assert response.headers["X-Request-ID"] == "trace-42"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in four_workers.access_log() if line["request_id"] == "trace-42"]
        if lines:
            break
        time.sleep(0.1)
    assert lines and lines[0]["path"] == "/healthz" and lines[0]["status"] == 200


def test_the_date_header_is_the_current_second(four_workers: GunicornServer):
    """The workers format the Date header once a second (app/worker.py): it still moves on."""
    dates = []
    for _ in range(3):
        response = requests.get(f"{four_workers.url}/healthz", timeout=10)
        date = email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()
        assert time.time() - 2 < date <= time.time()
        dates.append(date)
        time.sleep(0.6)
    assert dates[-1] > dates[0]


def red_wine_csv(data_source: Path, rows: int) -> tuple[str, np.ndarray]:
    text = (data_source / "winequality-red.csv").read_text()
    header, *lines = text.strip().splitlines()
    body = [lines[i % len(lines)] for i in range(rows)]
    values = np.array([[float(v) for v in line.split(";")[:11]] for line in body])
    return "\n".join([header, *body]) + "\n", values


def test_ten_thousand_row_csv_batch(four_workers: GunicornServer, data_source: Path, loaded_model):
    text, values = red_wine_csv(data_source, 10_000)
    started = time.perf_counter()
    response = requests.post(
        f"{four_workers.url}/v1/predict",
        data=text,
        timeout=60,
        headers={"Content-Type": "text/csv", "Accept": "text/csv"},
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text[:500]
    lines = response.text.strip().splitlines()
    assert lines[0] == "quality,grade,quality_low,quality_high,model_version,warnings"
    assert len(lines) == 10_001
    qualities = np.array([float(line.split(",")[0]) for line in lines[1:]])
    np.testing.assert_allclose(qualities, loaded_model.predict(values), atol=1e-5)
    print(
        f"\n10,000-row CSV batch through gunicorn: {elapsed * 1000:.0f} ms "
        f"({10_000 / elapsed:,.0f} rows/s)"
    )

    too_many, _ = red_wine_csv(data_source, 10_001)
    refused = requests.post(
        f"{four_workers.url}/v1/predict",
        data=too_many,
        timeout=60,
        headers={"Content-Type": "text/csv"},
    )
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "too_many_rows"


def slow_upload(url: str, body: bytes, pieces: int, pause: float, result: dict) -> None:
    """POST `body` as CSV in `pieces` parts `pause` seconds apart; store status and text."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.putrequest("POST", "/v1/predict")
        connection.putheader("Content-Type", "text/csv")
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        size = -(-len(body) // pieces)
        for start in range(0, len(body), size):
            connection.send(body[start : start + size])
            result.setdefault("first_piece_sent", time.monotonic())
            time.sleep(pause)
        response = connection.getresponse()
        result["status"] = response.status
        result["body"] = response.read().decode()
        result["finished"] = time.monotonic()
    finally:
        connection.close()


def test_sigterm_turns_readiness_off_first_and_finishes_the_batch(
    small_model_dir: Path, tmp_path: Path, data_source: Path
):
    server = GunicornServer.start(
        small_model_dir,
        tmp_path,
        GUNICORN_WORKERS="2",
        GUNICORN_SHUTDOWN_DELAY="1",
        GUNICORN_GRACEFUL_TIMEOUT="20",
    )
    try:
        text, _ = red_wine_csv(data_source, 10_000)
        result: dict = {}
        upload = threading.Thread(
            target=slow_upload, args=(server.url, text.encode(), 10, 0.4, result)
        )
        upload.start()
        deadline = time.monotonic() + 10
        while "first_piece_sent" not in result and time.monotonic() < deadline:
            time.sleep(0.02)
        server.process.send_signal(signal.SIGTERM)

        not_ready_at = None
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not_ready_at is None:
            try:
                status = requests.get(f"{server.url}/readyz", timeout=2).status_code
            except requests.RequestException:
                break
            if status == 503:
                not_ready_at = time.monotonic()
            time.sleep(0.05)

        upload.join(timeout=60)
        exit_code = server.process.wait(timeout=40)
    finally:
        server.stop()
    assert not_ready_at is not None, f"/readyz never answered 503 after SIGTERM:\n{server.logs()}"
    assert result.get("status") == 200, f"{result.get('body', '')[:300]}\n{server.logs()}"
    assert not_ready_at < result["finished"]
    assert json.loads(result["body"])["count"] == 10_000
    assert exit_code == 0
    assert "SIGTERM, readiness is 503" in server.logs()
