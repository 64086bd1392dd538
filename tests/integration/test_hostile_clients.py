"""Hostile clients against the real gunicorn server, one layer below HTTP libraries: raw sockets.

- broken chunked framing on every POST route: a 400 (never a 5xx), counted as 4xx in the metrics;
- chunked bodies over WINE_QUALITY_MAX_BODY_BYTES (JSON, CSV, v2, the upload page): 413, never a
  parse of the first bytes;
- gunicorn's own error answers (bad request line, 414, 431) carry the security headers;
- slow clients: 8 connections trickling headers or a body at 1 byte/s do not delay a normal
  request, and a request slower than GUNICORN_READ_TIMEOUT gets 408;
- worker memory, read from /proc/<worker>/status, for the worst bodies up to the limit, sent as
  they are or gzip-compressed.
Every loop is bounded in connections and seconds.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
import requests

from gunicorn_server import GunicornServer, module_server
from wine_quality.app.hooks import SECURITY_HEADERS
from wine_quality.app.metrics import FLUSH_SECONDS
from wine_quality.core.features import FEATURE_NAMES

pytestmark = pytest.mark.slow

MAX_BODY = 1_000_000
READ_TIMEOUT = 4
POST_ROUTES = {
    "/v1/predict": "application/json",
    "/predict": "text/csv",
    "/v2/models/wine-quality/infer": "application/json",
    "/": "application/x-www-form-urlencoded",
    "/batch": "multipart/form-data; boundary=x",
}
BROKEN_CHUNKS = {
    "invalid chunk size": b"zz\r\nabc\r\n0\r\n\r\n",
    "missing chunk terminator": b"3\r\nabcXY0\r\n\r\n",
    "bad trailer": b"3\r\nabc\r\n0\r\nno colon here\r\n\r\n",
    "100 KB chunk-size line": b"1" * 100_000 + b"\r\nabc\r\n0\r\n\r\n",
}


server = module_server(
    "hostile",
    GUNICORN_GRACEFUL_TIMEOUT="5",
    GUNICORN_READ_TIMEOUT=str(READ_TIMEOUT),
    WINE_QUALITY_MAX_BODY_BYTES=str(MAX_BODY),
)


def exchange(
    server: GunicornServer, request: bytes, timeout: float = 20
) -> tuple[int, dict, bytes]:
    """Send raw bytes, read the answer until the server closes or the length is complete."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close before all is sent
            sock.sendall(request)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                piece = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not piece:
                break
            data += piece
            if _complete(data):
                break
    return parse_response(data)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    return bool(sep) and match is not None and len(body) >= int(match.group(1))


def parse_response(data: bytes) -> tuple[int, dict, bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), data[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def chunked_request(path: str, content_type: str, body: bytes, cookie: str = "") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Transfer-Encoding: chunked\r\n{cookie}Connection: close\r\n\r\n"
    )
    return head.encode() + body


def chunked(data: bytes, size: int = 65536) -> bytes:
    pieces = [
        b"%x\r\n%s\r\n" % (len(data[i : i + size]), data[i : i + size])
        for i in range(0, len(data), size)
    ]
    return b"".join(pieces) + b"0\r\n\r\n"


def csrf_cookie(server: GunicornServer) -> str:
    """A browser's CSRF cookie: the page's POST routes refuse a body without one before reading."""
    page = requests.get(server.url + "/", timeout=10)
    return f"Cookie: wine_quality_csrf={page.cookies['wine_quality_csrf']}\r\n"


def five_xx(server: GunicornServer, settle: bool = False) -> float:
    """The 5xx answers counted so far; with `settle`, once every worker has written the counts of
    the requests before (each writes within FLUSH_SECONDS of a request)."""
    if settle:
        time.sleep(FLUSH_SECONDS + 0.5)
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("flask_http_request_total") and 'status="5' in line
    )


@pytest.mark.parametrize("expect", [False, True], ids=["body", "expect-100-continue"])
@pytest.mark.parametrize("route", ["/v1/predict", "/predict", "/v2/models/wine-quality/infer"])
def test_a_client_that_resets_while_its_body_is_read_causes_no_5xx(
    server: GunicornServer, route: str, expect: bool
) -> None:
    """The reset reaches the thread reading the body (30,000 bytes announced: more than the
    poller gathers), or its `100 Continue`; before, an unhandled error and a 500."""
    before = five_xx(server)
    head = (
        f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: {POST_ROUTES[route]}\r\n"
        f"Content-Length: 30000\r\n{'Expect: 100-continue' if expect else 'X-A: b'}\r\n\r\n"
    )
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(head.encode() + (b"" if expect else b"1" * 20_000))
            time.sleep(0.1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(0.5)
    assert five_xx(server, settle=True) == before
    assert "unhandled error" not in server.logs()


@pytest.mark.parametrize("route", POST_ROUTES)
def test_broken_chunked_framing_is_a_400_on_every_post_route(
    server: GunicornServer, route: str
) -> None:
    cookie = csrf_cookie(server) if route in ("/", "/batch") else ""
    before = five_xx(server)
    for problem, body in BROKEN_CHUNKS.items():
        status, headers, answer = exchange(
            server, chunked_request(route, POST_ROUTES[route], body, cookie)
        )
        assert status == 400, (problem, answer[:300])
        assert headers["x-content-type-options"] == "nosniff", problem
        assert b"Traceback" not in answer
    assert five_xx(server, settle=True) == before
    assert "Traceback" not in server.logs()


def test_chunked_bodies_over_the_limit_are_413(server: GunicornServer) -> None:
    row = ",".join(
        ["7.4", "0.7", "0", "1.9", "0.076", "11", "34", "0.9978", "3.51", "0.56", "10.25"]
    )
    csv_body = (
        ",".join(FEATURE_NAMES) + "\n" + (row + "\n") * (MAX_BODY // len(row) + 10)
    ).encode()
    record = json.dumps(
        dict(
            zip(
                FEATURE_NAMES,
                [7.4, 0.7, 0, 1.9, 0.076, 11, 34, 0.9978, 3.51, 0.56, 9.4],
                strict=True,
            )
        )
    )
    json_body = (
        '{"instances": [' + ",".join([record] * (MAX_BODY // len(record) + 10)) + "]}"
    ).encode()
    v2_body = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [1, 11],
                    "datatype": "FP64",
                    "data": [1.0] * (MAX_BODY // 4),
                }
            ]
        }
    ).encode()
    cases = {
        "/v1/predict": ("text/csv", csv_body),
        "/predict": ("application/json", json_body),
        "/v2/models/wine-quality/infer": ("application/json", v2_body),
    }
    for route, (content_type, body) in cases.items():
        assert len(body) > MAX_BODY
        status, headers, answer = exchange(
            server, chunked_request(route, content_type, chunked(body))
        )
        assert status == 413, (route, answer[:300])
        assert headers.get("connection") == "close"
    upload = (
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="w.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\n" + csv_body + b"\r\n--x--\r\n"
    )
    request = chunked_request("/batch", POST_ROUTES["/batch"], chunked(upload), csrf_cookie(server))
    status, _, answer = exchange(server, request)
    assert status == 413, answer[:300]


def test_a_chunked_body_within_the_limit_is_read_whole(server: GunicornServer) -> None:
    row = "7.4,0.7,0,1.9,0.076,11,34,0.9978,3.51,0.56,10.25\n"
    rows = 9_000  # under WINE_QUALITY_MAX_BATCH_ROWS; about half the body limit
    body = (",".join(FEATURE_NAMES) + "\n" + row * rows).encode()
    request = chunked_request("/v1/predict", "text/csv", chunked(body, 4096))
    request = request.replace(
        b"Connection: close\r\n", b"Accept: application/json\r\nConnection: close\r\n"
    )
    status, _, answer = exchange(server, request)
    assert status == 200, answer[:300]
    assert json.loads(answer)["count"] == rows


def test_a_body_cut_short_by_the_client_is_a_400(server: GunicornServer) -> None:
    """A small body (read in one call) whose client stops sending and half-closes the socket."""
    body = json.dumps(dict(zip(FEATURE_NAMES, [7.4] * len(FEATURE_NAMES), strict=True))).encode()
    before = five_xx(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while piece := sock.recv(65536):
            answer += piece
    status, _, text = parse_response(answer)
    assert status == 400, text[:300]
    error = json.loads(text)["error"]
    assert error["code"] == "malformed_body"  # not a JSON error about half a document
    assert "ended before the end of the body" in error["message"]
    assert five_xx(server, settle=True) == before
    assert "Traceback" not in server.logs()


def test_gunicorn_error_answers_carry_the_security_headers(server: GunicornServer) -> None:
    cases = {
        400: b"GARBAGE\r\n\r\n",
        414: b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        431: b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n",
    }
    for expected, request in cases.items():
        status, headers, body = exchange(server, request)
        assert status == expected, body[:200]
        for name, value in SECURITY_HEADERS.items():
            assert headers.get(name.lower()) == value, (expected, name)
        assert json.loads(body)["error"]["status"] == expected


@pytest.mark.parametrize("length", [4095, 9000, 70000])
def test_a_request_line_over_the_limit_is_told_by_the_limit(
    server: GunicornServer, length: int
) -> None:
    target = b"/" + b"a" * (length - len(b"GET  HTTP/1.1") - 1)
    line = b"GET " + target + b" HTTP/1.1"
    assert len(line) == length
    status, _, body = exchange(server, line + b"\r\nHost: x\r\n\r\n")
    assert status == 414
    assert json.loads(body)["error"]["message"] == (
        "Request Line is too large (longer than 4094 bytes)"
    )


class Trickler(threading.Thread):
    """One client: `prefix` at once, then `data` at one byte per second until `stop`."""

    def __init__(self, port: int, prefix: bytes, data: bytes, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.prefix, self.data, self.stop = port, prefix, data, stop

    def run(self) -> None:
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock,
            contextlib.suppress(OSError),
        ):
            sock.sendall(self.prefix)
            for byte in self.data:
                if self.stop.wait(1.0):
                    return
                sock.sendall(bytes([byte]))


def timed_readyz(server: GunicornServer) -> float:
    started = time.monotonic()
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200
    return time.monotonic() - started


SLOW_HEAD = (
    b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n"
)
SLOW = {
    "headers": (b"", b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100),
    "body": (SLOW_HEAD, b"{" * 100),
}


@pytest.mark.parametrize("phase", SLOW)
def test_eight_slow_clients_do_not_delay_a_normal_request(
    server: GunicornServer, phase: str
) -> None:
    prefix, data = SLOW[phase]
    stop = threading.Event()
    clients = [Trickler(server.port, prefix, data, stop) for _ in range(8)]
    try:
        for client in clients:
            client.start()
        time.sleep(2.5)  # every slow client is being read by now
        waits = [timed_readyz(server) for _ in range(5)]
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=10)
    print(f"8 slow clients ({phase}): a normal request waited {max(waits):.3f} s at most")
    assert max(waits) < 1.0, waits


def test_a_request_slower_than_the_read_timeout_gets_408(server: GunicornServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(SLOW_HEAD)
        started = time.monotonic()
        answer = b""
        sock.settimeout(1.0)
        for _ in range(READ_TIMEOUT + 10):  # one byte a second until the server answers
            with contextlib.suppress(OSError):
                sock.sendall(b"{")
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            break
        elapsed = time.monotonic() - started
    status, headers, body = parse_response(answer)
    assert status == 408, body[:200]
    assert headers["x-content-type-options"] == "nosniff"
    assert READ_TIMEOUT - 1 <= elapsed <= READ_TIMEOUT + 5


def post(path: str, content_type: str, body: bytes, extra: str = "") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def worker_pids(server: GunicornServer) -> list[int]:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return [int(pid) for pid in children.read_text().split()]


def status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def peak_above_idle_kib(server: GunicornServer, request: bytes) -> int:
    """The largest rise of a worker's peak RSS (VmHWM, reset first) over its RSS at rest."""
    pids = worker_pids(server)
    idle = {}
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak RSS := current RSS
        idle[pid] = status_kib(pid, "VmRSS")
    exchange(server, request, timeout=60)
    return max(status_kib(pid, "VmHWM") - idle[pid] for pid in pids)


def test_worker_memory_stays_near_the_body_size(server: GunicornServer) -> None:
    short_lines = b"a\n" * (MAX_BODY // 2 - 100)
    blank_lines = b"\n" * (MAX_BODY - 200)
    header = ",".join(FEATURE_NAMES).encode() + b"\n"
    commas = header + b"," * (MAX_BODY - 300)
    empty_objects = b"[" + b"{}," * (MAX_BODY // 3 - 10) + b"{}]"
    worst = {
        "CSV of short lines": ("text/csv", header + short_lines),
        "CSV of blank lines": ("text/csv", header + blank_lines),
        "CSV of one line of commas": ("text/csv", commas),
        "JSON of empty objects": ("application/json", empty_objects),
        "gzip of a CSV of short lines": ("text/csv", header + short_lines),
    }
    peaks = {}
    for name, (content_type, body) in worst.items():
        assert len(body) <= MAX_BODY
        sent, extra = body, ""
        if name.startswith("gzip"):  # a few KiB sent, decoded to the limit
            sent, extra = gzip.compress(body), "Content-Encoding: gzip\r\n"
        for _ in range(8):  # both workers have taken this path once: its imports are not counted
            exchange(server, post("/v1/predict", content_type, body[:20_000]))
        peaks[name] = peak_above_idle_kib(server, post("/v1/predict", content_type, sent, extra))
        print(f"{name}: worker peak RSS {peaks[name]} KiB above idle, {len(body) // 1024} KiB body")
    # the body itself, gunicorn's read buffers and the parse: measured about 3x at a 1 MB limit
    assert max(peaks.values()) * 1024 <= 4 * MAX_BODY, peaks
