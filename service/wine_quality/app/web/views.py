"""The web page's routes: a form for one wine, a CSV upload for a batch, and readable errors.

Inputs go through the same functions as the HTTP API (`app/inputs.py`), so the page accepts and
rejects exactly what the API does, with the same bounds and row limit. Uploads are parsed in
memory (never spooled to disk) and limited to WINE_QUALITY_MAX_BODY_BYTES. The results CSV is
handed back inside the page as a data: link, so nothing is stored between requests. What the
templates show is built in `presenters.py`.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import PurePath
from typing import IO, Any

from flask import (
    Blueprint,
    Response,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from wine_quality.app import hooks
from wine_quality.app.errors import APIError
from wine_quality.app.inputs import InputError, parse_csv, rows_from_records
from wine_quality.app.requestbody import read_body
from wine_quality.app.state import ServiceState, state
from wine_quality.app.web import csrf, presenters
from wine_quality.core.artifact import LoadedModel
from wine_quality.core.features import FEATURES, TARGET_MAXIMUM, TARGET_MINIMUM

log = logging.getLogger(__name__)

bp = Blueprint(
    "web",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/web",
)

# werkzeug's default; it also bounds the multipart decoder's buffer, so it must exceed a chunk.
MAX_FORM_FIELD_BYTES = 500 * 1024
MAX_FORM_PARTS = 32


class PageError(Exception):
    """A request the page answers with a readable error page instead of a result."""

    def __init__(self, status: int, title: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.retry_after = retry_after  # seconds, for a 503


@bp.after_request
def _page_cookies_and_caching(response: Response) -> Response:
    if request.endpoint in ("web.static", "web.favicon"):
        return response
    csrf.set_nonce_cookie(response)
    # Pages carry a per-browser token and possibly uploaded data: never store them in caches.
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.context_processor
def _page_context() -> dict[str, Any]:
    current = state()
    return {
        "csrf_token": lambda: csrf.form_token(current.settings.secret_key),
        "csrf_field_name": csrf.FIELD_NAME,
        "features": FEATURES,
        "grades": {"minimum": TARGET_MINIMUM, "maximum": TARGET_MAXIMUM},
        "limits": presenters.limits(current.settings),
        "model": presenters.model_view(current.holder.model),
    }


bp.add_app_template_filter(presenters.number, "num")


# ---------------------------------------------------------------- request helpers


def _in_memory(
    total_content_length: int | None,
    content_type: str | None,
    filename: str | None,
    content_length: int | None = None,
) -> IO[bytes]:
    """Stream factory for uploads: a BytesIO, so no part of an upload is written to disk.
    Memory is bounded by the body limit the parser enforces first."""
    return io.BytesIO()


def _posted_form(current: ServiceState, limit: int) -> tuple[MultiDict, MultiDict]:
    """The posted fields and files, parsed in memory within the page's limits, after the CSRF
    check passed. Before any parsing: the browser's CSRF cookie must be there, the body at most
    `limit` bytes (whatever its framing) and a url-encoded form at most MAX_FORM_PARTS fields of
    at most MAX_FORM_FIELD_BYTES in all."""
    if not csrf.is_nonce(request.cookies.get(csrf.COOKIE_NAME)):
        raise PageError(400, "The form could not be accepted", csrf.MISSING_COOKIE)
    body = _read_body(limit)
    if request.mimetype == "application/x-www-form-urlencoded" and (
        len(body) > MAX_FORM_FIELD_BYTES or body.count(b"&") >= MAX_FORM_PARTS
    ):
        raise RequestEntityTooLarge()
    parser = FormDataParser(
        stream_factory=_in_memory,
        max_content_length=limit,
        max_form_memory_size=MAX_FORM_FIELD_BYTES,
        silent=False,  # a broken body is named below, not read as an empty form
        max_form_parts=MAX_FORM_PARTS,
    )
    try:
        _, form, files = parser.parse(
            io.BytesIO(body), request.mimetype, len(body), request.mimetype_params
        )
    except ValueError:
        raise PageError(400, "The form could not be read", _unreadable_form(body)) from None
    try:
        csrf.check_form(current.settings.secret_key, form)
    except csrf.CSRFError as exc:
        raise PageError(400, "The form could not be accepted", str(exc)) from None
    return form, files


def _unreadable_form(body: bytes) -> str:
    """Why werkzeug could not parse a posted form, in a user's words."""
    if request.mimetype != "multipart/form-data":
        return "The form data is not UTF-8 text. Reload the page and send the form again."
    boundary = request.mimetype_params.get("boundary", "")
    delimiter = b"--" + boundary.encode("utf-8", "replace")
    if not boundary:
        problem = "its Content-Type header has no boundary parameter"
    elif not boundary.isascii():
        problem = "the boundary in its Content-Type header is not ASCII"
    elif delimiter not in body:
        problem = "no parts found: the body never holds the boundary its Content-Type names"
    elif not re.search(rb"(?:^|[\r\n])" + re.escape(delimiter) + b"--", body):
        problem = "the body is truncated: it ends before the closing boundary"
    else:
        problem = (
            "a part is malformed (each needs a Content-Disposition header, then a blank line "
            "before its content)"
        )
    return (
        f"The upload is not a well-formed multipart/form-data body: {problem}. "
        "Reload the page and send the form again."
    )


def _read_body(limit: int) -> bytes:
    try:
        return read_body(limit)
    except APIError as exc:
        if exc.close:  # the body is left unread: the connection cannot carry another request
            hooks.mark_connection_close()
        if exc.status == 413:
            raise RequestEntityTooLarge() from None
        raise PageError(
            exc.status, "The request could not be read", exc.message, exc.retry_after
        ) from None


def _require_model(current: ServiceState) -> LoadedModel:
    if current.holder.model is None:
        raise PageError(
            503,
            "Predictions are unavailable",
            "The service has no model loaded right now: "
            f"{current.holder.readiness().reason}. Try again later.",
        )
    return current.holder.model


def _upload(files: MultiDict) -> tuple[str, bytes]:
    """The uploaded file's name and bytes, checked to be UTF-8 text (parse_csv decodes them line
    by line: no text copy of the whole file is kept)."""
    file: FileStorage | None = files.get("file")
    filename = PurePath((file.filename or "") if file else "").name[:200]
    if file is None or not filename:
        raise InputError(400, "no_file", "no file was chosen; choose a CSV file to upload")
    data = file.read()
    if not data or data.isspace():
        raise InputError(422, "invalid_input", "the file is empty")
    if b"\0" in data:
        raise InputError(
            400, "malformed_csv", "the file is binary, not a CSV text file (it contains NUL bytes)"
        )
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            400,
            "malformed_csv",
            f"the file is not UTF-8 text (undecodable byte at position {exc.start}); "
            "save it as CSV in UTF-8",
        ) from None
    return filename, data


# ---------------------------------------------------------------- routes


def _render_index(
    model: LoadedModel,
    status: int = 200,
    values: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
    result: dict[str, Any] | None = None,
    explain: bool = False,
) -> tuple[str, int]:
    errors = errors or []
    by_field = {e["field"]: e["problem"] for e in errors if e.get("field")}
    fields = presenters.form_fields(model.facts, values, by_field)
    page = render_template(
        "web/index.html", fields=fields, errors=errors, result=result, explain=explain
    )
    return page, status


@bp.get("/")
def index() -> tuple[str, int]:
    return _render_index(_require_model(state()))


@bp.post("/")
def predict() -> tuple[str, int]:
    current = state()
    model = _require_model(current)
    form, _ = _posted_form(current, MAX_FORM_FIELD_BYTES)
    values = {f.key: form.get(f.key, "") for f in FEATURES}
    explain = form.get("explain") == "1"  # the "why" checkbox: contributions as a bar chart
    try:
        rows = rows_from_records([presenters.form_record(form)], max_rows=1)
    except InputError as exc:
        errors = presenters.form_errors(exc, form)
        return _render_index(model, 422, values, errors=errors, explain=explain)
    prediction = current.predict(rows, api="web.form", explain=explain)
    result = presenters.single_result(prediction)
    return _render_index(model, 200, values, result=result, explain=explain)


@bp.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for /favicon.ico on every page without an icon link (the API docs, JSON)."""
    return send_from_directory(
        bp.static_folder, "favicon.svg", mimetype="image/svg+xml", max_age=24 * 60 * 60
    )


@bp.get("/batch")
def batch_page() -> Response:
    """Reloading a result page (or a bookmark of it) leads back to the upload form."""
    return redirect(url_for("web.index") + "#batch", code=303)


@bp.post("/batch")
def batch() -> tuple[str, int]:
    current = state()
    _require_model(current)
    _, files = _posted_form(current, current.settings.max_body_bytes)
    filename = ""
    try:
        filename, data = _upload(files)
        rows = parse_csv(data, current.settings.max_batch_rows)
    except InputError as exc:
        error = presenters.batch_error(exc, filename)
        return render_template("web/batch.html", batch=None, error=error), exc.status
    view = presenters.batch_view(filename, rows, current.predict(rows, api="web.batch"))
    return render_template("web/batch.html", batch=view, error=None), 200


# ---------------------------------------------------------------- readable error pages


def _error_page(title: str, message: str, status: int) -> tuple[str, int]:
    return render_template("web/error.html", title=title, message=message), status


@bp.errorhandler(PageError)
def _page_error(error: PageError) -> tuple[str, int, dict[str, str]]:
    page, status = _error_page(error.title, error.message, error.status)
    retry = {} if error.retry_after is None else {"Retry-After": str(error.retry_after)}
    return page, status, retry


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_: RequestEntityTooLarge) -> tuple[str, int]:
    """werkzeug raises the same error for the body limit and for the form parser's limits."""
    limit = state().settings.max_body_bytes
    size = presenters.size_text(limit)
    length = request.content_length
    if length is not None and length > limit:
        log.info("web upload refused: larger than %s", size)
        message = (
            f"The upload is larger than the limit of {size} (WINE_QUALITY_MAX_BODY_BYTES). "
            "Split the file into smaller batches, or use the HTTP API."
        )
        return _error_page("The file is too large", message, 413)
    log.info("web form refused: above the body or form limits")
    message = (
        f"The form is too large or has too many fields. The page accepts at most "
        f"{MAX_FORM_PARTS} form fields, {presenters.size_text(MAX_FORM_FIELD_BYTES)} in a text "
        f"field and {size} in all (WINE_QUALITY_MAX_BODY_BYTES). Reload the page and send the "
        "form again, or use the HTTP API."
    )
    return _error_page("The form is too large", message, 413)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[str, int]:
    return _error_page(exc.name, exc.description or exc.name, exc.code or 500)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> tuple[str, int]:
    request_id = hooks.request_id()
    hooks.mark_unhandled()
    log.exception(
        "unhandled error on %s %s (request id %s)", request.method, request.path, request_id
    )
    message = (
        "Something went wrong on our side and the request could not be completed. "
        f"The request id {request_id} identifies it in the service's logs."
    )
    return _error_page("Internal error", message, 500)
