"""The binary tensor data extension of the Open Inference Protocol (as Triton and tritonclient
speak it): a request body is a JSON header of `Inference-Header-Content-Length` bytes followed by
the raw little-endian bytes of every input whose `parameters.binary_data_size` says so, in input
order; outputs asked for with `parameters.binary_data` (or the request's
`parameters.binary_data_output`) come back the same way, the response header giving the JSON's
length. Everything here raises APIError 400 naming the problem; sizes are checked against the
body before any array is made, so a request costs its own size in memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from math import prod
from typing import Any

import numpy as np
from flask import Response, current_app

from wine_quality.app.errors import APIError

HEADER = "Inference-Header-Content-Length"
NAME = "binary_tensor_data"
CONTENT_TYPE = "application/octet-stream"
_DTYPES = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"), "INT64": np.dtype("<i8")}


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary part of a request (all of it JSON without the header)."""
    if header_length is None:
        return body, b""
    # ASCII digits only (int() also takes '1_11', '+111', ' 111', other scripts' digits), and
    # at most 19 of them: no body is longer, and int() refuses over 4300.
    plain = header_length.isascii() and header_length.isdigit() and len(header_length) < 20
    length = int(header_length) if plain else -1
    if not 0 < length <= len(body):
        raise APIError(
            400,
            f"{HEADER} must be a whole number in ASCII digits, between 1 and the body's "
            f"{len(body)} bytes",
        )
    return body[:length], body[length:]


def _size(tensor: Mapping[str, Any]) -> int | None:
    parameters = tensor.get("parameters")
    if not isinstance(parameters, Mapping) or "binary_data_size" not in parameters:
        return None
    size = parameters["binary_data_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise APIError(
            400, f"input {str(tensor.get('name'))[:64]!r}: binary_data_size must be a whole number"
        )
    return size


def attach_inputs(inputs: list[Any], binary: bytes) -> None:
    """Put each binary input's values, as an array, where its JSON `data` would be."""
    offset = 0
    for tensor in inputs:
        if not isinstance(tensor, dict):
            continue
        size = _size(tensor)
        if size is None:
            continue
        where = f"input {str(tensor.get('name'))[:64]!r}"
        if "data" in tensor:
            raise APIError(400, f"{where}: has both 'data' and binary_data_size")
        dtype = _DTYPES.get(tensor.get("datatype"))
        if dtype is None or dtype.kind != "f":
            raise APIError(400, f"{where}: binary data must be FP32 or FP64")
        if offset + size > len(binary):
            raise APIError(
                400, f"{where}: binary_data_size {size} runs past the end of the body's binary part"
            )
        if size % dtype.itemsize:
            raise APIError(400, f"{where}: binary_data_size {size} is not a whole number of values")
        shape = tensor.get("shape")
        expected = prod(shape) * dtype.itemsize if _is_shape(shape) else None
        if expected is not None and expected != size:
            raise APIError(
                400, f"{where}: binary_data_size is {size} bytes but the shape needs {expected}"
            )
        tensor["data"] = np.frombuffer(binary, dtype, size // dtype.itemsize, offset)
        offset += size
    if offset != len(binary):
        raise APIError(
            400,
            f"the body has {len(binary) - offset} bytes after the JSON header that no input's "
            "binary_data_size accounts for",
        )


def _is_shape(shape: Any) -> bool:
    return isinstance(shape, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    )


def binary_outputs(body: Mapping[str, Any], names: list[str]) -> set[str]:
    """The outputs to send as binary data: those asked for with parameters.binary_data, or all
    (unless one says false) when the request's parameters.binary_data_output is true."""
    parameters = body.get("parameters")
    everything = isinstance(parameters, Mapping) and parameters.get("binary_data_output") is True
    wanted = set(names) if everything else set()
    for output in body.get("outputs") or []:
        settings = output.get("parameters") if isinstance(output, Mapping) else None
        if isinstance(settings, Mapping) and isinstance(settings.get("binary_data"), bool):
            if settings["binary_data"]:
                wanted.add(output.get("name"))
            else:
                wanted.discard(output.get("name"))
    return wanted & set(names)


def response(payload: dict[str, Any], binary: set[str]) -> Response:
    """The inference response: plain JSON, or the JSON header and the binary outputs."""
    if not binary:
        return current_app.json.response(payload)
    raw = []
    for tensor in payload["outputs"]:
        if tensor["name"] not in binary:
            continue
        data = np.asarray(tensor.pop("data"), dtype=_DTYPES[tensor["datatype"]])
        raw.append(data.tobytes())
        tensor["parameters"] = {**tensor.get("parameters", {}), "binary_data_size": len(raw[-1])}
    header = json.dumps(payload, separators=(",", ":")).encode()
    result = Response(b"".join([header, *raw]), mimetype=CONTENT_TYPE)
    result.headers[HEADER] = str(len(header))
    return result
