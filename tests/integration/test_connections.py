"""Connections that hold on to the server, against the real gunicorn server, with raw sockets.

- connections that never send a byte wait in the worker's poller, not in a thread, and are closed
  after GUNICORN_READ_TIMEOUT, or 2 s after a stop began;
- so do requests while their head, or a small body announced by Content-Length, trickles in:
  more such clients than threads delay no one, and each gets 408 after GUNICORN_READ_TIMEOUT
  from its first byte, the same deadline a thread then keeps for a larger body;
- a client that never reads its answer loses it after GUNICORN_WRITE_TIMEOUT, and its thread is
  free again; one whose small request the worker's main thread answered leaves the rest of its
  answer to a thread, so clients not reading delay no one however many, and one that reads late,
  within the timeout, gets its whole answer on a connection that stays usable;
- a client that keeps its end open after a "Connection: close" answer does not stall the worker;
- answers that end the connection (413, broken framing, an Expect: 100-continue request answered
  without its body, "close" among the client's Connection options) say so and close it;
- `Expect: 100-continue` is answered with 100 only when the body is read;
- HTTP versions above 1.1 are answered as HTTP/1.1; an unknown transfer coding is a 400.
One worker with two threads, so that a few connections are enough to take every thread; every loop
is bounded in connections and seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
import requests

from gunicorn_server import GunicornServer, module_server
from wine_quality.app.worker import GATHER_BYTES
from wine_quality.core.features import FEATURE_NAMES

pytestmark = pytest.mark.slow

THREADS = 2
READ_TIMEOUT = 4
WRITE_TIMEOUT = 2
MAX_BODY = 2_000_000
BIG_BATCH_ROWS = 30_000
ROW = {
    "fixed_acidity": 7.4,
    "volatile_acidity": 0.7,
    "citric_acid": 0.0,
    "residual_sugar": 1.9,
    "chlorides": 0.076,
    "free_sulfur_dioxide": 11.0,
    "total_sulfur_dioxide": 34.0,
    "density": 0.9978,
    "ph": 3.51,
    "sulphates": 0.56,
    "alcohol": 9.4,
}
SINGLE = json.dumps(ROW).encode()


server = module_server(
    "connections",
    GUNICORN_WORKERS="1",
    GUNICORN_THREADS=str(THREADS),
    GUNICORN_GRACEFUL_TIMEOUT="5",
    GUNICORN_READ_TIMEOUT=str(READ_TIMEOUT),
    GUNICORN_WRITE_TIMEOUT=str(WRITE_TIMEOUT),
    WINE_QUALITY_MAX_BODY_BYTES=str(MAX_BODY),
    WINE_QUALITY_MAX_BATCH_ROWS=str(BIG_BATCH_ROWS),
)


def connect(server: GunicornServer, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """Everything the server sends within `seconds`, and whether it closed the connection."""
    data = b""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            return data, False
        except ConnectionResetError:
            return data, True
        if not piece:
            return data, True
        data += piece
    return data, False


def head_of(data: bytes) -> tuple[str, dict[str, str]]:
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return head[0], headers


def timed_readyz(server: GunicornServer, timeout: float = 30) -> float:
    started = time.monotonic()
    assert requests.get(f"{server.url}/readyz", timeout=timeout).status_code == 200
    return time.monotonic() - started


def predict_request(body: bytes, extra: str = "", content_type: str = "application/json") -> bytes:
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def test_connections_that_send_nothing_hold_no_thread(server: GunicornServer) -> None:
    silent = [connect(server) for _ in range(100)]
    try:
        time.sleep(0.5)
        waits = [timed_readyz(server) for _ in range(3)]
        print(f"100 silent connections: a normal request waited {max(waits):.3f} s at most")
        assert max(waits) < 1.0, waits
        # each is closed once it has sent nothing for the read timeout
        closed = [read_until_closed(sock, READ_TIMEOUT + 3)[1] for sock in silent[:5]]
        assert all(closed)
    finally:
        for sock in silent:
            sock.close()


def big_csv_request(rows: int) -> bytes:
    values = ",".join(str(ROW[key]) for key in ROW)
    body = (",".join(FEATURE_NAMES) + "\n" + (values + "\n") * rows).encode()
    head = (
        "POST /v1/predict?explain=1 HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        f"Accept: text/csv\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def test_a_client_that_never_reads_its_answer_loses_it_after_the_write_timeout(
    server: GunicornServer,
) -> None:
    # an answer of about 9 MB: more than the kernel's socket buffers take without a reader
    request = big_csv_request(BIG_BATCH_ROWS)
    cut_off = f"not taken within {WRITE_TIMEOUT} s: connection closed"
    cut_before = server.logs().count(cut_off)
    readers = []
    for _ in range(THREADS + 1):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(request)
        readers.append(sock)
    try:
        time.sleep(1)
        # Every thread is writing to a client that does not read; a request that arrives whole
        # is served by the worker's main thread meanwhile.
        wait = timed_readyz(server)
        print(f"{THREADS + 1} clients not reading their answers: a request waited {wait:.3f} s")
        assert wait < 1.0
        deadline = time.monotonic() + 60
        while server.logs().count(cut_off) < cut_before + THREADS:  # every thread was held
            assert time.monotonic() < deadline, "the readers holding the threads were not cut off"
            time.sleep(0.2)
        # the threads are free again: a request that needs one (a body over the poller's
        # 16 KiB) is answered
        started = time.monotonic()
        answer = requests.post(
            f"{server.url}/v1/predict",
            data=big_csv_request(1_000).partition(b"\r\n\r\n")[2],
            headers={"Content-Type": "text/csv"},
            timeout=30,
        )
        assert answer.status_code == 200
        assert time.monotonic() - started < READ_TIMEOUT
    finally:
        for sock in readers:
            sock.close()
    assert "Traceback" not in server.logs()


def small_request_large_answer() -> tuple[bytes, int]:
    """A request the worker's main thread serves (it arrives whole within GATHER_BYTES) whose
    answer is many times larger (about 250 KB): every row of a CSV explained, as JSON; and its
    row count."""
    header = ",".join(FEATURE_NAMES) + "\n"
    line = "7,0.7,0,2,0.08,11,34,1,3.5,0.6,9\n"
    rows = (GATHER_BYTES - 200 - len(header)) // len(line)
    body = (header + line * rows).encode()
    head = (
        "POST /v1/predict?explain=1 HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    request = head.encode() + body
    assert len(request) <= GATHER_BYTES
    return request, rows


def not_reading(server: GunicornServer, request: bytes) -> socket.socket:
    """A client that sends `request` and reads nothing yet. Its small segments keep the
    server's send buffer near 100 KB (on loopback, with 64 KB segments, it grows to 4 MB)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(request)
    return sock


def whole_answer(data: bytes) -> bool:
    body = data.partition(b"\r\n\r\n")[2]
    return bool(body) and len(body) >= int(head_of(data)[1]["content-length"])


def answer_on(sock: socket.socket, pending: bytearray) -> tuple[int, bytes]:
    """The status and body of the next answer on `sock` (Content-Length framed); `pending`
    holds what was read beyond the last one."""
    while b"\r\n\r\n" not in pending:
        pending += sock.recv(65536)
    status, headers = head_of(bytes(pending))
    start = pending.index(b"\r\n\r\n") + 4
    end = start + int(headers["content-length"])
    while len(pending) < end:
        pending += sock.recv(65536)
    body = bytes(pending[start:end])
    del pending[:end]
    return int(status.split()[1]), body


def test_answers_from_the_main_thread_that_clients_do_not_read_delay_no_one(
    server: GunicornServer,
) -> None:
    request, _ = small_request_large_answer()
    readers = [not_reading(server, request) for _ in range(3 * THREADS)]
    try:
        time.sleep(0.5)
        # more clients than threads hold answers they do not read; the main thread serves on
        waits = [timed_readyz(server) for _ in range(3)]
        print(f"{len(readers)} clients not reading: a normal request waited {max(waits):.3f} s")
        assert max(waits) < 1.0, waits
        time.sleep(WRITE_TIMEOUT + 1)  # every answer's write timeout has passed
        for sock in readers:
            data, closed = read_until_closed(sock, 5)
            assert closed and not whole_answer(data), len(data)
    finally:
        for sock in readers:
            sock.close()
    assert f"not taken within {WRITE_TIMEOUT} s: connection closed" in server.logs()
    assert "Traceback" not in server.logs()


def test_an_answer_taken_late_but_in_time_arrives_whole_and_in_order_then_the_next(
    server: GunicornServer,
) -> None:
    request, rows = small_request_large_answer()
    with not_reading(server, request + predict_request(SINGLE)) as sock:  # and one pipelined
        time.sleep(WRITE_TIMEOUT / 2)
        pending = bytearray()
        status, body = answer_on(sock, pending)
        assert status == 200
        answer = json.loads(body)
        assert answer["count"] == rows == len(answer["predictions"])
        assert len({json.dumps(p, sort_keys=True) for p in answer["predictions"]}) == 1
        status, body = answer_on(sock, pending)
        assert status == 200 and "grade" in json.loads(body)
        sock.sendall(predict_request(SINGLE))  # the connection goes on
        status, body = answer_on(sock, pending)
        assert status == 200 and "grade" in json.loads(body)
        assert not pending


def test_clients_that_keep_their_end_open_after_close_do_not_stall_the_worker(
    server: GunicornServer,
) -> None:
    lingering = []
    try:
        for _ in range(10):
            sock = connect(server)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data, closed = read_until_closed(sock, 5)
            assert data.startswith(b"HTTP/1.1 200") and closed  # the server's FIN
            lingering.append(sock)  # but this end stays open
        waits = [timed_readyz(server) for _ in range(3)]
        print(f"10 clients keeping their end open: a normal request waited {max(waits):.3f} s")
        assert max(waits) < 1.0, waits
    finally:
        for sock in lingering:
            sock.close()


def test_a_413_closes_the_connection_and_says_so(server: GunicornServer) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode()
        )
        data, closed = read_until_closed(sock, 5)
    status, headers = head_of(data)
    assert status.startswith("HTTP/1.1 413")
    assert headers["connection"] == "close"
    assert closed  # without the client closing, and without waiting for the announced body


def test_broken_framing_closes_the_connection_before_a_next_request(
    server: GunicornServer,
) -> None:
    broken = (
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
    )
    with connect(server) as sock:
        sock.sendall(broken + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data, closed = read_until_closed(sock, 5)
    status, headers = head_of(data)
    assert status.startswith("HTTP/1.1 400")
    assert headers["connection"] == "close"
    assert closed
    assert data.count(b"HTTP/1.1 ") == 1  # the bytes after the broken body are not served


def test_expect_100_continue_is_answered_only_when_the_body_is_read(
    server: GunicornServer,
) -> None:
    expect = "Expect: 100-continue\r\n"
    with connect(server) as sock:
        sock.sendall(predict_request(SINGLE, expect)[: -len(SINGLE)])
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(SINGLE)
        data = sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 200"), data[:200]

    refused = {
        "413": b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"{expect}Content-Length: {MAX_BODY + 1}\r\n\r\n".encode(),
        "415": predict_request(SINGLE, expect, content_type="text/plain")[: -len(SINGLE)],
    }
    for expected, head in refused.items():
        with connect(server) as sock:
            sock.sendall(head)  # and wait for the invitation, which must not come
            data, closed = read_until_closed(sock, 5)
        status, headers = head_of(data)
        assert status.startswith(f"HTTP/1.1 {expected}"), data[:200]
        assert b"100 Continue" not in data
        assert headers["connection"] == "close" and closed


def test_close_among_the_connection_options_closes(server: GunicornServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n")
        data, closed = read_until_closed(sock, 5)
    assert head_of(data)[1]["connection"] == "close"
    assert closed


def test_a_later_http_version_is_answered_as_http_1_1(server: GunicornServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, _ = read_until_closed(sock, 5)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data[:100]


def test_an_unknown_transfer_coding_is_a_400_naming_it(server: GunicornServer) -> None:
    with connect(server) as sock, contextlib.suppress(OSError):
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: xchunked\r\n\r\n"
        )
        data, _ = read_until_closed(sock, 5)
    status, headers = head_of(data)
    assert status == "HTTP/1.1 400 Bad Request"
    error = json.loads(data.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "bad_request" and "xchunked" in error["message"]
    assert headers["x-content-type-options"] == "nosniff"


def test_the_page_closes_the_connection_after_a_body_it_cannot_read(
    server: GunicornServer,
) -> None:
    page = requests.get(server.url + "/", timeout=10)
    cookie = f"wine_quality_csrf={page.cookies['wine_quality_csrf']}"
    with connect(server) as sock:
        sock.sendall(
            b"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            + f"Cookie: {cookie}\r\nContent-Encoding: br\r\nContent-Length: 10\r\n\r\n".encode()
            + b"0123456789GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        data, closed = read_until_closed(sock, 5)
    status, headers = head_of(data)
    assert status.startswith("HTTP/1.1 415"), data[:300]
    assert headers["connection"] == "close" and closed
    assert data.count(b"HTTP/1.1 ") == 1


def test_connections_that_send_nothing_do_not_delay_a_stop(
    small_model_dir: Path, tmp_path: Path
) -> None:
    running = GunicornServer.start(
        small_model_dir,
        tmp_path,
        GUNICORN_SHUTDOWN_DELAY="0",
        GUNICORN_GRACEFUL_TIMEOUT="20",
        GUNICORN_READ_TIMEOUT="30",
    )
    silent = [connect(running) for _ in range(5)]
    try:
        time.sleep(0.5)
        started = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        running.process.wait(timeout=40)
        waited = time.monotonic() - started
    finally:
        for sock in silent:
            sock.close()
        running.stop()
    print(f"stop with 5 silent connections: {waited:.1f} s")
    assert waited < 3.5  # the 2 s kept-alive connections get, not the 30 s read timeout


def test_a_body_sent_along_with_expect_keeps_the_connection(server: GunicornServer) -> None:
    """A client may send its body without waiting for 100 Continue: no 100 then, and the request
    pipelined behind it is answered on the same connection."""
    with connect(server) as sock:
        sock.sendall(
            predict_request(SINGLE, "Expect: 100-continue\r\n")
            + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data, closed = read_until_closed(sock, 5)
    assert data.count(b"HTTP/1.1 200 OK") == 2, data[:300]
    assert b"100 Continue" not in data and closed


def test_the_write_timeout_starts_with_the_answer_not_the_100_continue(
    server: GunicornServer,
) -> None:
    """The upload after 100 Continue and the prediction take longer than the write timeout; the
    answer (over 4 MB, more than one write) still arrives whole for a client that reads."""
    request = big_csv_request(10_000).replace(b"Accept: text/csv\r\n", b"")
    head, _, body = request.partition(b"\r\n\r\n")
    with connect(server, timeout=20) as sock:
        sock.sendall(head + b"\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        third = len(body) // 3
        for start in (0, third, 2 * third):  # the body over 2.4 s, inside the read timeout
            sock.sendall(body[start : start + third] if start < 2 * third else body[start:])
            time.sleep(1.2 if start < 2 * third else 0)
        data, _ = read_until_closed(sock, 20)
    status, headers = head_of(data)
    assert status.startswith("HTTP/1.1 200"), data[:200]
    length = int(headers["content-length"])
    assert length > 4_000_000
    assert len(data.partition(b"\r\n\r\n")[2]) == length


def test_a_path_outside_the_proxys_script_name_is_a_400(server: GunicornServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nSCRIPT_NAME: /elsewhere\r\n\r\n")
        data, _ = read_until_closed(sock, 5)
    status, _ = head_of(data)
    assert status == "HTTP/1.1 400 Bad Request", data[:200]
    assert "SCRIPT_NAME" in json.loads(data.partition(b"\r\n\r\n")[2])["error"]["message"]


class Trickler(threading.Thread):
    """A client sending `prefix` at once, then `data` one byte every 0.5 s until it has
    `answers` answers; it keeps them, and how long after its first byte the last one came."""

    def __init__(
        self,
        server: GunicornServer,
        prefix: bytes,
        data: bytes,
        stop: threading.Event,
        answers: int = 1,
    ) -> None:
        super().__init__(daemon=True)
        self.server, self.prefix, self.data, self.stop = server, prefix, data, stop
        self.answers = answers
        self.answer = b""
        self.answered_after = 0.0

    def run(self) -> None:
        with connect(self.server) as sock, contextlib.suppress(OSError):
            started = time.monotonic()
            sock.sendall(self.prefix)
            for byte in self.data:
                sock.sendall(bytes([byte]))
                if self.stop.wait(0.5):
                    return
                with contextlib.suppress(BlockingIOError):
                    self.answer += sock.recv(65536, socket.MSG_DONTWAIT)
                if self.answer.count(b"HTTP/1.1 ") >= self.answers:
                    self.answered_after = time.monotonic() - started
                    self.answer += read_until_closed(sock, 2)[0]
                    return


SLOW_HEAD = b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
SMALL_BODY_HEAD = predict_request(b"{" * 100)[:-100]


def trickle_and_time_a_normal_request(
    server: GunicornServer, clients: list[Trickler], stop: threading.Event
) -> float:
    """Start the tricklers; once they are all sending, the longest of 5 normal requests'
    waits; then wait for every trickler to be answered."""
    try:
        for client in clients:
            client.start()
        time.sleep(1)
        waited = max(timed_readyz(server) for _ in range(5))
        for client in clients:
            client.join(timeout=READ_TIMEOUT + 5)
    finally:
        stop.set()
    return waited


def test_requests_trickling_in_hold_no_thread_and_get_408_on_time(server: GunicornServer) -> None:
    """Six times as many trickling clients as threads, half trickling a head, half a small body
    after a head sent at once. Before, each held a thread until its read timeout."""
    stop = threading.Event()
    clients = [Trickler(server, b"", SLOW_HEAD, stop) for _ in range(3 * THREADS)]
    clients += [Trickler(server, SMALL_BODY_HEAD, b"{" * 100, stop) for _ in range(3 * THREADS)]
    waited = trickle_and_time_a_normal_request(server, clients, stop)
    print(f"{len(clients)} trickling clients: a normal request waited {waited:.3f} s")
    assert waited < 1.0
    for client in clients:
        status, headers = head_of(client.answer)
        assert status == "HTTP/1.1 408 Request Timeout", client.answer[:200]
        assert headers["connection"] == "close" and headers["x-content-type-options"] == "nosniff"
        assert READ_TIMEOUT - 0.1 <= client.answered_after <= READ_TIMEOUT + 0.8
    assert "not read within 4 s: 408" in server.logs()


def test_a_pipelined_request_trickled_after_the_last_holds_no_thread(
    server: GunicornServer,
) -> None:
    """A request's first byte sent with the request before it, the rest trickled: the bytes read
    ahead with the first request go back to the poller, not to a thread that waits for the rest.
    Before, each such client held a thread, and its deadline began only when it got one."""
    stop = threading.Event()
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    clients = [
        Trickler(server, first + SLOW_HEAD[:1], SLOW_HEAD[1:], stop, answers=2) for _ in range(6)
    ]
    waited = trickle_and_time_a_normal_request(server, clients, stop)
    print(f"6 pipelining tricklers: a normal request waited {waited:.3f} s")
    assert waited < 1.0
    for client in clients:
        answers = client.answer.split(b"HTTP/1.1 ")[1:]
        assert [a[:3] for a in answers] == [b"200", b"408"], client.answer[:300]
        assert READ_TIMEOUT - 0.1 <= client.answered_after <= READ_TIMEOUT + 0.8


def test_the_read_deadline_runs_from_the_first_byte_into_the_thread(
    server: GunicornServer,
) -> None:
    """A head trickled for half the read timeout, then a body too large to gather: the thread
    that reads the body keeps the deadline the head started."""
    head = predict_request(b"x" * 50_000)[:-50_000]
    with connect(server, timeout=20) as sock:
        started = time.monotonic()
        for start in range(0, len(head), len(head) // 8 + 1):
            sock.sendall(head[start : start + len(head) // 8 + 1])
            time.sleep(READ_TIMEOUT / 2 / 8)
        sock.settimeout(0.25)
        answer = b""
        for _ in range(8 * READ_TIMEOUT):
            with contextlib.suppress(OSError):
                sock.sendall(b"x")
            with contextlib.suppress(TimeoutError):
                if answer := sock.recv(65536):
                    break
        answered_after = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert READ_TIMEOUT - 0.1 <= answered_after <= READ_TIMEOUT + 1


def test_a_request_in_pieces_on_a_kept_alive_connection_is_answered(
    server: GunicornServer,
) -> None:
    """Pieces cut inside the request line, a header, the blank line and the body, and a second
    request pipelined behind the first: each is gathered and answered, in order."""
    request = predict_request(SINGLE)
    pair = request + predict_request(SINGLE, "Connection: close\r\n")
    cuts = [5, 30, len(request) - len(SINGLE) - 1, len(request) + 7, len(pair) - 3]
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        for start, end in zip([0, *cuts], [*cuts, len(pair)], strict=True):
            sock.sendall(pair[start:end])
            time.sleep(0.2)
        data, closed = read_until_closed(sock, 5)
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert [a[:6] for a in answers] == [b"200 OK", b"200 OK"], data[:400]
    assert all(b'"quality"' in a for a in answers) and closed


def worker_fds(server: GunicornServer) -> int:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    (pid,) = children.read_text().split()
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_requests_that_end_unfinished_leave_nothing_behind(server: GunicornServer) -> None:
    """1,100 connections, more than a worker's 1,000 (gunicorn's worker_connections), each end
    in the middle of a request: closed, reset, or after a first answer. A connection the worker
    lost count of would stop it accepting; one it kept open would hold a descriptor."""
    timed_readyz(server)
    before = worker_fds(server)
    partial = b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Part: "
    for _ in range(11):
        socks = [connect(server) for _ in range(100)]
        for index, sock in enumerate(socks):
            if index % 3 == 2:  # a first request answered, the next one begun
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            sock.sendall(partial)
        time.sleep(0.3)
        for index, sock in enumerate(socks):
            if index % 3 == 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
    time.sleep(1.5)
    assert timed_readyz(server) < 1.0
    left = worker_fds(server) - before
    print(f"1,100 unfinished requests: {left} descriptors left above idle")
    assert left <= 2
    assert "Traceback" not in server.logs()


@pytest.mark.parametrize(
    "start",
    [b"GET /\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"],
    ids=["no version", "a TLS handshake"],
)
def test_a_line_that_is_no_request_is_refused_at_once(server: GunicornServer, start: bytes) -> None:
    """The poller hands a first line that cannot start an HTTP/1 request to gunicorn, which
    answers 400 without waiting for the rest of a head."""
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(start)
        data, closed = read_until_closed(sock, READ_TIMEOUT + 2)
        waited = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 400"), data[:200]
    assert closed and waited < 1.0


@pytest.mark.parametrize("line", ["CONNECT evil.example:443 HTTP/1.1", "OPTIONS * HTTP/1.1"])
def test_a_target_that_is_no_path_is_a_400_naming_it(server: GunicornServer, line: str) -> None:
    with connect(server) as sock:
        sock.sendall(f"{line}\r\nHost: x\r\n\r\n".encode())
        data, closed = read_until_closed(sock, 5)
    status, _ = head_of(data)
    assert status == "HTTP/1.1 400 Bad Request", data[:200]
    message = json.loads(data.partition(b"\r\n\r\n")[2])["error"]["message"]
    assert f"request target {line.split()[1]!r} is not a path" in message and closed


def test_an_absolute_url_target_is_served(server: GunicornServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET http://wine.example/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_an_expectation_not_met_is_a_417_with_its_own_code(server: GunicornServer) -> None:
    with connect(server) as sock:
        sock.sendall(predict_request(SINGLE, "Expect: 200-ok\r\n"))
        data, _ = read_until_closed(sock, 5)
    status, _ = head_of(data)
    assert status == "HTTP/1.1 417 Expectation Failed", data[:200]
    assert json.loads(data.partition(b"\r\n\r\n")[2])["error"]["code"] == "expectation_failed"
