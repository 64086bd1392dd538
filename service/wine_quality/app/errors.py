"""One JSON error shape for the whole service, and no 500 for anything a client can send.

Every route outside /v2 answers errors as
    {"error": {"status": 422, "code": "invalid_input", "message": "...", "details": [...]}}
and the Open Inference Protocol routes (/v2/...) as {"error": "..."}, as that protocol requires.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from gunicorn.http.errors import NoMoreData, ParseException
from werkzeug.exceptions import HTTPException

from wine_quality.app.hooks import mark_connection_close, mark_unhandled
from wine_quality.app.inputs import InputError

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    500: "internal_error",
    503: "not_ready",
}


class APIError(Exception):
    """An error answer with a status, a stable code, a message and optional details."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
        close: bool = False,
        retry_after: int | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.details = details or []
        self.close = close  # the rest of the body is unread: answer, then close the connection
        self.retry_after = retry_after  # seconds, for a 503 the client should simply retry

    @classmethod
    def from_input_error(cls, error: InputError) -> APIError:
        return cls(error.status, error.message, error.code, error.details)


class RequestReadTimeout(Exception):
    """The client did not send its request within GUNICORN_READ_TIMEOUT (wine_quality.app.worker).
    Not an OSError, so that gunicorn hands it to the worker's error handler, not its socket one."""

    MESSAGE = "the request was not received within the read timeout (GUNICORN_READ_TIMEOUT)"


def framing_error(exc: BaseException) -> APIError:
    """The answer to a body the server could not read (gunicorn's parser or the read timeout of
    wine_quality.app.worker): 400 naming the problem, or 408; never a 5xx."""
    if isinstance(exc, RequestReadTimeout | TimeoutError):
        return APIError(408, RequestReadTimeout.MESSAGE, close=True)
    if isinstance(exc, NoMoreData | ConnectionError):  # closed, or reset, by the client
        problem = "the connection ended before the end of the body"
    else:
        problem = f"{type(exc).__name__}: {str(exc)[:200]}"
    return APIError(400, f"malformed request body framing: {problem}", "malformed_body", close=True)


def is_v2_request() -> bool:
    return request.path == "/v2" or request.path.startswith("/v2/")


def error_response(error: APIError) -> Response:
    if is_v2_request():
        text = error.message
        if error.details:
            text += ": " + "; ".join(_detail_text(d) for d in error.details)
        response = jsonify(error=text)
    else:
        body: dict[str, Any] = {
            "status": error.status,
            "code": error.code,
            "message": error.message,
        }
        if error.details:
            body["details"] = error.details
        response = jsonify(error=body)
    response.status_code = error.status
    if error.close:
        response.headers["Connection"] = "close"
        mark_connection_close()
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _detail_text(detail: dict[str, Any]) -> str:
    where = []
    if detail.get("row") is not None:
        where.append(f"row {detail['row']}")
    if detail.get("field"):
        where.append(str(detail["field"]))
    return (" ".join(where) + ": " if where else "") + detail["problem"]


def _http_message(exc: HTTPException) -> str:
    if exc.code == 404:
        return f"no route {request.path}; see /openapi.json"
    if exc.code == 405:
        allowed = ", ".join(sorted(m for m in (exc.valid_methods or []) if m != "OPTIONS"))
        return f"method {request.method} is not allowed on {request.path}; allowed: {allowed}"
    if exc.code == 413:
        return "request body too large (limit WINE_QUALITY_MAX_BODY_BYTES)"
    return exc.description or exc.name


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(APIError)
    def _api_error(error: APIError) -> Response:
        return error_response(error)

    @app.errorhandler(InputError)
    def _input_error(error: InputError) -> Response:
        return error_response(APIError.from_input_error(error))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        response = error_response(APIError(status, _http_message(exc), close=status == 413))
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(ParseException)
    @app.errorhandler(NoMoreData)
    @app.errorhandler(TimeoutError)
    @app.errorhandler(RequestReadTimeout)
    def _framing_error(exc: Exception) -> Response:
        return error_response(framing_error(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        mark_unhandled()
        return error_response(
            APIError(500, "internal error; the request id identifies it in the logs")
        )
