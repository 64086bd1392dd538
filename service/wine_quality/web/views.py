"""The web page: a form for one wine, a CSV upload for a batch, and what the model is.

Inputs go through the same functions as the HTTP API (`wine_quality.inputs`), so the page accepts
and rejects exactly what the API does, with the same bounds and row limit. Uploads are parsed in
memory (never spooled to disk) and limited to WINE_QUALITY_MAX_BODY_BYTES. The results CSV is
built from the validated numbers and handed back inside the page as a data: link, so nothing is
stored between requests.
"""

from __future__ import annotations

import base64
import csv
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import IO, Any

import numpy as np
from flask import (
    Blueprint,
    Response,
    g,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from wine_quality.app.state import Prediction, ServiceState, state
from wine_quality.features import FEATURES, TARGET_MAXIMUM, TARGET_MINIMUM, Feature
from wine_quality.inputs import InputError, parse_csv, rows_from_records
from wine_quality.web.security import (
    COOKIE_NAME,
    FIELD_NAME,
    CSRFError,
    CsrfTokens,
    add_security_headers,
    is_nonce,
    new_nonce,
)

log = logging.getLogger(__name__)

bp = Blueprint(
    "web",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/web",
)

TABLE_ROWS_SHOWN = 250
"""Rows shown in the batch table; the download always holds every row."""
# werkzeug's default; it also bounds the multipart decoder's buffer, so it must exceed a chunk.
MAX_FORM_FIELD_BYTES = 500 * 1024
MAX_FORM_PARTS = 32
RESULT_COLUMNS = (
    *(f.name for f in FEATURES),
    "predicted_quality",
    "predicted_grade",
    "model_version",
    "warnings",
)

_METRIC_LABELS = {
    "rmse": ("RMSE", "{:.3f}"),
    "mae": ("Mean absolute error", "{:.3f}"),
    "r2": ("R²", "{:.3f}"),
    "within_0_5": ("Within 0.5 grade", "{:.1%}"),
    "within_1": ("Within 1 grade", "{:.1%}"),
}


class PageError(Exception):
    """A request the page answers with a readable error page instead of a result."""

    def __init__(self, status: int, title: str, message: str):
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


# ---------------------------------------------------------------- the whole app's headers


@bp.after_app_request
def _security_headers(response: Response) -> Response:
    return add_security_headers(response)


# ---------------------------------------------------------------- CSRF


def _tokens(current: ServiceState) -> CsrfTokens:
    return CsrfTokens(current.settings.secret_key)  # create_app makes sure it is not empty


def _browser_nonce() -> str:
    """This browser's CSRF nonce: the one in its cookie, or a new one sent with this response."""
    if "web_csrf_nonce" not in g:
        cookie = request.cookies.get(COOKIE_NAME)
        g.web_csrf_new = not is_nonce(cookie)
        g.web_csrf_nonce = new_nonce() if g.web_csrf_new else cookie
    return g.web_csrf_nonce


def _check_csrf(current: ServiceState, form: MultiDict) -> None:
    try:
        _tokens(current).check(request.cookies.get(COOKIE_NAME), form.get(FIELD_NAME))
    except CSRFError as exc:
        raise PageError(400, "The form could not be accepted", str(exc)) from None


@bp.after_request
def _page_cookies_and_caching(response: Response) -> Response:
    if request.endpoint in ("web.static", "web.favicon"):
        return response
    if g.get("web_csrf_new"):
        response.set_cookie(
            COOKIE_NAME,
            g.web_csrf_nonce,
            httponly=True,
            samesite="Strict",
            secure=request.is_secure,
            path="/",
        )
    # Pages carry a per-browser token and possibly uploaded data: never store them in caches.
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.context_processor
def _page_context() -> dict[str, Any]:
    current = state()
    return {
        "csrf_token": lambda: _tokens(current).issue(_browser_nonce()),
        "csrf_field_name": FIELD_NAME,
        "features": FEATURES,
        "grades": {"minimum": TARGET_MINIMUM, "maximum": TARGET_MAXIMUM},
        "limits": _limits(current),
        "model": _model_view(current),
    }


@bp.app_template_filter("num")
def _number(value: float) -> str:
    """A measurement as people write it: 7.4, 0.9978, 1000 (six significant digits)."""
    return f"{value:g}"


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


def _posted_form(current: ServiceState) -> tuple[MultiDict, MultiDict]:
    """The posted fields and files, parsed in memory within the service's body limit."""
    parser = FormDataParser(
        stream_factory=_in_memory,
        max_content_length=current.settings.max_body_bytes,
        max_form_memory_size=MAX_FORM_FIELD_BYTES,
        max_form_parts=MAX_FORM_PARTS,
    )
    _, form, files = parser.parse(
        request.stream, request.mimetype, request.content_length, request.mimetype_params
    )
    return form, files


def _limits(current: ServiceState) -> dict[str, Any]:
    size = current.settings.max_body_bytes
    return {
        "rows": current.settings.max_batch_rows,
        "rows_text": f"{current.settings.max_batch_rows:,}",
        "bytes": size,
        "size_text": _size_text(size),
    }


def _size_text(size: int) -> str:
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def _require_model(current: ServiceState) -> None:
    if current.holder.model is None:
        raise PageError(
            503,
            "Predictions are unavailable",
            "The service has no model loaded right now: "
            f"{current.holder.readiness().reason}. Try again later.",
        )


def _model_view(current: ServiceState) -> dict[str, Any] | None:
    model = current.holder.model
    if model is None:
        return None
    metadata = model.metadata
    metrics = metadata.get("metrics", {})
    data = metadata.get("data", {})
    test_rows = data.get("test_rows")
    caption = "Held-out test set" + (f" ({test_rows} wines)" if test_rows else "")
    baseline = metrics.get("baseline", {}).get("test", {})
    return {
        "version": model.version,
        "algorithm": model.algorithm,
        "runtime": model.runtime,
        "trained_at": metadata.get("trained_at"),
        "wine": metadata.get("wine", ""),
        "data_rows": data.get("rows"),
        "metrics": _metric_rows(metrics.get("test", {}), baseline),
        "has_baseline": bool(baseline),
        "metrics_caption": caption,
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _metric_rows(
    test: Mapping[str, Any], baseline: Mapping[str, Any]
) -> list[tuple[str, str, str]]:
    """(label, this model's value, the baseline's value or "") per numeric test metric."""
    rows = []
    for key, value in test.items():
        if not _is_number(value):
            continue
        label, pattern = _METRIC_LABELS.get(key, (key, "{:.3f}"))
        other = baseline.get(key)
        shown_other = pattern.format(other) if _is_number(other) else ""
        rows.append((label, pattern.format(value), shown_other))
    return rows


# ---------------------------------------------------------------- the single-wine form


def _label(feature: Feature) -> str:
    name = feature.name
    return name if any(c.isupper() for c in name) else name[:1].upper() + name[1:]


def _training_stats(current: ServiceState) -> dict[str, Mapping[str, Any]]:
    model = current.holder.model
    recorded = model.metadata.get("features", []) if model is not None else []
    return {f.get("name"): f for f in recorded if isinstance(f, Mapping)}


def _form_fields(
    current: ServiceState, values: Mapping[str, str] | None, errors: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The 11 inputs, generated from FEATURES; defaults are the training medians."""
    stats = _training_stats(current)
    fields = []
    for feature in FEATURES:
        recorded = stats.get(feature.name, {})
        if values is None:
            median = recorded.get("quantiles", {}).get("0.5")
            value = _number(median) if isinstance(median, int | float) else ""
        else:
            value = values.get(feature.key, "")
        low, high = recorded.get("train_min"), recorded.get("train_max")
        fields.append(
            {
                "key": feature.key,
                "input_id": f"f-{feature.key}",
                "label": _label(feature),
                "unit": feature.unit,
                "description": feature.description,
                "minimum": feature.minimum,
                "maximum": feature.maximum,
                "train_range": (low, high) if low is not None and high is not None else None,
                "value": value,
                "error": errors.get(feature.name, ""),
            }
        )
    return fields


def _record_from_form(form: MultiDict) -> dict[str, Any]:
    """The form as an API record: numbers where the text is one, the text itself otherwise (so
    the shared validator names the problem), and blank fields left out (reported missing)."""
    record: dict[str, Any] = {}
    for feature in FEATURES:
        text = form.get(feature.key, "").strip()
        if not text:
            continue
        try:
            record[feature.key] = float(text)
        except ValueError:
            record[feature.key] = text
    return record


def _render_index(
    current: ServiceState,
    status: int = 200,
    values: Mapping[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
    result: dict[str, Any] | None = None,
) -> tuple[str, int]:
    errors = errors or []
    by_field = {e["field"]: e["problem"] for e in errors if e.get("field")}
    page = render_template(
        "web/index.html",
        fields=_form_fields(current, values, by_field),
        errors=errors,
        result=result,
    )
    return page, status


def _form_errors(error: InputError, form: MultiDict) -> list[dict[str, Any]]:
    """The validator's problems, worded for a form: a blank or non-numeric field says so."""
    shown = []
    for detail in error.details or [{"field": None, "problem": error.message}]:
        feature = next((f for f in FEATURES if f.name == detail.get("field")), None)
        problem = detail["problem"]
        if feature is not None and isinstance(problem, str):
            text = form.get(feature.key, "").strip()
            if not text:
                problem = "enter a value"
            elif problem.startswith("must be a number"):
                problem = "enter a number, for example 7.4"
        shown.append(
            {
                "field": detail.get("field"),
                "input_id": f"f-{feature.key}" if feature else "",
                "label": _label(feature) if feature else "Form",
                "problem": problem,
            }
        )
    return shown


@bp.get("/")
def index() -> tuple[str, int]:
    current = state()
    _require_model(current)
    return _render_index(current)


@bp.post("/")
def predict() -> tuple[str, int]:
    current = state()
    _require_model(current)
    form, _ = _posted_form(current)
    _check_csrf(current, form)
    values = {f.key: form.get(f.key, "") for f in FEATURES}
    try:
        rows = rows_from_records([_record_from_form(form)], max_rows=1)
    except InputError as exc:
        return _render_index(current, 422, values, errors=_form_errors(exc, form))
    prediction = current.predict(rows)
    result = {
        "quality": float(prediction.quality[0]),
        "grade": int(prediction.grade[0]),
        "warnings": prediction.warnings[0],
    }
    return _render_index(current, 200, values, result=result)


# ---------------------------------------------------------------- batch upload


@dataclass
class Upload:
    filename: str
    text: str


def _upload(files: MultiDict) -> Upload:
    file: FileStorage | None = files.get("file")
    filename = PurePath((file.filename or "") if file else "").name[:200]
    if file is None or not filename:
        raise InputError(400, "no_file", "no file was chosen; choose a CSV file to upload")
    data = file.read()
    if not data.strip():
        raise InputError(422, "invalid_input", "the file is empty")
    if b"\0" in data:
        raise InputError(
            400, "malformed_csv", "the file is binary, not a CSV text file (it contains NUL bytes)"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            400,
            "malformed_csv",
            f"the file is not UTF-8 text (undecodable byte at position {exc.start}); "
            "save it as CSV in UTF-8",
        ) from None
    return Upload(filename, text)


def _results_csv(rows: np.ndarray, prediction: Prediction) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RESULT_COLUMNS)
    for values, record in zip(rows.tolist(), prediction.records(), strict=True):
        writer.writerow(
            [
                *values,
                record["quality"],
                record["grade"],
                prediction.model_version,
                " | ".join(record["warnings"]),
            ]
        )
    return out.getvalue()


def _histogram(grades: np.ndarray) -> list[dict[str, Any]]:
    """A bar per grade from the lowest to the highest predicted; widths relative to the largest."""
    low, high = int(grades.min()), int(grades.max())
    counts = np.bincount(grades - low, minlength=high - low + 1)
    largest = int(counts.max())
    total = len(grades)
    return [
        {
            "grade": low + i,
            "count": int(count),
            "width": f"{100 * count / largest:.2f}",
            "percent": f"{100 * count / total:.1f} %",
        }
        for i, count in enumerate(counts)
    ]


def _batch_view(
    upload: Upload, rows: np.ndarray, prediction: Prediction, outside: np.ndarray
) -> dict[str, Any]:
    flagged = outside.any(axis=1)
    per_feature = outside.sum(axis=0)
    shown = min(len(rows), TABLE_ROWS_SHOWN)
    encoded = base64.b64encode(_results_csv(rows, prediction).encode()).decode("ascii")
    stem = PurePath(upload.filename).stem or "wines"
    return {
        "filename": upload.filename,
        "rows": len(rows),
        "mean": float(np.mean(prediction.quality)),
        "histogram": _histogram(prediction.grade),
        "download_href": f"data:text/csv;charset=utf-8;base64,{encoded}",
        "download_name": f"{stem}-predictions.csv",
        "rows_out_of_range": int(flagged.sum()),
        "out_of_range": [
            (f.name, int(per_feature[i])) for i, f in enumerate(FEATURES) if per_feature[i]
        ],
        "shown": shown,
        "table": [
            {
                "line": i + 1,
                "cells": rows[i].tolist(),
                "quality": float(prediction.quality[i]),
                "grade": int(prediction.grade[i]),
                "warn": bool(flagged[i]),
            }
            for i in range(shown)
        ],
    }


def _problem_rows(error: InputError) -> list[dict[str, str]]:
    problems = []
    for detail in error.details:
        line = detail.get("row")
        problems.append(
            {
                "line": "" if line is None else str(line),  # a line of the file (header = 1)
                "column": detail.get("field") or "",
                "problem": detail.get("problem", ""),
            }
        )
    return problems


def _batch_error_page(error: InputError, filename: str = "") -> tuple[str, int]:
    hint = ""
    if error.status == 413:
        hint = "Split the file into smaller batches, or use the HTTP API."
    more = error.message.endswith("listed)")
    page = render_template(
        "web/batch.html",
        batch=None,
        error={
            "filename": filename,
            "message": _sentence(error.message),
            "hint": hint,
            "problems": _problem_rows(error),
            "more": more,
        },
    )
    return page, error.status


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "."


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
    form, files = _posted_form(current)
    _check_csrf(current, form)
    filename = ""
    try:
        upload = _upload(files)
        filename = upload.filename
        rows = parse_csv(upload.text, current.settings.max_batch_rows)
    except InputError as exc:
        return _batch_error_page(exc, filename)
    prediction = current.predict(rows)
    outside = current.holder.training_range.outside(rows)
    page = render_template(
        "web/batch.html", batch=_batch_view(upload, rows, prediction, outside), error=None
    )
    return page, 200


# ---------------------------------------------------------------- readable error pages


@bp.errorhandler(PageError)
def _page_error(error: PageError) -> tuple[str, int]:
    return render_template("web/error.html", title=error.title, message=error.message), error.status


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_: RequestEntityTooLarge) -> tuple[str, int]:
    """werkzeug raises the same error for the body limit and for the form parser's limits."""
    limit = state().settings.max_body_bytes
    size = _size_text(limit)
    length = request.content_length
    if length is not None and length > limit:
        log.info("web upload refused: larger than %s", size)
        message = (
            f"The upload is larger than the limit of {size} "
            "(WINE_QUALITY_MAX_BODY_BYTES). "
            "Split the file into smaller batches, or use the HTTP API."
        )
        return render_template(
            "web/error.html", title="The file is too large", message=message
        ), 413
    log.info("web form refused: above the body or form limits")
    message = (
        f"The form is too large or has too many fields. The page accepts at most "
        f"{MAX_FORM_PARTS} form fields, {_size_text(MAX_FORM_FIELD_BYTES)} in a text field "
        f"and {size} in all (WINE_QUALITY_MAX_BODY_BYTES). Reload the page and send the "
        "form again, or use the HTTP API."
    )
    return render_template("web/error.html", title="The form is too large", message=message), 413


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[str, int]:
    return render_template("web/error.html", title=exc.name, message=exc.description), exc.code


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> tuple[str, int]:
    request_id = g.get("request_id", "")
    log.exception(
        "unhandled error on %s %s (request id %s)", request.method, request.path, request_id
    )
    message = (
        "Something went wrong on our side and the request could not be completed. "
        f"The request id {request_id} identifies it in the service's logs."
    )
    return render_template("web/error.html", title="Internal error", message=message), 500
