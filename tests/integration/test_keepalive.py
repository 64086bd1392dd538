"""Kept-alive connections against the real gunicorn server, over raw sockets: every kind of answer
(with and without a body, errors, a body the app leaves unread) arrives whole and in order on one
connection, whether the next request follows at once, after the worker's wait, or pipelined in
the same packet; with more connections than threads every connection is served; clients that
leave during the wait or halfway through a request leave every thread free."""

from __future__ import annotations

import json
import re
import socket
import struct
import time
from pathlib import Path

import pytest

import wine_quality.app.web
from gunicorn_server import GunicornServer, module_server
from wine_quality.app.worker import KEEPALIVE_WAIT_SECONDS, SERVED_IN_A_ROW
from wine_quality.core.features import FEATURE_KEYS, FEATURE_NAMES

pytestmark = pytest.mark.slow

WINE = dict(
    zip(FEATURE_KEYS, [7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4], strict=True)
)
CSV = (
    ",".join(FEATURE_NAMES) + "\n" + "\n".join(",".join(map(str, WINE.values())) for _ in range(3))
).encode()


def request(method: str, path: str, body: bytes = b"", content_type: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


# (request, expected status, what the body must show)
EXCHANGES = [
    (request("POST", "/v1/predict", json.dumps(WINE).encode(), "application/json"), 200, "grade"),
    (request("GET", "/healthz"), 200, "ok"),
    (request("HEAD", "/healthz"), 200, ""),
    (request("POST", "/predict", CSV, "text/csv"), 200, '"count":3'),
    (request("GET", "/no-such-page"), 404, "not_found"),
    (request("POST", "/healthz", b"x" * 5000, "text/plain"), 405, "method_not_allowed"),
    (request("POST", "/v1/predict", b"{}", "application/json"), 422, "fixed acidity"),
    (request("GET", "/v2/models/wine-quality/ready"), 200, ""),
]


server = module_server(
    "keepalive",
    GUNICORN_WORKERS="1",
    GUNICORN_THREADS="2",
)


class Connection:
    def __init__(self, server: GunicornServer) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        self.pending = b""

    def answer(self, head_only: bool = False) -> tuple[int, dict, bytes]:
        """The next whole response: its head, then as many body bytes as Content-Length says."""
        while b"\r\n\r\n" not in self.pending:
            self._read()
        head, _, self.pending = self.pending.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:])
        }
        length = 0 if head_only else int(headers["content-length"])
        while len(self.pending) < length:
            self._read()
        body, self.pending = self.pending[:length], self.pending[length:]
        return int(lines[0].split()[1]), headers, body

    def _read(self) -> None:
        piece = self.sock.recv(65536)
        assert piece, f"the server closed the connection; unread: {self.pending[:200]!r}"
        self.pending += piece

    def close(self) -> None:
        self.sock.close()


def check(answer: tuple[int, dict, bytes], status: int, shows: str) -> None:
    got, headers, body = answer
    assert got == status, body[:300]
    assert headers.get("connection", "keep-alive") == "keep-alive"
    assert headers.get("x-content-type-options") == "nosniff"
    assert shows in body.decode(), body[:300]


def exchange(conn: Connection, index: int) -> None:
    raw, status, shows = EXCHANGES[index % len(EXCHANGES)]
    conn.sock.sendall(raw)
    check(conn.answer(head_only=raw.startswith(b"HEAD")), status, shows)


def test_every_kind_of_answer_arrives_whole_on_one_connection(server: GunicornServer) -> None:
    conn = Connection(server)
    try:
        for index in range(3 * len(EXCHANGES)):
            exchange(conn, index)
        assert conn.pending == b""  # nothing beyond the announced lengths
    finally:
        conn.close()


def test_a_request_after_the_workers_wait_is_served_from_the_poller(
    server: GunicornServer,
) -> None:
    conn = Connection(server)
    try:
        for index in range(len(EXCHANGES)):
            exchange(conn, index)
            time.sleep(KEEPALIVE_WAIT_SECONDS * 3)
    finally:
        conn.close()


def test_pipelined_requests_are_answered_in_order(server: GunicornServer) -> None:
    conn = Connection(server)
    try:
        conn.sock.sendall(b"".join(raw for raw, _, _ in EXCHANGES if not raw.startswith(b"HEAD")))
        for raw, status, shows in EXCHANGES:
            if not raw.startswith(b"HEAD"):
                check(conn.answer(), status, shows)
    finally:
        conn.close()


def test_more_pipelined_requests_than_are_served_in_a_row_are_answered_in_order(
    server: GunicornServer,
) -> None:
    """The worker's main thread serves SERVED_IN_A_ROW of them, then the connection waits its
    turn behind the others; some arrive beyond the poller's first read (16 KiB)."""
    exchanges = [x for x in EXCHANGES if not x[0].startswith(b"HEAD")] * (3 * SERVED_IN_A_ROW)
    conn = Connection(server)
    try:
        conn.sock.sendall(b"".join(raw for raw, _, _ in exchanges))
        for _, status, shows in exchanges:
            check(conn.answer(), status, shows)
    finally:
        conn.close()


STATIC = Path(wine_quality.app.web.__file__).parent / "static"


@pytest.mark.parametrize(
    ("path", "name"), [("/static/web/style.css", "style.css"), ("/favicon.ico", "favicon.svg")]
)
def test_files_are_sent_whole_on_a_kept_alive_connection(
    server: GunicornServer, path: str, name: str
) -> None:
    """Files (sent by gunicorn with the socket's sendfile) arrive whole, in turn with other
    answers on one connection."""
    conn = Connection(server)
    try:
        for _ in range(2):
            conn.sock.sendall(request("GET", path))
            status, _, body = conn.answer()
            assert status == 200
            assert body == (STATIC / name).read_bytes()
    finally:
        conn.close()


def test_more_kept_alive_connections_than_threads_are_all_served(
    server: GunicornServer,
) -> None:
    connections = [Connection(server) for _ in range(6)]  # the worker has 2 threads
    try:
        for round_ in range(10):
            for number, conn in enumerate(connections):
                exchange(conn, round_ + number)
    finally:
        for conn in connections:
            conn.close()
    access_lines = [
        json.loads(line)
        for line in server.stdout.read_text().splitlines()
        if re.match(r"^\{.*\"type\":\"access\"", line)
    ]
    assert sum(1 for line in access_lines if line["status"] >= 500) == 0


def test_clients_that_leave_during_the_wait_or_mid_request_cost_nothing(
    server: GunicornServer,
) -> None:
    """Gone right after an answer (while the thread waits), gone halfway through the next request's
    headers or body, or reset: each thread is free again and nothing is logged as an error."""
    raw, status, shows = EXCHANGES[0]
    half_head, half_body = raw[:20], raw[: len(raw) - 30]
    for leave_with in (b"", half_head, half_body, b"reset"):
        for _ in range(4):  # twice the worker's threads
            conn = Connection(server)
            conn.sock.sendall(raw)
            check(conn.answer(), status, shows)
            if leave_with == b"reset":  # RST instead of FIN
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif leave_with:
                conn.sock.sendall(leave_with)
            conn.close()
    conn = Connection(server)
    try:
        for index in range(len(EXCHANGES)):
            exchange(conn, index)
    finally:
        conn.close()
    assert "Traceback" not in server.stderr.read_text()
    assert "Error handling request" not in server.stderr.read_text()
