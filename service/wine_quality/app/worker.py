"""The gunicorn worker of the service: gunicorn's thread worker, with a read timeout per request.

Why this worker: a sync worker reads one request at a time, so a client that sends its headers or
body at 1 byte/s holds a whole worker (a 2-worker pod stalls with two such clients). gunicorn's
thread worker (gthread) hands each connection to one of GUNICORN_THREADS threads, and keeps idle
keep-alive connections in its poller without a thread; a slow client then costs one idle thread
instead of a worker. But once a request's first byte has arrived, gthread reads it with a
blocking socket and no overall limit, so enough trickling clients still take every thread. This
worker collects a request in the poller, holding no thread, until its head has arrived, and
with it the body when Content-Length announces one of up to GATHER_BYTES with the head (most API
requests), a pipelined one begun in the bytes read with the last included: only then is it
served, by the main thread if it has arrived whole (below), else by a thread. From the
request's first byte, its line, headers and body must arrive within GUNICORN_READ_TIMEOUT
seconds, in the poller and then in the thread that reads a larger body; otherwise the client
gets 408 and the connection is closed. Likewise an answer must be taken within
GUNICORN_WRITE_TIMEOUT seconds from its first byte, or the connection is reset: a client that
never reads cannot keep a thread either. A new connection waits in the poller until it sends
its first bytes (gthread gives it a thread that waits up to 5 s: a few dozen silent connections
delayed every request by seconds), and is closed if it sends nothing within
GUNICORN_READ_TIMEOUT.
The bound: clients trickling a head or a small body hold no thread; one trickling a larger body
(or a chunked one, or one sent after `100 Continue`), or its reading, holds one thread for at
most those timeouts. Only requests that need a thread wait, and only when more such clients
than GUNICORN_THREADS are at it at once; the main thread serves the others meanwhile. The
poller holds at most GATHER_BYTES per connection.
(gevent would multiplex the connections too, but the work here is CPU-bound Python and ONNX:
monkey-patching buys nothing and brings its own risks; a buffering proxy in the pod is the
alternative for clients slower than the timeouts allow, or more numerous.)

Accepting: the workers of a pod share one listening socket, and a worker that wakes first drains
its queue, one connection per loop turn, faster than a second worker wakes. A client that opens
its keep-alive connections at once (a load balancer, a connection pool) then often lands every
connection on one worker, whose threads share one GIL while the other worker idles: measured with
8 connections to 2 workers, 8/0 splits at half the throughput of even ones. So a worker that
already holds connections waits ACCEPT_BACKOFF_SECONDS per connection (at most
MAX_BACKOFF_CONNECTIONS of them) before it accepts another, and an idle worker takes it first.
A connection accepted less than FRESH_SECONDS ago counts even before its first bytes (a burst of
connections has sent nothing yet when the next is accepted); older ones that have sent nothing,
or only part of a request, hold no thread and do not count.
The wait releases the GIL, so the worker's threads keep serving; it delays new connections to a
busy worker, and the requests its main thread serves meanwhile, by 1.6 ms at most.

Serving on the main thread: a request that has arrived whole in the poller, and whose body needs
no decoding (ClientSocket.servable_here: a plain HTTP/1 head, and a Content-Length body within
GATHER_BYTES), needs nothing more from its client, so the main thread serves it at once instead
of handing it to a thread: no hand-off, and no thread of the worker contending with another for
the GIL (one interpreter runs one thread at a time anyway). While it does, nothing waits for the
client: reads come from the gathered bytes, gunicorn's blocking mode is not set, and what the
kernel does not take of the answer at once is handed, in order, to a thread that waits for the
client up to the write timeout. Pipelined requests that arrived with it are served next,
SERVED_IN_A_ROW at most before the worker's other connections get their turn. Threads serve what
must wait for a client: bodies larger than GATHER_BYTES, chunked or compressed, sent after
`100 Continue`, TLS. Measured with wrk (8 connections, 2 workers), against a thread per request:
p99 4.7 and 6.2 against 14.2 and 13.8 ms, 4 to 8 % more requests a second (docs/inference.md,
"Against the bare stack").

Keep-alive on a thread: gthread hands a kept-alive connection back to its main thread after every
response. When a thread of the worker is free, a thread that answered waits up to
KEEPALIVE_WAIT_SECONDS on its connection and serves the next request itself if it has arrived
whole; an idle connection, or one whose request has only begun, goes back to the poller. The
wait holds no CPU and no lock, and never the last free thread.

Reading: the worker reads gunicorn's settings once (SettledConfig: gunicorn looks each one up
anew, about 20 times a request) and the heads of its requests with requesthead.ServiceRequest,
which reads the common ones in one pass and leaves every other to gunicorn's parser.

Writing: gunicorn sends a response's head and its body in two writes; the socket wrapper holds
the head until the body's first write and sends both at once (one segment, one wake-up of the
client), and sends a held head before anything else happens on the socket. The answers' Date
header is formatted once a second (DateHeader), not once per answer, and the service's constant
headers are not checked again for every answer (ServiceResponse).

Closing: gunicorn ignores a Connection header set by the application; an answer the app marks
as ending the connection (hooks.mark_connection_close: 413, broken framing, 408) closes it, and
so does one to an `Expect: 100-continue` request whose body was never read: its `100 Continue`
is sent only when the app reads the body (and not at all when the client sent the body along).
A connection that ends after an answer lingers in the poller until the client closes its end (at
most 2 s), never in a thread or the main loop.

gunicorn's own error answers (a malformed request line or header, 414, 431, 408, an unknown
transfer coding, a path outside a trusted proxy's SCRIPT_NAME, and here a target that is no path:
`CONNECT host:443`, `OPTIONS *`) carry the service's security
headers and its JSON error shape, like every answer of the app, and are never a 5xx.
"""

from __future__ import annotations

import contextlib
import errno
import http
import json
import re
import select
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.http.errors import (
    ConfigurationProblem,
    LimitRequestLine,
    UnsupportedTransferCoding,
)
from gunicorn.http.parser import RequestParser
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from wine_quality.app.errors import RequestReadTimeout
from wine_quality.app.hooks import CLOSE_KEY, HSTS, SECURITY_HEADERS
from wine_quality.app.requesthead import ServiceRequest
from wine_quality.app.settings import integer

ACCEPT_BACKOFF_SECONDS = 0.0002
MAX_BACKOFF_CONNECTIONS = 8
FRESH_SECONDS = 0.1  # a new connection counts as held this long, whether it has sent or not
KEEPALIVE_WAIT_SECONDS = 0.01
SERVED_IN_A_ROW = 8  # pipelined requests of one connection the main thread serves in a row
COMBINED_WRITE_BYTES = 64 * 1024  # a larger body goes in its own write, not copied behind the head
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LINGER_SECONDS = 2.0  # gunicorn's close_graceful defaults
LINGER_DRAIN_BYTES = 64 * 1024
GATHER_BYTES = 16 * 1024  # a request start the poller holds per connection, at most
REQUEST_LINE = re.compile(rb"[!-~]+ [!-~]+ HTTP/[0-9]\.[0-9]")  # method, target, version
ERROR_CODES = {  # of gunicorn's own error answers; any other 4xx is bad_request
    408: "request_timeout",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
}
NOT_HTTP = "not an HTTP/1 request: it begins with no method (TLS sent to a plain HTTP port?)"
SERVE, ARRIVING = object(), object()  # what follows an answer on a kept-alive connection
_ABORT = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets and drops unsent data


class WriteTimeout(ConnectionResetError):
    """The client did not take the answer within GUNICORN_WRITE_TIMEOUT. A connection reset to
    gunicorn, which then closes the connection without logging a traceback."""

    def __init__(self, seconds: float) -> None:
        super().__init__(errno.ECONNRESET, f"answer not taken within {seconds:g} s")


class NotAPath(Exception):
    """A request target in authority form (`CONNECT host:port`) or asterisk form (`OPTIONS *`):
    the forms for a proxy and for a server as a whole, not a resource of this one."""

    def __init__(self, target: str) -> None:
        shown = target if len(target) <= 64 else target[:64] + "..."
        super().__init__(
            f"request target {shown!r} is not a path: this server is not a proxy, and answers "
            "requests for its paths (/...) or absolute URLs (http://host/...)"
        )


class RequestLineTooLong(LimitRequestLine):
    """gunicorn's LimitRequestLine, told by the limit alone: gunicorn quotes the bytes it held
    when it gave up (16384 > 4094, as the poller hands it 16 KiB), which is not the line's
    length."""

    def __str__(self) -> str:
        return f"Request Line is too large (longer than {self.max_size} bytes)"


def _is_a_path(target: str) -> bool:
    """Origin form (/path) or absolute form (http://host/path), the forms for a resource."""
    return target.startswith("/") or target[:8].lower().startswith(("http://", "https://"))


class ClientSocket:
    """A client socket whose reads fail with RequestReadTimeout once `deadline` has passed
    (time.monotonic(); None: no deadline) and whose writes of one answer fail with WriteTimeout
    once `write_timeout` seconds have passed since its first byte. After `hold_next_write()` its
    next write (the response head) waits for the one after it, or for any other use of the
    socket. gunicorn's `100 Continue` waits for the application's first read of the body, and
    is never sent when the answer comes first (`decline_continue`).
    Everything else is the socket's own."""

    def __init__(self, sock: socket.socket, write_timeout: float | None = None) -> None:
        self._sock = sock
        self._plain = type(sock) is socket.socket  # not TLS: recv and send take flags
        self._hold = False
        self._held = b""
        self._continue = False
        self._sent_along = False
        self.deadline: float | None = None
        self.write_timeout = write_timeout
        self._write_deadline: float | None = None
        self.aborted = False
        self._gathered = bytearray()
        self._needed: int | None = None  # bytes the gathered request needs; None: head incomplete
        self._coded = False  # the gathered head names a Content-Encoding
        self.started: float | None = None  # when the request's first byte arrived
        self.unlike_http = False  # the gathered bytes cannot begin an HTTP/1 request
        self.served_here = False  # the worker's main thread serves the request: never wait
        self._kept: list[bytes] = []  # of an answer served here, what the client did not take

    def gather(self) -> bool:
        """Take what the client has sent so far, without waiting (the poller found the socket
        readable); whether a thread should take the request now: its head has arrived, and with
        it the body when Content-Length announces one that fits in GATHER_BYTES; or the head is
        malformed, the client closed its end or failed, or GATHER_BYTES have arrived. recv()
        returns the gathered bytes first."""
        if not self._plain:  # TLS: the bytes on the wire are not the request
            return True
        try:
            data = self._sock.recv(GATHER_BYTES - len(self._gathered), socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True  # the thread's read meets the end of the connection
        if not data:
            return True
        if self.started is None:
            self.started = time.monotonic()
        self._add(data)
        return self._whole()

    def regather(self, data: bytes) -> bool:
        """Bytes the last request's reader took from the next one (a pipelining client) go back
        in front of the socket; whether they hold the whole request (else gather() collects
        the rest). Its read deadline runs from now: the last answer is written."""
        self.started = time.monotonic()
        self._add(data)
        return self._whole()

    def _add(self, data: bytes) -> None:
        scanned = len(self._gathered)
        self._gathered += data
        if self._needed is None:
            self._needed = bytes_needed(self._gathered, scanned)
            self.unlike_http = self._needed == 0 and unlike_http(self._gathered)
            self._coded = bool(self._needed) and names_a_coding(self._gathered)

    def _whole(self) -> bool:
        return len(self._gathered) >= (self._needed if self._needed is not None else GATHER_BYTES)

    def servable_here(self) -> bool:
        """Whether the gathered request can be served without ever waiting: a plain HTTP/1
        request whose head and whole body (Content-Length) have arrived, and whose body needs no
        decoding (a decoded body may be large, and large bodies may wait for a parsing slot)."""
        return bool(self._needed) and not self._coded and len(self._gathered) >= self._needed

    def recv(self, size: int, flags: int = 0) -> bytes:
        if self._gathered:  # all at once: gunicorn's reader keeps what it does not need yet
            data, self._gathered, self._needed = bytes(self._gathered), bytearray(), None
            return data
        if self.served_here:  # the request arrived whole: reading beyond it would wait
            raise RequestReadTimeout()
        if self._continue:  # the application reads the body: invite the client to send it
            self._continue = False
            self._sock.sendall(CONTINUE)  # not the answer: its write timeout starts later
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

    def send(self, data: bytes, flags: int = 0) -> int:
        if data == CONTINUE:  # gunicorn's answer to Expect: 100-continue, sent before the app ran
            self._continue = not self._sent_along
            return len(data)
        self.flush()
        return self._sock.send(data, flags)

    def body_sent_along(self) -> None:
        """The client sent more than the request's head without waiting for `100 Continue`
        (its body, or a next request): none is sent (RFC 9110, 10.1.1: the server MAY omit it),
        and the connection stays readable."""
        self._sent_along = True

    def decline_continue(self) -> bool:
        """Whether a `100 Continue` was still waiting (the answer came before any read of the
        body, which the client may or may not send now); it is dropped."""
        waiting, self._continue = self._continue, False
        return waiting

    def hold_next_write(self) -> None:
        self._hold = True

    def sendall(self, data: bytes, flags: int = 0) -> None:
        self._continue = False  # an answer is final: never invite the body after it
        if self._hold:
            self._hold, self._held = False, bytes(data)
            return
        if self._held and len(data) <= COMBINED_WRITE_BYTES:
            data, self._held = self._held + data, b""
        self.flush()
        self._send(data, flags)

    def flush(self) -> None:
        """Send a held write; stop holding the next one."""
        self._hold = False
        if self._held:
            held, self._held = self._held, b""
            self._send(held)

    def end_answer(self) -> None:
        """The answer is written (or kept, then its write timeout goes on): the next one gets its
        own write timeout."""
        if not self._kept:
            self._write_deadline = None
        self._continue = self._sent_along = False
        self.started = None

    def has_kept(self) -> bool:
        return bool(self._kept)

    def send_kept(self) -> None:
        """Send what the client did not take at once of an answer served on the main thread,
        waiting for it until the answer's write timeout (in a thread)."""
        kept, self._kept = self._kept, []
        for data in kept:
            self._send(data)
        self.end_answer()

    def send_nowait(self, data: bytes) -> None:
        """Send what the kernel takes at once, if anything (an answer from the main thread,
        which must never wait for a client)."""
        with contextlib.suppress(OSError):
            self._sock.send(data, socket.MSG_DONTWAIT)

    def _send(self, data: bytes, flags: int = 0) -> None:
        if self.served_here:
            self._send_or_keep(data, flags)
            return
        if self.write_timeout is None:
            self._sock.sendall(data, flags)
            return
        if self._write_deadline is None:
            self._write_deadline = time.monotonic() + self.write_timeout
        if self._plain:  # the common case: the kernel takes it all at once, no timeout needed
            data = self._send_at_once(data, flags)
            if not data:
                return
        remaining = self._write_deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            self._sock.settimeout(remaining)
            try:
                self._sock.sendall(data, flags)
            finally:
                self._sock.settimeout(None)
        except TimeoutError:
            self._abort()
            raise WriteTimeout(self.write_timeout) from None

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """A file's bytes (gunicorn sends files with it) through the same writes as every answer:
        under the write timeout, and never waiting on the main thread; socket.sendfile would
        bypass both."""
        file.seek(offset)
        sent = 0
        while count is None or sent < count:
            left = COMBINED_WRITE_BYTES if count is None else count - sent
            piece = file.read(min(COMBINED_WRITE_BYTES, left))
            if not piece:
                break
            self.sendall(piece)
            sent += len(piece)
        return sent

    def _send_or_keep(self, data: bytes, flags: int) -> None:
        """Send what the kernel takes at once; keep the rest, and every later write, in order for
        send_kept."""
        if self._write_deadline is None and self.write_timeout is not None:
            self._write_deadline = time.monotonic() + self.write_timeout
        if not self._kept:
            data = self._send_at_once(data, flags)
            if not data:
                return
        self._kept.append(bytes(data))

    def _send_at_once(self, data: bytes, flags: int) -> memoryview:
        """Send what the kernel takes without waiting; the rest (empty when it took all)."""
        try:
            sent = self._sock.send(data, flags | socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        return memoryview(data)[sent:]

    def _abort(self) -> None:
        """Make the coming close() a reset that drops the unsent answer from the kernel's
        buffer, instead of a close that keeps it until the client reads or the kernel gives up."""
        self.aborted = True
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)

    # What gunicorn calls around every request, defined here rather than found through
    # __getattr__ (which Python reaches only after building an AttributeError).
    def settimeout(self, value: float | None) -> None:
        """The socket's own settimeout, skipped when it would not change anything (gthread sets
        blocking mode before every request; the system call is the same each time), and while
        the main thread serves a request: the socket stays as the poller holds it, non-blocking
        (it reads only gathered bytes and writes with MSG_DONTWAIT)."""
        self.flush()
        if self.served_here:
            return
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


def bytes_needed(gathered: bytearray, scanned: int) -> int | None:
    """How many bytes of `gathered` a thread should wait for, looking only at what arrived after
    the first `scanned`: None while the head is incomplete; the head and its body when the head
    announces the body's length and the poller may wait for it; 0 (now) otherwise, and for a
    head with a bare LF, which gunicorn refuses without waiting for more."""
    end = gathered.find(b"\r\n\r\n", max(scanned - 3, 0))
    if end < 0:
        bare_lf = gathered.count(b"\n", scanned) != gathered.count(b"\r\n", max(scanned - 1, 0))
        return 0 if bare_lf or _not_a_request_line(gathered, scanned) else None
    length = _announced_length(bytes(gathered[:end]))
    whole = end + 4 + (length or 0)
    return whole if length is not None and whole <= GATHER_BYTES else 0


def names_a_coding(gathered: bytearray) -> bool:
    """Whether the request's head (complete in `gathered`) has a Content-Encoding header."""
    head = gathered[: gathered.find(b"\r\n\r\n") + 2]
    return b"\r\ncontent-encoding:" in head.lower()


def unlike_http(gathered: bytearray) -> bool:
    """Whether the bytes cannot begin an HTTP/1 request: every method begins with an ASCII
    letter, after one empty line at most (a TLS handshake begins with byte 22, and its line
    never ends)."""
    start = 2 if gathered.startswith(b"\r\n") else 0
    first = gathered[start : start + 1]
    return bool(first) and not first.isalpha() and gathered != b"\r"  # the empty line may come


def _not_a_request_line(gathered: bytearray, scanned: int) -> bool:
    """Whether the first line cannot start an HTTP/1 request: it begins unlike one, or it has
    just ended and is no request line (gunicorn answers that 400 at once). The poller would
    wait for a head that never comes."""
    if unlike_http(gathered):
        return True
    start = 2 if gathered.startswith(b"\r\n") else 0
    line_end = gathered.find(b"\r\n", start)
    newly_ended = line_end >= 0 and line_end + 1 >= scanned
    return newly_ended and not REQUEST_LINE.fullmatch(gathered, start, line_end)


def _announced_length(head: bytes) -> int | None:
    """The body length a head announces when the poller can wait for the body: one
    Content-Length of plain digits (none: 0), no Transfer-Encoding, and no Expect (a client
    waiting for `100 Continue` sends no body before it). None: read the body in a thread."""
    length = None
    for line in head.lower().split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name in (b"transfer-encoding", b"expect"):
            return None
        if name == b"content-length":
            value = value.strip(b" \t")
            if length is not None or not value.isdigit() or len(value) > 9:
                return None
            length = int(value)
    return length or 0


class SettledConfig:
    """gunicorn's settings, read once by a worker. gunicorn's Config finds a setting in its
    __getattr__, called only after Python's own lookup has failed and built an AttributeError:
    about 1.5 µs a read, and a request reads a setting some 20 times (the parser alone 16).
    Config's properties (some named as a setting, such as worker_class) and methods are read
    from it once, then kept; the settings of a running worker never change."""

    def __init__(self, config: Any) -> None:
        shadowed = set(dir(type(config)))
        self.__dict__.update(
            (name, setting.get())
            for name, setting in config.settings.items()
            if name not in shadowed
        )
        self._config = config

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._config, name)
        setattr(self, name, value)
        return value


def _readable(sock: Any, seconds: float) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(seconds * 1000))


def error_page(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's util.write_error, answering in the service's error shape with its headers."""
    util.write_nonblock(sock, error_answer(status_int, reason, mesg))


def error_answer(status_int: int, reason: str, mesg: str) -> bytes:
    body = json.dumps(
        {"error": {"status": status_int, "code": _code(status_int), "message": mesg or reason}}
    ).encode()
    head = [f"HTTP/1.1 {status_int} {_phrase(status_int, reason)}", "Connection: close"]
    head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in SECURITY_HEADERS.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _phrase(status: int, reason: str) -> str:
    """The standard reason phrase of `status` (gunicorn passes "Bad Request" with other codes)."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return reason


class ConnectionCloser:
    """The worker's WSGI application: the app, and the connection closed after its answer when
    the app marked it (hooks.mark_connection_close: gunicorn drops the app's own Connection
    header) or answered an `Expect: 100-continue` request without reading the body, which the
    client may then send or not (RFC 9110, 10.1.1): the connection cannot be read reliably."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        result = self.app(environ, start_response)
        sock = environ.get("gunicorn.socket")
        declined = isinstance(sock, ClientSocket) and sock.decline_continue()
        if declined or environ.get(CLOSE_KEY):
            # gthread passes its Response's start_response; the head is not written yet
            start_response.__self__.force_close()
        return result


class Answered:
    """A request the main thread answered, as the finished future gthread's finish_request
    takes."""

    def __init__(self, result: Any) -> None:
        self._result = result

    def cancelled(self) -> bool:
        return False

    def exception(self) -> None:
        return None

    def result(self) -> Any:
        return self._result


def _asks_to_close(req: Any) -> bool:
    """Whether any Connection header of the request carries the `close` option (gunicorn reads
    only a first header that is exactly "close" or "keep-alive")."""
    for name, value in req.headers:
        if name == "CONNECTION" and "close" in (t.strip(" \t").lower() for t in value.split(",")):
            return True
    return False


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
    return ERROR_CODES.get(status, "bad_request" if status < 500 else "server_error")


# Headers the app sends with most answers, each of them valid and kept as it is by gunicorn's
# check of every header name and value (tests/test_worker_sockets.py holds this).
CHECKED_HEADERS = frozenset(
    [
        *SECURITY_HEADERS.items(),
        ("Strict-Transport-Security", HSTS),
        ("Content-Type", "application/json"),
    ]
)


class ServiceResponse(wsgi.Response):
    """gunicorn's response, which checks every header name and value the app gives before it
    sends them (about 1 µs a header); the service's own constant headers (CHECKED_HEADERS, 8 of a
    typical answer's 10) are taken as they are."""

    def process_headers(self, headers: list[tuple[str, str]]) -> None:
        for header in headers:
            if header in CHECKED_HEADERS:
                self.headers.append(header)
            else:
                super().process_headers((header,))


class Connection(TConn):
    """gthread's connection, whose HTTP/1 requests are read by requesthead.ServiceRequest."""

    def init(self) -> None:
        super().init()
        if type(self.parser) is RequestParser:
            self.parser.mesg_class = ServiceRequest


class ServiceWorker(ThreadWorker):
    """gthread with a per-request read deadline (GUNICORN_READ_TIMEOUT) and write timeout
    (GUNICORN_WRITE_TIMEOUT), new connections waiting in the poller until they send, requests
    that arrived whole served on the main thread, an accept that leaves new connections to idle
    workers first, threads that serve their kept-alive connection's next request themselves
    while another thread is free, one write per small response, and closing connections that
    linger in the poller, not in a thread."""

    def init_process(self) -> None:
        self.cfg = SettledConfig(self.cfg)
        self._read_timeout = integer("GUNICORN_READ_TIMEOUT")
        self._write_timeout = integer("GUNICORN_WRITE_TIMEOUT")
        # gunicorn writes its own error pages through this function (workers/base.py), formats
        # every answer's Date header with this one (http/wsgi.py) and closes connections that
        # end after an answer with this one (gthread.py)
        util.write_error = error_page
        if not isinstance(util.http_date, DateHeader):
            util.http_date = DateHeader(util.http_date)
        util.close_graceful = self._close_lingering
        wsgi.Response = ServiceResponse  # the class gunicorn answers every request with
        self._main_thread = threading.get_ident()
        self._lingering: dict[Any, list[float]] = {}  # socket -> [deadline, bytes drained]
        self._arriving: deque[Any] = deque()  # connections whose request the poller collects
        self._threads = self.cfg.threads
        self._threads_lock = threading.Lock()
        self._busy_threads = 0  # threads in handle(), serving or waiting for a next request
        super().init_process()

    def run(self) -> None:
        # wrapped after gunicorn's post_worker_init hook, which reads the Flask app's extensions
        self.wsgi = ConnectionCloser(self.wsgi)
        super().run()

    def accept(self, listener: Any) -> None:
        held = self._connections_held()
        if held > 0:  # let an idle worker of the pod take it first
            time.sleep(min(held, MAX_BACKOFF_CONNECTIONS) * ACCEPT_BACKOFF_SECONDS)
        try:
            client, address = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client.setblocking(True)
        self.enqueue_req(Connection(self.cfg, client, address, listener.getsockname()))

    def _connections_held(self) -> int:
        """The connections that count toward the accept backoff: all but those that have sent
        nothing, or part of a request, for longer than FRESH_SECONDS (a flood of them would
        slow down every accept). Fresh ones count: a client that opens its connections at once
        has sent nothing on any of them yet, and they would all land on this worker."""
        fresh_since = time.monotonic() + self._read_timeout - FRESH_SECONDS
        fresh = 0
        for conn in reversed(self.pending_conns):  # newest first: their deadlines are in order
            if conn.timeout < fresh_since:
                break
            fresh += 1
        return self.nr_conns - len(self.pending_conns) - len(self._arriving) + fresh

    def enqueue_req(self, conn: Any) -> None:
        """A request has arrived (on the main thread: the poller's callbacks and finish_request
        call this): the main thread serves it if it can without waiting, else a thread does."""
        if not isinstance(conn.sock, ClientSocket):
            conn.sock = ClientSocket(conn.sock, self._write_timeout)
        if not conn.initialized and not conn.data_ready and self.alive:
            self._wait_for_first_bytes(conn)
            return
        if conn.sock.servable_here():
            self._serve_here(conn)
            return
        super().enqueue_req(conn)

    def _serve_here(self, conn: Any) -> None:
        """Serve on the main thread a request that has arrived whole, and the next ones of the
        connection that arrived with it (pipelined), SERVED_IN_A_ROW at most before the worker's
        other connections get their turn. What the client does not take at once of an answer
        goes to a thread, which waits for it up to the write timeout."""
        sock = conn.sock
        for _ in range(SERVED_IN_A_ROW):
            sock.served_here = True
            try:
                result = self._handle_one(conn)
            finally:
                sock.served_here = False
            if sock.has_kept():
                future = self.tpool.submit(self._send_kept, conn, result)
                future.add_done_callback(
                    lambda done: self.method_queue.defer(self.finish_request, conn, done)
                )
                return
            ahead = conn.parser.unreader.take_buffered() if result is True else b""
            if not ahead:
                self.finish_request(conn, Answered(result))
                return
            if not sock.regather(ahead):
                self._await_rest(conn)
                return
            if not sock.servable_here():
                super().enqueue_req(conn)
                return
        self.method_queue.defer(self.enqueue_req, conn)

    def _send_kept(self, conn: Any, result: Any) -> Any:
        """In a thread: the rest of an answer the main thread served; False if the client did
        not take it (the connection is closed)."""
        with self._busy():
            try:
                conn.sock.send_kept()
            except WriteTimeout:
                self._log_write_timeout(conn)
                return False
            except OSError:
                return False
            return result

    def _wait_for_first_bytes(self, conn: Any) -> None:
        """A new connection waits in the poller, holding no thread, until it sends something;
        one that sends nothing within GUNICORN_READ_TIMEOUT is closed (gthread's murder_pending).
        gthread itself gives a new connection a thread that waits up to 5 s for its first bytes,
        so a few dozen silent connections would delay every other request by seconds."""
        conn.timeout = time.monotonic() + self._read_timeout
        self.pending_conns.append(conn)
        self.poller.register(
            conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn)
        )

    def on_pending_socket_readable(self, conn: Any, client: Any) -> None:
        self.poller.unregister(client)
        self.pending_conns.remove(conn)
        conn.data_ready = True
        self._gather(conn)

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._gather(conn)

    def _gather(self, conn: Any) -> None:
        """A request has begun to arrive: a thread takes it once it is whole (ClientSocket.gather),
        until then the poller collects it."""
        if conn.sock.gather():
            self.enqueue_req(conn)
        else:
            self._await_rest(conn)

    def _await_rest(self, conn: Any) -> None:
        """Collect the rest of a request in the poller, holding no thread, until its read deadline
        (GUNICORN_READ_TIMEOUT from its first byte): then it gets 408."""
        if conn.sock.started is None:
            conn.sock.started = time.monotonic()
        conn.timeout = conn.sock.started + self._read_timeout
        if not self.alive:
            conn.timeout = min(conn.timeout, time.monotonic() + STOP_KEEPALIVE_LINGER)
        self._arriving.append(conn)
        self.poller.register(
            conn.sock, selectors.EVENT_READ, partial(self._on_arriving_readable, conn)
        )

    def _on_arriving_readable(self, conn: Any, _client: Any) -> None:
        if conn.sock.gather():
            self.poller.unregister(conn.sock)
            self._arriving.remove(conn)
            self.enqueue_req(conn)

    def finish_request(self, conn: Any, fs: Any) -> None:
        result = fs.result() if not fs.cancelled() and fs.exception() is None else None
        if result is ARRIVING:
            self._await_rest(conn)  # a kept-alive connection's next request, begun in a thread
            return
        ahead = conn.parser.unreader.take_buffered() if result is True else b""
        if ahead:  # pipelined behind an answer a thread finished sending: gathered like any other
            if conn.sock.regather(ahead):
                self.enqueue_req(conn)
            else:
                self._await_rest(conn)
            return
        super().finish_request(conn, fs)

    def _cap_keepalive(self, deadline: float) -> None:
        """On stop, gthread gives kept-alive connections until `deadline` (2 s) to send a last
        request; connections that have sent nothing yet, or only part of a request, get no
        longer (not the read timeout)."""
        super()._cap_keepalive(deadline)
        for conn in (*self.pending_conns, *self._arriving):
            conn.timeout = min(conn.timeout, deadline)

    def handle(self, conn: Any) -> Any:
        with self._busy():
            result = self._handle_one(conn)
            while result is True:
                arrival = self._next_request(conn)
                if arrival is not SERVE:
                    return arrival
                result = self._handle_one(conn)
            return result

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        """Count this thread as busy (serving, or waiting for a client) while in the block."""
        with self._threads_lock:
            self._busy_threads += 1
        try:
            yield
        finally:
            with self._threads_lock:
                self._busy_threads -= 1

    def _handle_one(self, conn: Any) -> Any:
        if conn.sock.unlike_http:  # gunicorn would wait for the end of a line that never comes
            self.log.warning("Invalid request from ip=%s: %s", (conn.client or ("-",))[0], NOT_HTTP)
            with contextlib.suppress(OSError):
                error_page(conn.sock, 400, "Bad Request", NOT_HTTP)
            return False
        conn.sock.deadline = (conn.sock.started or time.monotonic()) + self._read_timeout
        try:
            return super().handle(conn)
        finally:
            conn.sock.deadline = None

    def _next_request(self, conn: Any) -> Any:
        """What becomes of a kept-alive connection after an answer. SERVE: this thread serves its
        next request, which has arrived whole (read ahead with the last body, or within
        KEEPALIVE_WAIT_SECONDS while the worker runs and another thread is free); ARRIVING: it
        has begun, and the poller collects the rest (gthread would hand a request begun in the
        read-ahead to a thread); True: it goes back to the poller, idle."""
        ahead = conn.parser.unreader.take_buffered()  # read with the last body: pipelined
        if ahead:
            return SERVE if conn.sock.regather(ahead) else ARRIVING
        if not self.alive or self._busy_threads >= self._threads:
            return True
        if not _readable(conn.sock, KEEPALIVE_WAIT_SECONDS):
            return True
        return SERVE if conn.sock.gather() else ARRIVING

    def handle_request(self, req: Any, conn: Any) -> Any:
        if req.version > (1, 1):  # answer as what the server is: HTTP/1.1 (RFC 9110, 6.2)
            req.version = (1, 1)
        if _asks_to_close(req):
            req.must_close = True
        if not _is_a_path(req.uri):
            raise NotAPath(req.uri)
        if req._expected_100_continue and conn.parser.unreader.buf.getvalue():
            conn.sock.body_sent_along()
        conn.sock.hold_next_write()
        try:
            return super().handle_request(req, conn)
        except WriteTimeout:
            self._log_write_timeout(conn)
            raise
        finally:
            conn.sock.deadline = None  # the request is read; the drain has gthread's own limit
            with contextlib.suppress(OSError):
                conn.sock.flush()
            conn.sock.end_answer()

    def _log_write_timeout(self, conn: Any) -> None:
        self.log.info(
            "answer to %s not taken within %s s: connection closed",
            (conn.client or ("-",))[0],
            self._write_timeout,
        )

    def _log_read_timeout(self, addr: Any) -> None:
        self.log.info(
            "request from %s not read within %s s: 408", (addr or ("-",))[0], self._read_timeout
        )

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        client_address = (addr or ("-",))[0]
        if isinstance(exc, RequestReadTimeout):
            self._log_read_timeout(addr)
            with contextlib.suppress(OSError):
                error_page(client, 408, "Request Timeout", RequestReadTimeout.MESSAGE)
            return
        if isinstance(exc, UnsupportedTransferCoding | ConfigurationProblem | NotAPath):
            # gunicorn answers 501 to an unknown transfer coding, and 500 to a path outside the
            # SCRIPT_NAME a trusted proxy sent; a target that is no path would reach the app as
            # an odd one (CONNECT host:443 as /443): all come from the request, never a 5xx here
            self.log.warning("Invalid request from ip=%s: %s", client_address, exc)
            with contextlib.suppress(OSError):
                error_page(client, 400, "Bad Request", str(exc))
            return
        if isinstance(exc, LimitRequestLine) and exc.max_size is not None:
            exc = RequestLineTooLong(exc.size, exc.max_size)
        super().handle_error(req, client, addr, exc)

    # Closing. gthread closes a connection that ends after an answer with util.close_graceful
    # (RFC 9112, 9.6: send FIN, then read what the client still sends, so that unread bytes do
    # not turn the close into a reset that could destroy the answer). It does that on the
    # worker's main thread, blocking it up to 2 s while the client keeps its end open: a client
    # sending "Connection: close" requests and never closing stalled the whole worker. Here the
    # half-closed socket waits in the poller instead.

    def _close_lingering(
        self, sock: Any, timeout: float = LINGER_SECONDS, max_drain: int = LINGER_DRAIN_BYTES
    ) -> None:
        if getattr(sock, "aborted", False):  # a write timed out: reset, drop the unsent answer
            util.close(sock)
            return
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            util.close(sock)
            return
        deadline = time.monotonic() + timeout
        if threading.get_ident() == self._main_thread:
            self._linger(sock, deadline)
        else:  # the poller belongs to the main thread
            self.method_queue.defer(self._linger, sock, deadline)

    def _linger(self, sock: Any, deadline: float) -> None:
        if len(self._lingering) >= self.worker_connections:
            util.close(sock)
            return
        try:
            self.poller.register(sock, selectors.EVENT_READ, partial(self._drain_lingering, sock))
        except (OSError, ValueError, KeyError):
            util.close(sock)
            return
        self._lingering[sock] = [deadline, 0]

    def _drain_lingering(self, sock: Any, _fileobj: Any = None) -> None:
        try:
            data = sock.recv(LINGER_DRAIN_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        entry = self._lingering.get(sock)
        if entry is None:
            return
        entry[1] += len(data)
        if not data or entry[1] >= LINGER_DRAIN_BYTES:
            self._end_linger(sock)

    def _end_linger(self, sock: Any) -> None:
        self._lingering.pop(sock, None)
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.poller.unregister(sock)
        util.close(sock)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """gthread's poll, woken by the first deadline of a connection in the poller as well:
        its loop wakes once a second otherwise, so a 408, a close on stop or the end of a
        linger came up to a second late."""
        firsts = [queue[0].timeout for queue in (self.pending_conns, self._arriving) if queue]
        if self._lingering:
            firsts.append(next(iter(self._lingering.values()))[0])
        if firsts:
            timeout = min(timeout, max(min(firsts) - time.monotonic(), 0.0))
        super().wait_for_and_dispatch_events(timeout)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self._arriving and self._arriving[0].timeout <= now:
            self._read_timed_out(self._arriving.popleft())
        for sock, (deadline, _) in list(self._lingering.items()):
            if deadline > now:
                break  # in the order they started, all with the same linger time
            self._end_linger(sock)

    def _read_timed_out(self, conn: Any) -> None:
        """A request the poller was collecting did not arrive within its read deadline."""
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.poller.unregister(conn.sock)
        self.nr_conns -= 1
        self._log_read_timeout(conn.client)
        conn.sock.send_nowait(error_answer(408, "Request Timeout", RequestReadTimeout.MESSAGE))
        self._close_lingering(conn.sock)
