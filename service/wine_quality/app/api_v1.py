"""The service's own API: health, readiness, model metadata and predictions.

POST /v1/predict (and /predict, the seed paper's URL) accepts
- a JSON object with the 11 named features  -> one prediction;
- {"instances": [{...}, ...]}               -> one prediction per row, in order;
- a CSV body (text/csv, header row)          -> one prediction per row, as CSV when the client
                                                accepts text/csv, else JSON.
Every prediction carries its interval (JSON `interval`, CSV quality_low and quality_high);
`?explain=1` adds each row's `base_value` and per-feature `contributions` (core/explain.py).
"""

from __future__ import annotations

import numpy as np
from flask import Blueprint, Response, jsonify, request

from wine_quality.app.errors import APIError
from wine_quality.app.inputs import InputError, parse_csv, parse_json, rows_from_json
from wine_quality.app.requestbody import read_body
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
        "load_seconds": model.load_seconds,
    }
    shadow = state().shadow
    metadata["shadow"] = shadow.describe() if shadow else None
    return jsonify(metadata)


def _rows_from_request(mimetype: str, max_rows: int, max_bytes: int) -> tuple[np.ndarray, bool]:
    if mimetype in JSON_TYPES or mimetype.endswith("+json"):
        return rows_from_json(parse_json(read_body(max_bytes), max_rows), max_rows)
    if mimetype in CSV_TYPES:
        return parse_csv(read_body(max_bytes), max_rows), False
    shown = f"Content-Type {mimetype!r}" if mimetype else "a missing Content-Type"
    raise APIError(415, f"{shown} is not supported; send application/json or text/csv")


EXPLAIN_VALUES = {"1": True, "true": True, "0": False, "false": False}


def _explain_requested() -> bool:
    """The `explain` query parameter: 1/true or 0/false (absent: false); anything else is 422."""
    if not request.query_string:
        return False
    values = request.args.getlist("explain")
    if not values:
        return False
    if len(values) == 1 and values[0].lower() in EXPLAIN_VALUES:
        return EXPLAIN_VALUES[values[0].lower()]
    shown = values[0][:40] if len(values) == 1 else f"given {len(values)} times"
    problem = f"must be one of 1, true, 0, false; got {shown!r}"
    raise APIError(
        422,
        f"invalid query parameter explain: {problem}",
        "invalid_parameter",
        details=[{"field": "explain", "problem": problem}],
    )


def _wants_csv() -> bool:
    if request.environ.get("HTTP_ACCEPT", "*/*") == "*/*":  # most clients: skip parsing it
        return False
    best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
    return best == "text/csv"


@bp.post("/v1/predict")
@bp.post("/predict")
def predict() -> Response:
    """Predict one wine (JSON object), a JSON batch or a CSV batch."""
    current = state()
    current.require_model()
    explain = _explain_requested()
    mimetype = request.mimetype
    try:
        rows, single = _rows_from_request(
            mimetype, current.settings.max_batch_rows, current.settings.max_body_bytes
        )
    except InputError as exc:
        raise APIError.from_input_error(exc) from None
    api = "v1.csv" if mimetype in CSV_TYPES else "v1.json"
    prediction = current.predict(rows, api=api, explain=explain)
    if _wants_csv():
        return Response(prediction.csv(), mimetype="text/csv")
    records = prediction.records()
    if single:
        return jsonify(model_version=prediction.model_version, **records[0])
    return jsonify(model_version=prediction.model_version, count=len(records), predictions=records)
