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

gunicorn's own error answers (a malformed request line or header, 414, 431, 408) carry the
service's security headers and its JSON error shape, like every answer of the app.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from wine_quality.app.errors import RequestReadTimeout
from wine_quality.app.hooks import SECURITY_HEADERS
from wine_quality.app.settings import integer

ACCEPT_BACKOFF_SECONDS = 0.0002
MAX_BACKOFF_CONNECTIONS = 8


class DeadlineSocket:
    """A client socket whose reads fail with RequestReadTimeout once `deadline` has passed
    (time.monotonic()); None means no deadline. Everything else is the socket's own."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline: float | None = None

    def recv(self, size: int, *flags: int) -> bytes:
        if self.deadline is None:
            return self._sock.recv(size, *flags)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise RequestReadTimeout()
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv(size, *flags)
        except TimeoutError:
            raise RequestReadTimeout() from None
        finally:
            self._sock.settimeout(None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def error_page(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's util.write_error, answering in the service's error shape with its headers."""
    body = json.dumps(
        {"error": {"status": status_int, "code": _code(status_int), "message": mesg or reason}}
    ).encode()
    head = [f"HTTP/1.1 {status_int} {reason}", "Connection: close"]
    head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in SECURITY_HEADERS.items()]
    util.write_nonblock(sock, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


def _code(status: int) -> str:
    return {408: "request_timeout", 414: "uri_too_long", 431: "headers_too_large"}.get(
        status, "bad_request" if status < 500 else "server_error"
    )


class ServiceWorker(ThreadWorker):
    """gthread with a per-request read deadline (cfg.read_timeout, from gunicorn_conf) and an
    accept that leaves new connections to idle workers first."""

    def init_process(self) -> None:
        self._read_timeout = integer("GUNICORN_READ_TIMEOUT")
        # gunicorn writes its own error pages through this function (workers/base.py)
        util.write_error = error_page
        super().init_process()

    def accept(self, listener: Any) -> None:
        if self.nr_conns:  # let an idle worker of the pod take it first
            time.sleep(min(self.nr_conns, MAX_BACKOFF_CONNECTIONS) * ACCEPT_BACKOFF_SECONDS)
        super().accept(listener)

    def enqueue_req(self, conn: Any) -> None:
        if not isinstance(conn.sock, DeadlineSocket):
            conn.sock = DeadlineSocket(conn.sock)
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        conn.sock.deadline = time.monotonic() + self._read_timeout
        try:
            return super().handle(conn)
        finally:
            conn.sock.deadline = None

    def handle_request(self, req: Any, conn: Any) -> Any:
        try:
            return super().handle_request(req, conn)
        finally:
            conn.sock.deadline = None  # the request is read; writing and draining are not bounded

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
