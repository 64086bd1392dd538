"""Read a request body within the service's limit, whatever its framing.

Every route that takes a body reads it here, never through `request.get_data()`:

- over WINE_QUALITY_MAX_BODY_BYTES is 413, for a Content-Length body before a byte is read, and for
  a chunked body as soon as the limit is passed (never a body cut at the limit and parsed);
- broken framing (an invalid chunk size, a missing chunk terminator, a bad trailer, a body shorter
  than its Content-Length) is 400 naming the problem, not an unhandled error;
- a client that sends its body slower than GUNICORN_READ_TIMEOUT allows (wine_quality.app.worker)
  gets 408.

The body is read in pieces into one buffer, so a body costs its own size in memory and no more.

Memory per worker is bounded by how many large bodies it holds at once, not by its threads: a
body over LARGE_BODY_BYTES (or chunked, its size unknown) takes one of LARGE_BODY_SLOTS slots
before a byte is read and keeps it until the answer is built (parsing and predicting a
10,000-row batch costs about 20 MiB whatever the body's size). A request that finds every slot
taken waits up to SLOT_WAIT_SECONDS, then gets 503 with Retry-After; small requests and slow
clients never wait for a slot.
"""

from __future__ import annotations

import io
import threading

from flask import g, request, request_tearing_down
from gunicorn.http.errors import NoMoreData, ParseException

from wine_quality.app.errors import APIError, RequestReadTimeout, framing_error

READ_SIZE = 256 * 1024
LARGE_BODY_BYTES = 64 * 1024
LARGE_BODY_SLOTS = 2
SLOT_WAIT_SECONDS = 5.0
_large_bodies = threading.BoundedSemaphore(LARGE_BODY_SLOTS)


class Busy(APIError):
    def __init__(self) -> None:
        super().__init__(
            503,
            f"this worker is reading {LARGE_BODY_SLOTS} large bodies already; retry in a moment",
            "busy",
            close=True,
            retry_after=1,
        )


def _take_large_body_slot() -> None:
    """Hold one of the worker's large-body slots until the end of this request."""
    if not _large_bodies.acquire(timeout=SLOT_WAIT_SECONDS):
        raise Busy()
    g.large_body_slot = True


@request_tearing_down.connect
def _release_large_body_slot(_app: object, **_extra: object) -> None:
    if g.pop("large_body_slot", False):
        _large_bodies.release()


class BodyTooLarge(APIError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"request body larger than {limit} bytes (WINE_QUALITY_MAX_BODY_BYTES)",
            "payload_too_large",
            close=True,
        )


def read_body(limit: int) -> bytes:
    """The whole body, at most `limit` bytes; raises BodyTooLarge or the framing APIError."""
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge(limit)
    environ = request.environ
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    if length is None and not environ.get("wsgi.input_terminated"):
        return b""  # neither a length nor a server that ends the stream: no body (WSGI)
    if length is None or length > LARGE_BODY_BYTES:
        _take_large_body_slot()
    wanted = limit + 1 if length is None else length
    buffer = io.BytesIO()
    try:
        if length is not None and length <= READ_SIZE:  # the common small body: one read
            piece = stream.read(length)
            if len(piece) == length:
                return piece
            buffer.write(piece)
        while buffer.tell() < wanted:
            piece = stream.read(min(READ_SIZE, wanted - buffer.tell()))
            if not piece:
                break
            buffer.write(piece)
    except (ParseException, NoMoreData, RequestReadTimeout, TimeoutError) as exc:
        raise framing_error(exc) from None
    if buffer.tell() > limit:
        raise BodyTooLarge(limit)
    if length is not None and buffer.tell() < length:
        raise framing_error(NoMoreData())
    return buffer.getvalue()
