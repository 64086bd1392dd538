"""Open Inference Protocol v2 (the REST protocol of KServe, Triton and MLServer).

Inference requests take either one FP32/FP64 tensor of shape [N, 11] whose columns follow the
documented feature order, or 11 named tensors of shape [N] (either spelling of each name). The
response has the outputs `quality` (FP64, [N]), `grade` (INT64, [N]) and the bounds of the
prediction interval `quality_low` and `quality_high` (FP64, [N]; the interval's level is the
tensors' `parameters.level`); `outputs` in the request selects some of them. Errors are
{"error": "..."}: 400 for any bad request, as the protocol asks, 413 for too many rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
from math import prod
from typing import Any

import numpy as np
from flask import Blueprint, Response, jsonify, request

from wine_quality import MODEL_NAME, __version__
from wine_quality.app import binary_tensors
from wine_quality.app.errors import APIError
from wine_quality.app.inputs import (
    MAX_DETAILS,
    InputError,
    parse_json,
    too_many_rows,
    validate_rows,
)
from wine_quality.app.requestbody import read_body
from wine_quality.app.state import state
from wine_quality.core.features import FEATURE_NAMES, FEATURES, index_of, resolve

bp = Blueprint("api_v2", __name__, url_prefix="/v2")

DATATYPES = ("FP32", "FP64")
OUTPUTS = ("quality", "grade", "quality_low", "quality_high")
TENSOR_INPUT = "input-0"
_NUMBER_TYPES = {int, float}
MODEL_ROUTES = ("/models/<model_name>", "/models/<model_name>/versions/<model_version>")


def _bad(message: str) -> APIError:
    return APIError(400, message)


def _check_model(model_name: str, model_version: str | None) -> None:
    if model_name != MODEL_NAME:
        raise APIError(404, f"unknown model {model_name[:64]!r}; this server serves {MODEL_NAME!r}")
    current = state()
    current.require_model()
    if model_version is not None and model_version != current.holder.model.version:
        raise APIError(
            404,
            f"unknown version {model_version[:64]!r} of {MODEL_NAME!r}; "
            f"serving {current.holder.model.version!r}",
        )


@bp.get("/health/live")
def live() -> Response:
    return jsonify(live=True)


@bp.get("/health/ready")
def ready() -> Response:
    readiness = state().holder.readiness()
    if not readiness.ready:
        raise APIError(503, readiness.reason)
    return jsonify(ready=True)


@bp.get("")
def server_metadata() -> Response:
    return jsonify(name=MODEL_NAME, version=__version__, extensions=[binary_tensors.NAME])


def model_metadata(model_name: str, model_version: str | None = None) -> Response:
    _check_model(model_name, model_version)
    model = state().holder.model
    return jsonify(
        name=MODEL_NAME,
        versions=[model.version],
        platform="onnxruntime_onnx" if model.runtime == "onnx" else "sklearn",
        # FP64 is what the model computes in; FP32 is accepted too (parameters.datatypes).
        inputs=[
            {
                "name": TENSOR_INPUT,
                "datatype": "FP64",
                "shape": [-1, len(FEATURES)],
                "parameters": {"columns": list(FEATURE_NAMES), "datatypes": list(DATATYPES)},
            }
        ],
        outputs=[
            {"name": "quality", "datatype": "FP64", "shape": [-1]},
            {"name": "grade", "datatype": "INT64", "shape": [-1]},
            *(
                {
                    "name": name,
                    "datatype": "FP64",
                    "shape": [-1],
                    "parameters": {"level": model.facts.intervals.level},
                }
                for name in ("quality_low", "quality_high")
            ),
        ],
    )


def model_ready(model_name: str, model_version: str | None = None) -> Response:
    _check_model(model_name, model_version)
    readiness = state().holder.readiness()
    if not readiness.ready:
        raise APIError(503, readiness.reason)
    return jsonify(name=MODEL_NAME, ready=True)


def _numbers(data: Any, shape: list[int], where: str) -> np.ndarray:
    """The tensor's data as float64: flat (`prod(shape)` numbers) or nested exactly as `shape`
    says, row-major; every innermost element must be a number."""
    if isinstance(data, np.ndarray):  # binary data, its size already checked against the shape
        return data.astype(np.float64)
    if not isinstance(data, list):
        raise _bad(f"{where}: 'data' must be an array")
    kinds = set(map(type, data))
    if list in kinds:
        values = _innermost(data, shape)
        kinds = {list} if values is None else set(map(type, values))
        if list in kinds:
            raise _bad(
                f"{where}: 'data' must be flat ({prod(shape)} numbers) or nested as the shape "
                f"{shape} says, but {_misnesting(data, shape)}"
            )
        data = values
    if not kinds <= _NUMBER_TYPES:  # a bool's type is bool, not int
        raise _bad(f"{where}: every element must be a number")
    count = prod(shape)
    if len(data) != count:
        raise _bad(f"{where}: 'data' has {len(data)} elements but the shape needs {count}")
    try:
        return np.array(data, dtype=np.float64)
    except OverflowError:
        raise _bad(f"{where}: a number is too large") from None


def _innermost(data: list[Any], shape: list[int]) -> list[Any] | None:
    """The innermost elements of `data`, row-major, if every level is a list of its dimension's
    length; else None."""
    level = [data]
    for size in shape:
        if not all(type(item) is list and len(item) == size for item in level):
            return None
        level = list(chain.from_iterable(level))
    return level


def _misnesting(data: Any, shape: list[int], path: str = "data") -> str | None:
    """Where `data` first departs from the nesting `shape` gives it, in words; None if nowhere.
    Only for the error message: it recurses once per element."""
    if not shape:
        return f"{path} is an array where the shape needs a number" if type(data) is list else None
    if type(data) is not list:
        return f"{path} is not an array of {shape[0]} elements"
    if len(data) != shape[0]:
        return f"{path} has {len(data)} elements where the shape needs {shape[0]}"
    places = (_misnesting(item, shape[1:], f"{path}[{i}]") for i, item in enumerate(data))
    return next(filter(None, places), None)


def _shape(tensor: Mapping[str, Any], where: str) -> list[int]:
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise _bad(f"{where}: 'shape' must be a non-empty array of non-negative integers")
    return shape


def _check_tensor(tensor: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(tensor, Mapping):
        raise _bad(f"{where}: must be an object with name, shape, datatype and data")
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise _bad(f"{where}: datatype must be one of {', '.join(DATATYPES)}")
    if "data" not in tensor:
        raise _bad(f"{where}: 'data' is missing")
    return tensor


def _rows_from_tensor(tensor: Mapping[str, Any], max_rows: int) -> np.ndarray:
    where = f"input {str(tensor.get('name'))[:64]!r}"
    shape = _shape(tensor, where)
    if len(shape) != 2 or shape[1] != len(FEATURES):
        raise _bad(f"{where}: shape must be [N, {len(FEATURES)}], features in the documented order")
    if shape[0] > max_rows:
        raise too_many_rows(shape[0], max_rows)
    return _numbers(tensor["data"], shape, where).reshape(shape)


def _rows_from_named(inputs: list[Mapping[str, Any]], max_rows: int) -> np.ndarray:
    columns: dict[int, np.ndarray] = {}
    for tensor in inputs:
        name = tensor.get("name")
        feature = resolve(name) if isinstance(name, str) else None
        where = f"input {str(name)[:64]!r}"
        if feature is None:
            raise _bad(f"{where}: not a feature name")
        if index_of(feature) in columns:
            raise _bad(f"{where}: feature given twice")
        shape = _shape(tensor, where)
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise _bad(f"{where}: shape must be [N] or [N, 1]")
        if shape[0] > max_rows:
            raise too_many_rows(shape[0], max_rows)
        columns[index_of(feature)] = _numbers(tensor["data"], shape, where)
    missing = [f.name for i, f in enumerate(FEATURES) if i not in columns]
    if missing:
        raise _bad(f"missing inputs: {', '.join(missing)}")
    lengths = {len(c) for c in columns.values()}
    if len(lengths) != 1:
        raise _bad("all named inputs must have the same length N")
    return np.column_stack([columns[i] for i in range(len(FEATURES))])


def _check_content_type() -> None:
    """JSON, as in /v1; with the binary extension's header also application/octet-stream. A
    missing Content-Type is taken as JSON: tritonclient, the protocol's own client, sends none."""
    mimetype = request.mimetype
    if not mimetype or mimetype == "application/json" or mimetype.endswith("+json"):
        return
    if mimetype == binary_tensors.CONTENT_TYPE and binary_tensors.HEADER in request.headers:
        return
    raise APIError(
        415,
        f"Content-Type {mimetype!r} is not supported; send application/json (or, with the "
        f"{binary_tensors.HEADER} header, {binary_tensors.CONTENT_TYPE})",
    )


def _parse_request(max_rows: int, max_bytes: int) -> tuple[Mapping[str, Any], np.ndarray]:
    _check_content_type()
    header, binary = binary_tensors.split_body(
        read_body(max_bytes), request.headers.get(binary_tensors.HEADER)
    )
    try:
        body = parse_json(header, max_rows)
    except InputError as exc:
        raise APIError(
            413 if exc.status == 413 else 400, exc.message, details=exc.details
        ) from None
    inputs = body.get("inputs") if isinstance(body, Mapping) else None
    if not isinstance(inputs, list) or not inputs:
        raise _bad("the body must be an object with a non-empty 'inputs' array")
    binary_tensors.attach_inputs(inputs, binary)
    inputs = [_check_tensor(t, f"inputs[{i}]") for i, t in enumerate(inputs)]
    twice = _first_repeated([t.get("name") for t in inputs])
    if twice is not None:
        raise _bad(f"input {twice[:64]!r}: given twice (input names must be unique)")
    if len(inputs) == 1:
        rows = _rows_from_tensor(inputs[0], max_rows)
    else:
        rows = _rows_from_named(inputs, max_rows)
    if len(rows) == 0:
        raise _bad("the batch is empty (N = 0)")
    validate_rows(rows)
    return body, rows


def _requested_outputs(body: Mapping[str, Any]) -> list[str]:
    wanted = body.get("outputs")
    if wanted is None:
        return list(OUTPUTS)
    if not isinstance(wanted, list) or not all(isinstance(o, Mapping) for o in wanted):
        raise _bad("'outputs' must be an array of objects with a name")
    names = [o.get("name") for o in wanted]
    unknown = [str(n)[:64] for n in names if n not in OUTPUTS]
    if unknown:
        raise _bad(f"unknown outputs {unknown}; available: {', '.join(OUTPUTS)}")
    twice = _first_repeated(names)
    if twice is not None:
        raise _bad(f"output {twice!r} is requested twice in 'outputs'")
    return names


def _first_repeated(names: list[Any]) -> str | None:
    """The first string that `names` holds a second time, or None."""
    seen: set[str] = set()
    for name in names:
        if isinstance(name, str):
            if name in seen:
                return name
            seen.add(name)
    return None


def infer(model_name: str, model_version: str | None = None) -> Response:
    _check_model(model_name, model_version)
    current = state()
    try:
        body, rows = _parse_request(
            current.settings.max_batch_rows, current.settings.max_body_bytes
        )
    except InputError as exc:
        status = 413 if exc.status == 413 else 400
        raise APIError(status, exc.message, details=exc.details) from None
    names = _requested_outputs(body)
    prediction = current.predict(rows, api="v2")
    tensors = {
        "quality": {
            "name": "quality",
            "datatype": "FP64",
            "shape": [len(rows)],
            "data": prediction.quality.tolist(),
        },
        "grade": {
            "name": "grade",
            "datatype": "INT64",
            "shape": [len(rows)],
            "data": prediction.grade.tolist(),
        },
        **{
            name: {
                "name": name,
                "datatype": "FP64",
                "shape": [len(rows)],
                "parameters": {"level": prediction.level},
                "data": bound.tolist(),
            }
            for name, bound in (("quality_low", prediction.low), ("quality_high", prediction.high))
        },
    }
    response: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": prediction.model_version}
    if isinstance(body.get("id"), str):
        response["id"] = body["id"]
    warnings = [f"row {i}: {w}" for i, ws in enumerate(prediction.warnings) for w in ws]
    if warnings:
        response["parameters"] = {"warnings": warnings[:MAX_DETAILS]}
    response["outputs"] = [tensors[n] for n in names]
    return binary_tensors.response(response, binary_tensors.binary_outputs(body, names))


for _rule in MODEL_ROUTES:
    bp.add_url_rule(_rule, view_func=model_metadata, methods=["GET"])
    bp.add_url_rule(f"{_rule}/ready", view_func=model_ready, methods=["GET"])
    bp.add_url_rule(f"{_rule}/infer", view_func=infer, methods=["POST"])
