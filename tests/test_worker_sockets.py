"""The service's gunicorn worker on one connection, over real socket pairs:

- a response's head waits for the body's first write and goes out with it, a large body in its
  own write; a held head is sent before the socket is read or used otherwise, and at the end of
  the request whatever it had;
- reads stop at the request's deadline, and bytes already there are read without waiting;
- blocking mode and timeouts behave as the socket's own, without a system call for a mode the
  socket already has;
- the Date header is gunicorn's, formatted once per second;
- after a kept-alive answer the thread waits for the connection's next request only while the
  worker runs and another thread is free, only KEEPALIVE_WAIT_SECONDS, and serves it only when
  it has arrived whole;
- a request is gathered without waiting until its head, and a small body announced by its
  Content-Length, have arrived, however the client splits it;
- the main thread serves only a request that has arrived whole and needs no decoding; while it
  does, nothing waits: a read beyond the request fails at once, gunicorn's blocking mode is not
  set, and what the kernel does not take of the answer is kept, then sent in order by a thread
  within the write timeout;
- an answer goes out as gunicorn's own response would send it, its constant headers unchecked.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
from gunicorn import util
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.message import Request
from gunicorn.http.unreader import IterUnreader, Unreader

from wine_quality.app import worker
from wine_quality.app.errors import RequestReadTimeout
from wine_quality.app.hooks import HSTS, SECURITY_HEADERS
from wine_quality.app.worker import ClientSocket, DateHeader, ServiceWorker

PEER = ("127.0.0.1", 40000)
HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"


class CountingSocket(socket.socket):
    """A real socket that also records each sendall and settimeout call."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[bytes] = []
        self.timeouts: list[float | None] = []

    def sendall(self, data, flags: int = 0) -> None:
        self.writes.append(bytes(data))
        super().sendall(data, flags)

    def settimeout(self, value) -> None:
        self.timeouts.append(value)
        super().settimeout(value)


@pytest.fixture
def pair() -> Iterator[tuple[CountingSocket, socket.socket]]:
    ours, peer = socket.socketpair()
    counting = CountingSocket(ours.family, ours.type, ours.proto, ours.detach())
    yield counting, peer
    counting.close()
    peer.close()


def received(peer: socket.socket, size: int) -> bytes:
    peer.settimeout(5)
    data = b""
    while len(data) < size:
        data += peer.recv(size - len(data))
    return data


def test_the_head_goes_out_with_the_first_body_write(pair) -> None:
    raw, peer = pair
    sock = ClientSocket(raw)
    sock.hold_next_write()
    sock.sendall(HEAD)
    assert raw.writes == []
    sock.sendall(b"hello")
    assert raw.writes == [HEAD + b"hello"]
    assert received(peer, len(HEAD) + 5) == HEAD + b"hello"


def test_a_large_body_is_not_copied_behind_the_head(pair) -> None:
    raw, peer = pair
    sock = ClientSocket(raw)
    body = b"x" * (worker.COMBINED_WRITE_BYTES + 1)
    sock.hold_next_write()
    sock.sendall(HEAD)
    reader = threading.Thread(target=lambda: received(peer, len(HEAD) + len(body)))
    reader.start()
    sock.sendall(body)
    reader.join(10)
    assert [len(w) for w in raw.writes] == [len(HEAD), len(body)]


def test_only_the_write_after_hold_next_write_is_held(pair) -> None:
    raw, _ = pair
    sock = ClientSocket(raw)
    sock.sendall(b"a")
    sock.sendall(b"b")
    assert raw.writes == [b"a", b"b"]
    sock.hold_next_write()
    sock.sendall(HEAD)
    sock.sendall(b"hello")
    sock.sendall(b"more")
    assert raw.writes[2:] == [HEAD + b"hello", b"more"]


def test_a_head_without_a_body_is_sent_by_flush(pair) -> None:
    raw, peer = pair
    sock = ClientSocket(raw)
    sock.hold_next_write()
    sock.sendall(HEAD)
    sock.flush()
    assert received(peer, len(HEAD)) == HEAD
    sock.sendall(b"next")  # no longer held
    assert raw.writes == [HEAD, b"next"]


def test_a_held_write_is_sent_before_the_socket_is_read(pair) -> None:
    """gunicorn's "100 Continue" is written, then the body is read: the client must see it."""
    raw, peer = pair
    sock = ClientSocket(raw)
    sock.hold_next_write()
    sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    peer.sendall(b"body")
    assert sock.recv(10) == b"body"
    assert received(peer, 25) == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_a_held_write_is_sent_before_any_other_use_of_the_socket(pair) -> None:
    raw, _ = pair
    sock = ClientSocket(raw)
    sock.hold_next_write()
    sock.sendall(HEAD)
    sock.setblocking(True)
    assert raw.writes == [HEAD]


def test_blocking_mode_and_timeouts_behave_as_the_sockets_own(pair) -> None:
    raw, peer = pair
    sock = ClientSocket(raw)
    sock.setblocking(False)
    assert sock.gettimeout() == 0.0
    with pytest.raises(BlockingIOError):
        sock.recv(10)
    sock.settimeout(0.05)
    assert sock.gettimeout() == 0.05
    with pytest.raises(TimeoutError):
        sock.recv(10)
    sock.setblocking(True)
    assert sock.gettimeout() is None
    peer.sendall(b"x")
    assert sock.recv(10) == b"x"
    assert sock.fileno() == raw.fileno()


def test_setting_the_mode_the_socket_has_is_no_system_call(pair) -> None:
    """gthread makes the socket blocking before every request; it already is after the first."""
    raw, _ = pair
    sock = ClientSocket(raw)
    sock.setblocking(True)
    sock.setblocking(True)
    sock.settimeout(None)
    sock.settimeout(2.5)
    sock.settimeout(2.5)
    sock.setblocking(False)
    sock.setblocking(False)
    assert raw.timeouts == [2.5, 0.0]


def test_bytes_already_there_are_read_without_a_timeout() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        sock = ClientSocket(ours)
        sock.deadline = time.monotonic() + 5
        peer.sendall(b"GET / HTTP/1.1\r\n")
        assert sock.recv(100) == b"GET / HTTP/1.1\r\n"
        assert ours.gettimeout() is None


def test_a_read_waits_for_bytes_until_the_deadline() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        sock = ClientSocket(ours)
        sock.deadline = time.monotonic() + 5
        threading.Timer(0.05, peer.sendall, (b"late",)).start()
        assert sock.recv(100) == b"late"
        sock.deadline = time.monotonic() + 0.05
        with pytest.raises(RequestReadTimeout):
            sock.recv(100)
        assert ours.gettimeout() is None


def test_a_read_after_the_deadline_fails_even_with_bytes_there() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        sock = ClientSocket(ours)
        sock.deadline = time.monotonic() - 0.001
        peer.sendall(b"x")
        with pytest.raises(RequestReadTimeout):
            sock.recv(100)


class Waiting(ServiceWorker):
    """A ServiceWorker without gunicorn's arbiter: just what _next_request uses."""

    def __init__(self, threads: int, busy: int, alive: bool = True) -> None:
        self._threads = threads
        self._busy_threads = busy
        self.alive = alive


@pytest.fixture
def connection() -> Iterator[tuple[SimpleNamespace, socket.socket]]:
    ours, peer = socket.socketpair()
    conn = SimpleNamespace(
        sock=ClientSocket(ours),
        parser=SimpleNamespace(unreader=Unreader()),
    )
    yield conn, peer
    ours.close()
    peer.close()


def timed(worker_: Waiting, conn: SimpleNamespace) -> tuple[object, float]:
    started = time.monotonic()
    answer = worker_._next_request(conn)
    return answer, time.monotonic() - started


GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def test_the_thread_serves_a_next_request_that_comes_whole_within_the_wait(connection) -> None:
    conn, peer = connection
    threading.Timer(worker.KEEPALIVE_WAIT_SECONDS / 5, peer.sendall, (GET,)).start()
    assert timed(Waiting(threads=4, busy=1), conn)[0] is worker.SERVE
    assert conn.sock.recv(8192) == GET


def test_a_next_request_begun_within_the_wait_is_left_to_the_poller(connection) -> None:
    conn, peer = connection
    threading.Timer(worker.KEEPALIVE_WAIT_SECONDS / 5, peer.sendall, (GET[:10],)).start()
    assert timed(Waiting(threads=4, busy=1), conn)[0] is worker.ARRIVING
    assert conn.sock.started is not None  # its read deadline runs from its first byte


def test_an_idle_connection_goes_back_to_the_poller_after_the_wait(connection) -> None:
    conn, _ = connection
    answer, waited = timed(Waiting(threads=4, busy=1), conn)
    assert answer is True  # gthread's keep-alive
    assert worker.KEEPALIVE_WAIT_SECONDS * 0.9 <= waited < 1.0


@pytest.mark.parametrize("waiting", [Waiting(threads=4, busy=1), Waiting(threads=1, busy=1)])
def test_a_whole_request_read_ahead_with_the_last_body_is_served_at_once(
    connection, waiting: Waiting
) -> None:
    conn, _ = connection
    conn.parser.unreader.unread(GET)
    answer, waited = timed(waiting, conn)
    assert answer is worker.SERVE and waited < worker.KEEPALIVE_WAIT_SECONDS
    assert conn.sock.recv(8192) == GET


def test_a_request_begun_in_the_read_ahead_is_left_to_the_poller(connection) -> None:
    """A pipelining client that trickles the rest: no thread may wait for it."""
    conn, peer = connection
    conn.parser.unreader.unread(GET[:10])
    assert timed(Waiting(threads=1, busy=1), conn)[0] is worker.ARRIVING
    assert conn.sock.started is not None and not conn.parser.unreader.buf.getvalue()
    peer.sendall(GET[10:])
    time.sleep(0.01)
    assert conn.sock.gather() is True
    assert conn.sock.recv(8192) == GET


@pytest.mark.parametrize(
    "waiting",
    [
        Waiting(threads=4, busy=4),
        Waiting(threads=1, busy=1),
        Waiting(threads=4, busy=1, alive=False),
    ],
    ids=["no other thread free", "one thread", "worker stopping"],
)
def test_no_wait_without_a_free_thread_or_when_stopping(connection, waiting: Waiting) -> None:
    conn, peer = connection
    peer.sendall(GET)  # even a request already there goes through the poller
    answer, waited = timed(waiting, conn)
    assert answer is True and waited < worker.KEEPALIVE_WAIT_SECONDS


POST_HEAD = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
REQUESTS_AND_NEEDS = {
    "no body": (GET, len(GET)),
    "a small body": (POST_HEAD + b"Content-Length: 5\r\n\r\n12345", len(POST_HEAD) + 26),
    "no space, case": (POST_HEAD + b"CONTENT-LENGTH:5\r\n\r\n12345", len(POST_HEAD) + 25),
    "an empty body": (POST_HEAD + b"Content-Length: 0\r\n\r\n", len(POST_HEAD) + 21),
    "a body over the gather size": (
        POST_HEAD + f"Content-Length: {worker.GATHER_BYTES}\r\n\r\n".encode(),
        0,
    ),
    "chunked": (POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\n", 0),
    "expect": (POST_HEAD + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n", 0),
    "two lengths": (POST_HEAD + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\n12345", 0),
    "a length not in digits": (POST_HEAD + b"Content-Length: +5\r\n\r\n12345", 0),
    "a length of many digits": (POST_HEAD + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n", 0),
    "a bare LF": (b"GET / HTTP/1.1\nHost: x\n", 0),
    "not a request line": (b"GET /\r\nHost: x", 0),
    "a TLS handshake": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 0),
    "a request line, then no end": (b"\r\nGET / HTTP/1.1\r\nHost: x\r\n", None),
}


@pytest.mark.parametrize("name", REQUESTS_AND_NEEDS)
def test_a_request_needs_its_head_and_a_small_body_however_it_is_split(name: str) -> None:
    request, needed = REQUESTS_AND_NEEDS[name]
    assert worker.bytes_needed(bytearray(request), 0) == needed
    for size in (1, 2, 3, 7):  # in pieces, scanning only what is new each time
        gathered, result = bytearray(), None
        for start in range(0, len(request), size):
            scanned = len(gathered)
            gathered += request[start : start + size]
            result = worker.bytes_needed(gathered, scanned)
            if result is not None:
                break
        assert result == needed, size


def test_a_head_that_has_not_ended_needs_more() -> None:
    assert worker.bytes_needed(bytearray(GET[:-1]), 0) is None
    assert worker.bytes_needed(bytearray(b"GET / HTTP/1.1\r\nHost: x\r\n\r"), 20) is None


def test_gather_collects_a_request_until_it_is_whole_and_hands_it_over_at_once() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        sock = ClientSocket(ours)
        request = POST_HEAD + b"Content-Length: 5\r\n\r\n12345" + GET  # and one pipelined
        assert sock.gather() is False and sock.started is None  # nothing there yet
        for cut in (10, len(POST_HEAD) + 22, len(POST_HEAD) + 25):
            peer.sendall(request[len(sock._gathered) : cut])
            time.sleep(0.01)
            assert sock.gather() is False, cut
        assert sock.started is not None
        peer.sendall(request[len(POST_HEAD) + 25 :])
        time.sleep(0.01)
        assert sock.gather() is True
        assert sock.recv(10) == request  # all of it: gunicorn's reader keeps the rest
        peer.sendall(b"more")
        assert sock.recv(100) == b"more"


def test_gather_stops_at_its_size_and_at_the_end_of_the_connection() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        sock = ClientSocket(ours)
        peer.sendall(b"GET /" + b"a" * (worker.GATHER_BYTES - 5))
        time.sleep(0.01)
        while not sock.gather():
            pass
        assert len(sock.recv(1)) == worker.GATHER_BYTES
        peer.sendall(b"GET / HTTP")
        peer.shutdown(socket.SHUT_WR)
        time.sleep(0.01)
        assert sock.gather() is False
        assert sock.gather() is True  # the end: the thread's read finds it
        assert sock.recv(100) == b"GET / HTTP"
        assert sock.recv(100) == b""


SERVABLE_HERE = {
    "no body": (GET, True),
    "a small body": (POST_HEAD + b"Content-Length: 5\r\n\r\n12345", True),
    "a body with a header's words": (
        POST_HEAD + b"Content-Length: 23\r\n\r\n\r\nContent-Encoding: x\r\n\r\n",
        True,
    ),
    "a compressed body": (
        POST_HEAD + b"Content-Encoding: gzip\r\nContent-Length: 5\r\n\r\n12345",
        False,
    ),
    "a coding named in capitals": (
        POST_HEAD + b"CONTENT-ENCODING:deflate\r\nContent-Length: 5\r\n\r\n12345",
        False,
    ),
    "a body still arriving": (POST_HEAD + b"Content-Length: 5\r\n\r\n123", False),
    "a body over the gather size": (
        POST_HEAD + f"Content-Length: {worker.GATHER_BYTES}\r\n\r\n".encode() + b"x" * 20_000,
        False,
    ),
    "chunked": (POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n0\r\n\r\n", False),
    "expect": (POST_HEAD + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n12345", False),
    "a head still arriving": (GET[:-2], False),
    "a whole head that gunicorn refuses": (b"GET /\r\nHost: x\r\n\r\n", True),  # 400 at once
    "a TLS handshake": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", False),
}


@pytest.mark.parametrize("name", SERVABLE_HERE)
def test_the_main_thread_serves_only_requests_that_arrived_whole_and_need_no_decoding(
    name: str,
) -> None:
    request, servable = SERVABLE_HERE[name]
    ours, peer = socket.socketpair()
    with ours, peer:
        sock = ClientSocket(ours)
        peer.sendall(request)
        time.sleep(0.01)
        sock.gather()
        assert sock.servable_here() is servable


def test_a_request_served_on_the_main_thread_is_never_waited_for() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        sock = ClientSocket(ours)
        sock.deadline = time.monotonic() + 5
        peer.sendall(GET)
        time.sleep(0.01)
        assert sock.gather() and sock.servable_here()
        sock.served_here = True
        assert sock.recv(100) == GET
        peer.sendall(b"GET /late")  # bytes beyond the request are not read either
        started = time.monotonic()
        with pytest.raises(RequestReadTimeout):
            sock.recv(100)
        assert time.monotonic() - started < 0.5


def test_gunicorns_blocking_mode_is_not_set_while_the_main_thread_serves(pair) -> None:
    raw, _ = pair
    raw.setblocking(False)
    raw.timeouts.clear()
    sock = ClientSocket(raw)
    sock.served_here = True
    sock.setblocking(True)
    sock.settimeout(2.5)
    assert raw.gettimeout() == 0.0 and raw.timeouts == []
    sock.served_here = False
    sock.setblocking(True)
    assert raw.gettimeout() is None


def small_buffers() -> tuple[socket.socket, socket.socket]:
    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ours.setblocking(False)  # as the poller holds it
    return ours, peer


def write_here(
    sock: ClientSocket, parts: list[bytes], between: Callable[[], object] = lambda: None
) -> float:
    """Write `parts` as the main thread does, calling `between` after each, and end the answer
    as the worker does; how long it took."""
    started = time.monotonic()
    sock.served_here = True
    try:
        for part in parts:
            sock.sendall(part)
            between()
    finally:
        sock.served_here = False
    sock.end_answer()
    return time.monotonic() - started


def test_what_the_client_does_not_take_at_once_is_kept_then_sent_in_order() -> None:
    ours, peer = small_buffers()
    with ours, peer:
        sock = ClientSocket(ours, write_timeout=10)
        parts = [bytes([65 + i]) * 50_000 for i in range(3)]  # far more than the buffers hold
        early = bytearray()  # the client reads a little while the answer is written

        def read_some() -> None:
            time.sleep(0.01)
            with contextlib.suppress(BlockingIOError):
                early.extend(peer.recv(8192, socket.MSG_DONTWAIT))

        assert write_here(sock, parts, read_some) < 0.5
        assert sock.has_kept()
        sender = threading.Thread(target=sock.send_kept)
        sender.start()
        assert early + received(peer, 150_000 - len(early)) == b"".join(parts)
        sender.join(5)
        assert not sock.has_kept() and not sock.aborted


def test_a_file_goes_out_through_the_same_writes(tmp_path) -> None:
    ours, peer = small_buffers()
    with ours, peer:
        sock = ClientSocket(ours, write_timeout=10)
        content = bytes(range(256)) * 1000  # far more than the buffers hold
        path = tmp_path / "asset"
        path.write_bytes(content)
        with path.open("rb") as file:
            sock.served_here = True
            started = time.monotonic()
            assert sock.sendfile(file, offset=100, count=200_000) == 200_000
            assert time.monotonic() - started < 0.5  # the main thread did not wait
            sock.served_here = False
        assert sock.has_kept()
        sender = threading.Thread(target=sock.send_kept)
        sender.start()
        assert received(peer, 200_000) == content[100:200_100]
        sender.join(5)


def test_a_kept_answer_not_taken_within_the_write_timeout_is_dropped() -> None:
    ours, peer = small_buffers()
    with ours, peer:
        sock = ClientSocket(ours, write_timeout=1)
        write_here(sock, [b"x" * 200_000])
        time.sleep(0.6)  # the timeout runs from the answer's first byte, not from the hand-over
        started = time.monotonic()
        with pytest.raises(worker.WriteTimeout):
            sock.send_kept()
        assert 0.2 < time.monotonic() - started < 0.8
        assert sock.aborted


def test_the_date_header_is_gunicorns_formatted_once_a_second(monkeypatch) -> None:
    formatted: list[float] = []

    def format_date(timestamp: float) -> str:
        formatted.append(timestamp)
        return util.http_date(timestamp)

    date = DateHeader(format_date)
    now = [1_800_000_000.2]
    monkeypatch.setattr(worker.time, "time", lambda: now[0])
    assert date() == util.http_date(1_800_000_000.2) == "Fri, 15 Jan 2027 08:00:00 GMT"
    now[0] = 1_800_000_000.9
    assert date() == util.http_date(1_800_000_000.9)
    now[0] = 1_800_000_001.0
    assert date() == "Fri, 15 Jan 2027 08:00:01 GMT"
    assert formatted == [1_800_000_000, 1_800_000_001]  # the second second, formatted once each
    assert date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"  # a given time is formatted as asked


def answered(response_class: type, headers: list[tuple[str, str]]) -> bytes | tuple[str, str]:
    """What gunicorn sends for an answer with `headers`, or the error it raises."""
    request = Request(Config(), IterUnreader([b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"]), PEER, 1)
    ours, peer = socket.socketpair()
    with ours, peer:
        response = response_class(request, ours, Config())
        try:
            response.start_response("200 OK", list(headers))
        except Exception as error:  # the error is the result to compare
            return (type(error).__name__, str(error))
        response.write(b"{}")
        response.close()
        ours.shutdown(socket.SHUT_WR)
        peer.settimeout(5)
        sent = b"".join(iter(lambda: peer.recv(65536), b""))
    return re.sub(rb"Date: [^\r]*", b"Date: -", sent)


TYPICAL = [
    ("Content-Type", "application/json"),
    ("Content-Length", "2"),
    *SECURITY_HEADERS.items(),
    ("X-Request-ID", "0123456789abcdef0123456789abcdef"),
]


@pytest.mark.parametrize(
    "headers",
    [
        TYPICAL,
        [*TYPICAL, ("Strict-Transport-Security", HSTS)],
        [("Content-Type", "application/json "), ("Connection", "close"), ("Keep-Alive", "5")],
        [("X-Frame-Options", "DENY"), ("X-Frame-Options", "SAMEORIGIN")],
        [*TYPICAL[:3], ("X Bad", "1")],
        [*TYPICAL[:3], ("X-Bad", "a\r\nb")],
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", "2")],
    ],
)
def test_answers_are_sent_as_gunicorns_response_sends_them(headers) -> None:
    assert set(worker.CHECKED_HEADERS) <= set(TYPICAL) | {("Strict-Transport-Security", HSTS)}
    assert answered(worker.ServiceResponse, headers) == answered(wsgi.Response, headers)
