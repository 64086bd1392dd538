"""What every response of the app gets: the request id and the security headers.

`create_app` wraps the whole app in `ResponseHeaders`, a WSGI middleware, so they do not depend
on blueprint order and reach error pages, static files and /metrics too. It is one list operation
per response instead of two Flask hooks and a werkzeug Headers lookup per header name.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Flask, request

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_KEY = "wine_quality.request_id"  # in the WSGI environ
STARTED_KEY = "wine_quality.started"  # time.perf_counter() when the request reached the app
UNHANDLED_KEY = "wine_quality.unhandled"  # set when a catch-all error handler answered
CLOSE_KEY = "wine_quality.close"  # set when the answer ends the connection (worker.py)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
HSTS = "max-age=31536000"
_SECURITY_HEADERS_BY_LOWER_NAME = tuple(
    (name.lower(), (name, value)) for name, value in SECURITY_HEADERS.items()
)


def register_hooks(app: Flask) -> None:
    app.wsgi_app = ResponseHeaders(app.wsgi_app)


def request_id() -> str:
    """The current request's id: the caller's X-Request-ID when it is a sane token, else a new
    one; the response carries it back and the logs name it."""
    return request.environ.get(REQUEST_ID_KEY, "")


def new_request_id() -> str:
    """A request id for a request that brought none: 128 random bits as 32 hex digits."""
    return os.urandom(16).hex()


def started_at(environ: dict[str, Any]) -> float:
    """time.perf_counter() when the request of `environ` reached the app."""
    return environ.get(STARTED_KEY, time.perf_counter())


def mark_unhandled() -> None:
    """Record that the current request ended in an unexpected exception (the catch-all error
    handlers call it; metrics.HttpMetrics counts it)."""
    request.environ[UNHANDLED_KEY] = True


def mark_connection_close() -> None:
    """Ask the server to close the connection after the current answer (an unread body is left
    behind). gunicorn ignores a Connection header set by the app; the service's worker reads this
    mark instead (wine_quality.app.worker.ConnectionCloser)."""
    request.environ[CLOSE_KEY] = True


def was_unhandled(environ: dict[str, Any]) -> bool:
    return bool(environ.get(UNHANDLED_KEY))


class ResponseHeaders:
    """WSGI middleware: assigns the request id and adds it and the security headers to every
    response of the app; a header a route set itself is kept."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ[STARTED_KEY] = time.perf_counter()
        given = environ.get("HTTP_X_REQUEST_ID", "")
        rid = environ[REQUEST_ID_KEY] = given if _REQUEST_ID.match(given) else new_request_id()
        secure = environ.get("wsgi.url_scheme") == "https"

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            present = {name.lower() for name, _ in headers}
            headers.extend(
                item for lower, item in _SECURITY_HEADERS_BY_LOWER_NAME if lower not in present
            )
            if "x-request-id" not in present:
                headers.append((REQUEST_ID_HEADER, rid))
            if secure and "strict-transport-security" not in present:
                headers.append(("Strict-Transport-Security", HSTS))
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)
