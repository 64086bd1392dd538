"""How request bodies are framed and read by the real gunicorn server, at the socket level.

- slow uploaders hold no large-body slot: with more clients than LARGE_BODY_SLOTS sending large
  bodies at 1 byte/s, a legitimate 150 KB CSV batch is answered at once (a slot is taken only
  once a body has arrived, for the CPU work after it; before, every such request waited
  SLOT_WAIT_SECONDS and got 503 busy);
- a POST with a body but neither Content-Length nor Transfer-Encoding: chunked gets 411, and its
  body bytes are never read as a next request on the connection.
Every loop is bounded in connections and seconds.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time

import pytest
import requests

from gunicorn_server import GunicornServer, module_server
from wine_quality.app.requestbody import LARGE_BODY_BYTES, LARGE_BODY_SLOTS
from wine_quality.core.features import FEATURE_NAMES

pytestmark = pytest.mark.slow

READ_TIMEOUT = 8
SLOW_UPLOADERS = LARGE_BODY_SLOTS + 2  # more than one worker's slots


# One worker: every slow uploader and the legitimate request meet on the same slots.
server = module_server(
    "body-slots",
    GUNICORN_WORKERS="1",
    GUNICORN_GRACEFUL_TIMEOUT="5",
    GUNICORN_READ_TIMEOUT=str(READ_TIMEOUT),
)


class SlowUploader(threading.Thread):
    """One client announcing a large body (a Content-Length of 200,000, or chunked), then
    sending it at one byte per second until `stop`."""

    def __init__(self, port: int, chunked: bool, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.chunked, self.stop = port, chunked, stop
        framing = "Transfer-Encoding: chunked" if chunked else "Content-Length: 200000"
        self.head = (
            f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n{framing}\r\n\r\n"
        ).encode()

    def run(self) -> None:
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock,
            contextlib.suppress(OSError),
        ):
            sock.sendall(self.head + (b"30d40\r\n" if self.chunked else b""))  # 200,000 bytes
            while not self.stop.wait(1.0):
                sock.sendall(b"7")


def csv_batch(size: int) -> bytes:
    row = b"7.4,0.7,0,1.9,0.076,11,34,0.9978,3.51,0.56,9.4\n"
    header = ",".join(FEATURE_NAMES).encode() + b"\n"
    return header + row * ((size - len(header)) // len(row))


def test_slow_uploaders_hold_no_slot_a_large_batch_is_answered_at_once(
    server: GunicornServer,
) -> None:
    body = csv_batch(150_000)
    assert len(body) > LARGE_BODY_BYTES
    stop = threading.Event()
    uploaders = [SlowUploader(server.port, i % 2 == 1, stop) for i in range(SLOW_UPLOADERS)]
    try:
        for uploader in uploaders:
            uploader.start()
        time.sleep(2.5)  # every uploader is being read by now (well within READ_TIMEOUT)
        started = time.monotonic()
        response = requests.post(
            f"{server.url}/v1/predict",
            data=body,
            headers={"Content-Type": "text/csv", "Accept": "application/json"},
            timeout=30,
        )
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        for uploader in uploaders:
            uploader.join(timeout=10)
    print(f"{SLOW_UPLOADERS} slow uploaders: a {len(body)} byte batch answered in {elapsed:.3f} s")
    assert response.status_code == 200, response.text[:300]
    assert response.json()["count"] == body.count(b"\n") - 1
    assert elapsed < 1.5, elapsed


SMUGGLED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"  # the body: a request, if read as one


def answers(server: GunicornServer, request: bytes, seconds: float = 5.0) -> bytes:
    """Everything the server sends on one connection until it closes it (or `seconds` pass)."""
    data = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=seconds) as sock:
        sock.sendall(request)
        deadline = time.monotonic() + seconds
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while time.monotonic() < deadline:
                piece = sock.recv(65536)
                if not piece:
                    break
                data += piece
    return data


@pytest.mark.parametrize(
    "version",
    ["HTTP/1.0", "HTTP/1.0\r\nConnection: keep-alive", "HTTP/1.1"],
    ids=["http-1.0", "http-1.0-keep-alive", "http-1.1"],
)
def test_a_body_without_length_gets_411_and_is_never_read_as_a_request(
    server: GunicornServer, version: str
) -> None:
    request = (
        f"POST /v1/predict {version}\r\nHost: x\r\nContent-Type: application/json\r\n\r\n"
    ).encode() + SMUGGLED
    data = answers(server, request)
    assert data.count(b"HTTP/1.") == 1, data[:1000]  # one answer: the body was not a request
    head, _, body = data.partition(b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 411 ", head), data[:300]
    assert b"\r\nconnection: close" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "length_required"
    assert "send Content-Length or Transfer-Encoding: chunked" in error["message"]
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200
