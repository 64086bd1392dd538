"""The gunicorn worker of the service: gunicorn's thread worker, with a read timeout per request.

Why this worker: a sync worker reads one request at a time, so a client that sends its headers or
body at 1 byte/s holds a whole worker (a 2-worker pod stalls with two such clients). gunicorn's
thread worker (gthread) hands each connection to one of GUNICORN_THREADS threads, and keeps idle
keep-alive connections in its poller without a thread; a slow client then costs one idle thread
instead of a worker. But once its first byte has arrived, gthread reads the request with a
blocking socket and no overall limit, so enough trickling clients still take every thread. This
worker adds that limit: from the moment a thread picks up a connection, the request line, the
headers and the body must arrive within GUNICORN_READ_TIMEOUT seconds; otherwise the client gets
408 and the connection is closed. A stalled pod is thus impossible: at worst new requests wait
behind GUNICORN_THREADS slow clients per worker for GUNICORN_READ_TIMEOUT seconds.
(gevent would multiplex the connections too, but the work here is CPU-bound Python and ONNX:
monkey-patching buys nothing and brings its own risks; a buffering proxy in the pod is the
alternative for clients slower than the read timeout allows.)

Accepting: the workers of a pod share one listening socket, and a worker that wakes first drains
its queue, one connection per loop turn, faster than a second worker wakes. A client that opens
its keep-alive connections at once (a load balancer, a connection pool) then often lands every
connection on one worker, whose threads share one GIL while the other worker idles: measured with
8 connections to 2 workers, 8/0 splits at half the throughput of even ones. So a worker that
already holds connections waits ACCEPT_BACKOFF_SECONDS per connection (at most
MAX_BACKOFF_CONNECTIONS of them) before it accepts another, and an idle worker takes it first.
The wait releases the GIL, so the worker's threads keep serving; it delays only new connections
to a busy worker, by 1.6 ms at most.

Keep-alive: gthread hands a kept-alive connection back to its main thread after every response,
which polls it and submits it to the pool again for the next request: a round of thread
hand-offs per request. When a thread of the worker is free, the thread that answered waits up to
KEEPALIVE_WAIT_SECONDS on its connection and reads the next request itself; an idle connection
then goes back to the poller as before. The wait holds no CPU and no lock, and never the last
free thread. With the write below, measured with wrk (8 connections, 2 workers): a single-row
request's CPU fell from 0.87-0.93 to 0.73-0.78 ms (docs/inference.md, "Against the bare stack").

Writing: gunicorn sends a response's head and its body in two writes; the socket wrapper holds
the head until the body's first write and sends both at once (one segment, one wake-up of the
client), and sends a held head before anything else happens on the socket. The answers' Date
header is formatted once a second (DateHeader), not once per answer.

gunicorn's own error answers (a malformed request line or header, 414, 431, 408) carry the
service's security headers and its JSON error shape, like every answer of the app.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from wine_quality.app.errors import RequestReadTimeout
from wine_quality.app.hooks import SECURITY_HEADERS
from wine_quality.app.settings import integer

ACCEPT_BACKOFF_SECONDS = 0.0002
MAX_BACKOFF_CONNECTIONS = 8
KEEPALIVE_WAIT_SECONDS = 0.01
COMBINED_WRITE_BYTES = 64 * 1024  # a larger body goes in its own write, not copied behind the head


class ClientSocket:
    """A client socket whose reads fail with RequestReadTimeout once `deadline` has passed
    (time.monotonic()); None means no deadline. After `hold_next_write()` its next write (the
    response head) waits for the one after it, or for any other use of the socket.
    Everything else is the socket's own."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._plain = type(sock) is socket.socket  # not TLS: recv takes flags
        self._hold = False
        self._held = b""
        self.deadline: float | None = None

    def recv(self, size: int, flags: int = 0) -> bytes:
        self.flush()
        if self.deadline is None:
            return self._sock.recv(size, flags)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise RequestReadTimeout()
        if self._plain:  # bytes that are already there need no timeout (3 system calls fewer)
            with contextlib.suppress(BlockingIOError):
                return self._sock.recv(size, flags | socket.MSG_DONTWAIT)
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv(size, flags)
        except TimeoutError:
            raise RequestReadTimeout() from None
        finally:
            self._sock.settimeout(None)

    def hold_next_write(self) -> None:
        self._hold = True

    def sendall(self, data: bytes, flags: int = 0) -> None:
        if self._hold:
            self._hold, self._held = False, bytes(data)
            return
        if self._held and len(data) <= COMBINED_WRITE_BYTES:
            data, self._held = self._held + data, b""
        self.flush()
        self._sock.sendall(data, flags)

    def flush(self) -> None:
        """Send a held write; stop holding the next one."""
        self._hold = False
        if self._held:
            held, self._held = self._held, b""
            self._sock.sendall(held)

    # What gunicorn calls around every request, defined here rather than found through
    # __getattr__ (which Python reaches only after building an AttributeError).
    def settimeout(self, value: float | None) -> None:
        """The socket's own settimeout, skipped when it would not change anything (gthread sets
        blocking mode before every request; the system call is the same each time)."""
        self.flush()
        if value != self._sock.gettimeout():
            self._sock.settimeout(value)

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def fileno(self) -> int:
        return self._sock.fileno()

    def __getattr__(self, name: str) -> Any:
        self.flush()
        return getattr(self._sock, name)


def _readable(sock: Any, seconds: float) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(seconds * 1000))


def error_page(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's util.write_error, answering in the service's error shape with its headers."""
    body = json.dumps(
        {"error": {"status": status_int, "code": _code(status_int), "message": mesg or reason}}
    ).encode()
    head = [f"HTTP/1.1 {status_int} {reason}", "Connection: close"]
    head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in SECURITY_HEADERS.items()]
    util.write_nonblock(sock, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


class DateHeader:
    """gunicorn's util.http_date, formatting the current second once instead of for every answer
    (an HTTP date has no finer resolution)."""

    def __init__(self, format_date: Any) -> None:
        self._format = format_date
        self._current: tuple[int, str] = (-1, "")

    def __call__(self, timestamp: float | None = None) -> str:
        if timestamp is not None:
            return self._format(timestamp)
        second = int(time.time())
        current = self._current
        if current[0] != second:
            current = self._current = (second, self._format(second))
        return current[1]


def _code(status: int) -> str:
    return {408: "request_timeout", 414: "uri_too_long", 431: "headers_too_large"}.get(
        status, "bad_request" if status < 500 else "server_error"
    )


class ServiceWorker(ThreadWorker):
    """gthread with a per-request read deadline (GUNICORN_READ_TIMEOUT), an accept that leaves
    new connections to idle workers first, threads that serve their kept-alive connection's next
    request themselves while another thread is free, and one write per small response."""

    def init_process(self) -> None:
        self._read_timeout = integer("GUNICORN_READ_TIMEOUT")
        # gunicorn writes its own error pages through this function (workers/base.py) and
        # formats every answer's Date header with this one (http/wsgi.py)
        util.write_error = error_page
        if not isinstance(util.http_date, DateHeader):
            util.http_date = DateHeader(util.http_date)
        self._threads = self.cfg.threads
        self._threads_lock = threading.Lock()
        self._busy_threads = 0  # threads in handle(), serving or waiting for a next request
        super().init_process()

    def accept(self, listener: Any) -> None:
        if self.nr_conns:  # let an idle worker of the pod take it first
            time.sleep(min(self.nr_conns, MAX_BACKOFF_CONNECTIONS) * ACCEPT_BACKOFF_SECONDS)
        super().accept(listener)

    def enqueue_req(self, conn: Any) -> None:
        if not isinstance(conn.sock, ClientSocket):
            conn.sock = ClientSocket(conn.sock)
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        with self._threads_lock:
            self._busy_threads += 1
        try:
            keepalive = self._handle_one(conn)
            while keepalive is True and self._next_request_arrives(conn):
                keepalive = self._handle_one(conn)
            return keepalive
        finally:
            with self._threads_lock:
                self._busy_threads -= 1

    def _handle_one(self, conn: Any) -> Any:
        conn.sock.deadline = time.monotonic() + self._read_timeout
        try:
            return super().handle(conn)
        finally:
            conn.sock.deadline = None

    def _next_request_arrives(self, conn: Any) -> bool:
        """Whether this thread serves the connection's next request itself: the worker runs,
        another thread is free, and the request starts within KEEPALIVE_WAIT_SECONDS."""
        if not self.alive or self._busy_threads >= self._threads:
            return False
        if conn.parser.unreader.buf.getvalue():  # read ahead with the last body
            return True
        return _readable(conn.sock, KEEPALIVE_WAIT_SECONDS)

    def handle_request(self, req: Any, conn: Any) -> Any:
        conn.sock.hold_next_write()
        try:
            return super().handle_request(req, conn)
        finally:
            conn.sock.deadline = None  # the request is read; writing and draining are not bounded
            conn.sock.flush()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if isinstance(exc, RequestReadTimeout):
            client_address = (addr or ("-",))[0]
            self.log.info(
                "request from %s not read within %s s: 408", client_address, self._read_timeout
            )
            with contextlib.suppress(OSError):
                error_page(client, 408, "Request Timeout", RequestReadTimeout.MESSAGE)
            return
        super().handle_error(req, client, addr, exc)
