"""Read a request body within the service's limit, whatever its framing.

Every route that takes a body reads it here, never through `request.get_data()`; the 411 and
415 answers come before a byte of it is read:

- a body of unknown length (neither Content-Length nor Transfer-Encoding: chunked) is 411 naming
  both: HTTP ends such a request at its headers, so its body would be read as the next request
  (the connection is closed; Content-Length: 0 is an empty body, not a 411);
- a body compressed with `Content-Encoding: gzip` (or `x-gzip`) or `deflate` (the zlib format) is
  decoded while it is read, to at most WINE_QUALITY_MAX_BODY_BYTES too (413 beyond: a small
  compressed body cannot expand into a large one), and a corrupt or cut one is 400 naming the
  coding and the problem;
- a body in a coding the service does not decode is 415 naming it: another Content-Encoding, or
  more than one, a transfer coding other than chunked (`Transfer-Encoding: gzip, chunked`), a
  media type's charset other than UTF-8 (`utf-8` or `utf8` in any case, or US-ASCII, its subset;
  no charset is UTF-8 too);
- over WINE_QUALITY_MAX_BODY_BYTES is 413, for a Content-Length body before a byte is read, and for
  a chunked body as soon as the limit is passed (never a body cut at the limit and parsed);
- broken framing (an invalid chunk size, a missing chunk terminator, a bad trailer, a body shorter
  than its Content-Length, a connection closed or reset before the end of the body) is 400
  naming the problem, not an unhandled error;
- a client that sends its body slower than GUNICORN_READ_TIMEOUT allows (wine_quality.app.worker)
  gets 408.

The body is read in pieces into one buffer, so a body costs its own size in memory and no more;
a compressed body is decoded piece by piece as it arrives, so it costs its decoded size (at most
the limit) and a piece.

Memory per worker: each of its GUNICORN_THREADS threads holds at most one body, of at most
WINE_QUALITY_MAX_BODY_BYTES (1x its size), while it is received or waits for a slot; and at most
LARGE_BODY_SLOTS bodies over LARGE_BODY_BYTES are parsed and predicted at a time, each adding the
parse's own cost (about 20 MiB for a 10,000-row batch, about 0.3x the body for the worst bodies
at the limit). So a worker holds at most GUNICORN_THREADS bodies plus LARGE_BODY_SLOTS parses:
16 x 8 MiB + 2 parses with the defaults (156 to 165 MiB above idle measured with 16 bodies of
8 MiB at once: README, "Slow and hostile clients"). A slot is taken only once the whole body
has arrived, and kept until the answer is built (parsing, predicting, building it: bounded CPU
work, never a wait on a client), so slow uploaders cannot hold one. A request that finds every
slot taken waits up to SLOT_WAIT_SECONDS, then gets 503 with Retry-After: the worker is really
overloaded. Bodies of at most LARGE_BODY_BYTES never wait for a slot.
"""

from __future__ import annotations

import io
import threading
import zlib
from collections.abc import Mapping
from typing import Any

from flask import g, request, request_tearing_down
from gunicorn.http.errors import NoMoreData, ParseException

from wine_quality.app.errors import APIError, RequestReadTimeout, framing_error

READ_SIZE = 256 * 1024
LARGE_BODY_BYTES = 64 * 1024
LARGE_BODY_SLOTS = 2
SLOT_WAIT_SECONDS = 5.0
UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})  # ASCII text is UTF-8
GZIP_MAGIC = b"\x1f\x8b"
MAX_GZIP_MEMBERS = 1000  # blocked gzip (64 KiB members) decodes to 64 MB in that many
DECODE_SLICE_BYTES = 16 * 1024  # zlib copies what follows a member's end: at most this much
DECODED = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_large_bodies = threading.BoundedSemaphore(LARGE_BODY_SLOTS)


class Busy(APIError):
    def __init__(self) -> None:
        super().__init__(
            503,
            f"this worker is parsing {LARGE_BODY_SLOTS} large bodies already; retry in a moment",
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
    def __init__(self, limit: int, decoded: str = "") -> None:
        once = f" once decoded from {decoded}" if decoded else ""
        super().__init__(
            413,
            f"request body larger than {limit} bytes{once} (WINE_QUALITY_MAX_BODY_BYTES)",
            "payload_too_large",
            close=True,
        )


class BodyDecoder:
    """A gzip or deflate body, decoded piece by piece as it is read, to at most `limit` bytes.
    A gzip body may have several members (RFC 1952), up to MAX_GZIP_MEMBERS; anything after a
    deflate stream, or a stream that stops before its end, is an error; an empty body is empty."""

    def __init__(self, coding: str, limit: int) -> None:
        self.coding, self.limit = coding, limit
        self._decoded = io.BytesIO()
        self._stream = zlib.decompressobj(DECODED[coding])
        self._members = 1
        self._fed = False

    def feed(self, piece: bytes) -> None:
        self._fed = self._fed or bool(piece)
        view = memoryview(piece)
        for start in range(0, len(view), DECODE_SLICE_BYTES):
            self._decode(view[start : start + DECODE_SLICE_BYTES])

    def _decode(self, piece: bytes | memoryview) -> None:
        try:
            while piece:
                room = self.limit + 1 - self._decoded.tell()  # at least 1: max_length 0 is "all"
                self._decoded.write(self._stream.decompress(piece, room))
                if self._decoded.tell() > self.limit:
                    raise BodyTooLarge(self.limit, f"Content-Encoding {self.coding}")
                piece = self._stream.unconsumed_tail
                if self._stream.eof:
                    piece = self._next_member(self._stream.unused_data)
        except zlib.error as exc:  # "Error -3 while decompressing data: invalid block type"
            raise self._corrupt(str(exc).rpartition(": ")[2]) from None

    def _next_member(self, rest: bytes) -> bytes:
        if not rest:
            return rest
        if self.coding == "deflate" or not GZIP_MAGIC.startswith(rest[:2]):  # one zlib stream
            raise self._corrupt("data after the end of the compressed stream")
        self._members += 1
        if self._members > MAX_GZIP_MEMBERS:  # each costs a copy of the rest of the slice
            raise self._corrupt(f"more than {MAX_GZIP_MEMBERS} gzip members")
        self._stream = zlib.decompressobj(DECODED[self.coding])
        return rest

    def result(self) -> bytes:
        if not self._fed:  # an empty body is empty, whatever its coding and framing
            return b""
        if not self._stream.eof:
            raise self._corrupt("the body ends before the end of the compressed stream")
        return self._decoded.getvalue()

    def _corrupt(self, problem: str) -> APIError:
        return APIError(
            400,
            f"the body is not valid {self.coding} data (Content-Encoding {self.coding}): {problem}",
            "malformed_body",
            close=True,
        )


class LengthRequired(APIError):
    def __init__(self) -> None:
        super().__init__(
            411,
            "the request has neither Content-Length nor Transfer-Encoding: chunked, so its body "
            "cannot be read; send Content-Length or Transfer-Encoding: chunked "
            "(Content-Length: 0 for an empty body)",
            "length_required",
            close=True,
        )


def _shown(value: str) -> str:
    return value if len(value) <= 64 else value[:64] + "..."


def _codings(value: str) -> list[str]:
    """The codings of a Content-Encoding or Transfer-Encoding value, lower case, in order."""
    if not value:  # the common case
        return []
    return [c.split(";", 1)[0].strip().lower() for c in value.split(",") if c.strip()]


def _unsupported_encoding(header: str, coding: str, remedy: str) -> APIError:
    return APIError(
        415,
        f"{header} {_shown(coding)} is not supported; {remedy}",
        "unsupported_encoding",
        close=True,
    )


def _is_chunked(environ: Mapping[str, Any]) -> bool:
    """Whether the body is chunked; 415 for a transfer coding other than chunked (gunicorn passes
    `gzip, chunked` on, dechunked but still compressed)."""
    value = environ.get("HTTP_TRANSFER_ENCODING")
    if not value:  # the common case
        return False
    codings = _codings(value)
    for coding in codings:
        if coding not in ("chunked", "identity"):
            raise _unsupported_encoding(
                "Transfer-Encoding",
                coding,
                "send the body uncompressed, with Transfer-Encoding: chunked alone or a "
                "Content-Length",
            )
    return "chunked" in codings


def _content_coding(environ: Mapping[str, Any]) -> str | None:
    """The body's Content-Encoding the service decodes (gzip, x-gzip, deflate), or None for none
    (or identity); 415 for any other, or for more than one; 415 for a charset other than
    UTF-8."""
    codings = [c for c in _codings(environ.get("HTTP_CONTENT_ENCODING") or "") if c != "identity"]
    for coding in codings:
        if coding not in DECODED:
            raise _unsupported_encoding(
                "Content-Encoding", coding, "send the body uncompressed, or with gzip or deflate"
            )
    if len(codings) > 1:
        raise _unsupported_encoding(
            "Content-Encoding", ", ".join(codings), "compress the body once, with gzip or deflate"
        )
    _check_charset(environ)
    return codings[0] if codings else None


def _check_charset(environ: Mapping[str, Any]) -> None:
    if ";" not in environ.get("CONTENT_TYPE", ""):  # no parameters, so no charset
        return
    charset = request.mimetype_params.get("charset")
    if charset is not None and charset.lower() not in UTF8_CHARSETS:
        raise APIError(
            415,
            f"the Content-Type's charset {_shown(charset)!r} is not supported; send UTF-8 "
            "(charset=utf-8, or no charset)",
            "unsupported_charset",
            close=True,
        )


def read_body(limit: int) -> bytes:
    """The whole body, decoded, at most `limit` bytes as sent and as decoded; raises
    LengthRequired (411), the 415 of an unsupported coding or charset, BodyTooLarge (413), the
    framing APIError or that of a corrupt compressed body (400, 408), or Busy (503) when a body
    over LARGE_BODY_BYTES finds no parsing slot."""
    environ = request.environ
    chunked = _is_chunked(environ)
    length = None if chunked else request.content_length
    if length is None and not (chunked and environ.get("wsgi.input_terminated")):
        # no framing, or a chunked body on a server that does not end the stream at its end
        raise LengthRequired()
    coding = _content_coding(environ)
    if length is not None and length > limit:
        raise BodyTooLarge(limit)
    stream = environ.get("wsgi.input")
    if stream is None or length == 0:
        return b""
    decoder = BodyDecoder(coding, limit) if coding else None
    body = _read(stream, limit, length, decoder)
    if len(body) > LARGE_BODY_BYTES:  # received whole: the slot covers the CPU work alone
        _take_large_body_slot()
    return body


def _read(stream: Any, limit: int, length: int | None, decoder: BodyDecoder | None) -> bytes:
    wanted = limit + 1 if length is None else length
    buffer = io.BytesIO()
    feed = buffer.write if decoder is None else decoder.feed
    received = 0
    try:
        if decoder is None and length is not None and length <= READ_SIZE:  # the common case
            piece = stream.read(length)
            if len(piece) == length:
                return piece
            buffer.write(piece)
            received = len(piece)
        while received < wanted:
            piece = stream.read(min(READ_SIZE, wanted - received))
            if not piece:
                break
            received += len(piece)
            if received > limit:
                raise BodyTooLarge(limit)
            feed(piece)
    except (ParseException, NoMoreData, RequestReadTimeout, OSError) as exc:  # OSError: a reset
        raise framing_error(exc) from None
    if length is not None and received < length:
        raise framing_error(NoMoreData())
    return buffer.getvalue() if decoder is None else decoder.result()
