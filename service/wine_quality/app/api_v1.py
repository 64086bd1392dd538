"""The service's own API: health, readiness, model metadata and predictions.

POST /v1/predict (and /predict, the seed paper's URL) accepts
- a JSON object with the 11 named features  -> one prediction;
- {"instances": [{...}, ...]}               -> one prediction per row, in order;
- a CSV body (text/csv, header row)          -> one prediction per row, as CSV when the client
                                                accepts text/csv, else JSON.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from flask import Blueprint, Response, jsonify, request

from wine_quality.app.errors import APIError
from wine_quality.app.inputs import InputError, parse_csv, rows_from_json
from wine_quality.app.state import state
from wine_quality.core.features import FEATURES

bp = Blueprint("api_v1", __name__)

JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv", "application/csv")


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers HTTP."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: the verified model is loaded and the process is not shutting down."""
    current = state()
    readiness = current.holder.readiness()
    if not readiness.ready:
        raise APIError(503, readiness.reason)
    model = current.holder.model
    return jsonify(status="ready", model_version=model.version, runtime=model.runtime)


@bp.get("/v1/model")
def model_info() -> Response:
    """The artifact's metadata, with the feature schema (units, bounds, training ranges)."""
    model = state().require_model()
    metadata = {k: v for k, v in model.metadata.items() if k != "reference"}
    recorded = {f.get("name"): f for f in metadata.get("features", [])}
    metadata["features"] = [
        {
            "name": f.name,
            "key": f.key,
            "unit": f.unit,
            "minimum": f.minimum,
            "maximum": f.maximum,
            "description": f.description,
            **{
                k: v
                for k, v in recorded.get(f.name, {}).items()
                if k not in ("name", "key", "unit", "minimum", "maximum")
            },
        }
        for f in FEATURES
    ]
    metadata["serving"] = {
        "runtime": model.runtime,
        "fallback_reason": model.fallback_reason,
        "load_seconds": model.load_seconds,
    }
    return jsonify(metadata)


def _body_text() -> str:
    data = request.get_data(cache=False)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise APIError(400, "the body is not UTF-8 text", "malformed_body") from None


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise APIError(
            400,
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            "malformed_json",
        ) from None
    except RecursionError:
        raise APIError(400, "malformed JSON: nested too deeply", "malformed_json") from None
    except ValueError as exc:  # e.g. an integer literal of over 4300 digits
        raise APIError(400, f"malformed JSON: {exc}", "malformed_json") from None


def _rows_from_request(max_rows: int) -> tuple[np.ndarray, bool]:
    mimetype = request.mimetype
    if mimetype in JSON_TYPES or mimetype.endswith("+json"):
        return rows_from_json(_parse_json(_body_text()), max_rows)
    if mimetype in CSV_TYPES:
        return parse_csv(_body_text(), max_rows), False
    shown = f"Content-Type {mimetype!r}" if mimetype else "a missing Content-Type"
    raise APIError(415, f"{shown} is not supported; send application/json or text/csv")


def _wants_csv() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
    return best == "text/csv"


@bp.post("/v1/predict")
@bp.post("/predict")
def predict() -> Response:
    """Predict one wine (JSON object), a JSON batch or a CSV batch."""
    current = state()
    current.require_model()
    try:
        rows, single = _rows_from_request(current.settings.max_batch_rows)
    except InputError as exc:
        raise APIError.from_input_error(exc) from None
    prediction = current.predict(rows)
    if _wants_csv():
        return Response(prediction.csv(), mimetype="text/csv")
    records = prediction.records()
    if single:
        return jsonify(model_version=prediction.model_version, **records[0])
    return jsonify(model_version=prediction.model_version, count=len(records), predictions=records)
