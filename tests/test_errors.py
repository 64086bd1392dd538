"""Every client error class gets the one JSON error shape, the right status, and no 500."""

from __future__ import annotations

import io
import json

import pytest
from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkSize, NoMoreData

from support import PAPER_ROW
from wine_quality.core.features import FEATURE_NAMES

WINE = dict(zip(FEATURE_NAMES, PAPER_ROW, strict=True))


def error_of(response, status: int) -> dict:
    """The error object, after checking the shape shared by every non-v2 route."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json"
    error = response.json["error"]
    assert error["status"] == status
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert "X-Request-ID" in response.headers
    return error


@pytest.mark.parametrize("body", ["{", '{"alcohol": 9.4,}', "[1, 2", "nope"])
def test_malformed_json_is_400(api_client, body):
    error = error_of(api_client.post("/predict", data=body, content_type="application/json"), 400)
    assert error["code"] == "malformed_json"
    assert "line 1" in error["message"]


def test_json_that_python_refuses_to_decode_is_400(api_client):
    digits = "1" * 5000  # above Python's limit for integer strings: ValueError, not JSONDecodeError
    for route in ("/predict", "/v2/models/wine-quality/infer"):
        response = api_client.post(
            route, data=f'{{"alcohol": {digits}}}', content_type="application/json"
        )
        assert response.status_code == 400, (route, response.get_data(as_text=True)[:300])


def test_body_that_is_not_utf8_is_400(api_client):
    error = error_of(
        api_client.post("/predict", data=b"\xff\xfe\xfa", content_type="application/json"), 400
    )
    assert "UTF-8" in error["message"]


def test_unknown_route_is_404(api_client):
    assert error_of(api_client.get("/v3/predict"), 404)["code"] == "not_found"


def test_wrong_method_is_405_with_allow_header(api_client):
    response = api_client.get("/predict")
    assert error_of(response, 405)["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]
    error_of(api_client.delete("/healthz"), 405)


def test_body_over_the_byte_limit_is_413(make_app):
    client = make_app(max_body_bytes=1000).test_client()
    body = json.dumps({"instances": [WINE] * 10})
    assert len(body) > 1000
    error = error_of(client.post("/v1/predict", data=body, content_type="application/json"), 413)
    assert "WINE_QUALITY_MAX_BODY_BYTES" in error["message"]


def test_batch_over_the_row_limit_is_413(make_app):
    client = make_app(max_batch_rows=2).test_client()
    error = error_of(client.post("/v1/predict", json={"instances": [WINE] * 3}), 413)
    assert error["code"] == "too_many_rows"
    csv = ",".join(FEATURE_NAMES) + "\n" + "\n".join([",".join(map(str, WINE.values()))] * 3)
    error_of(client.post("/v1/predict", data=csv, content_type="text/csv"), 413)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
def test_unsupported_content_type_is_415(api_client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = api_client.post("/predict", data=json.dumps(WINE), headers=headers)
    assert error_of(response, 415)["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in WINE.items() if k != "pH"}, "pH"),
        ({**WINE, "colour": "red"}, "colour"),
        ({**WINE, "alcohol": "9.4"}, "alcohol"),
        ({**WINE, "alcohol": True}, "alcohol"),
        ({**WINE, "alcohol": None}, "alcohol"),
        ({**WINE, "alcohol": [9.4]}, "alcohol"),
        ({**WINE, "alcohol": 26.0}, "alcohol"),
        ({**WINE, "density": -1}, "density"),
    ],
)
def test_invalid_values_are_422_naming_the_field(api_client, body, field):
    error = error_of(api_client.post("/predict", json=body), 422)
    assert error["code"] == "invalid_input"
    assert [(d["row"], d["field"]) for d in error["details"]] == [(0, field)]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_422(api_client, literal):
    body = json.dumps(WINE).replace("9.4", literal)
    error = error_of(api_client.post("/predict", data=body, content_type="application/json"), 422)
    assert error["details"][0]["field"] == "alcohol"


def test_empty_batch_and_ragged_csv_are_422(api_client):
    error_of(api_client.post("/v1/predict", json={"instances": []}), 422)
    csv = ",".join(FEATURE_NAMES) + "\n1,2,3\n"
    error = error_of(api_client.post("/v1/predict", data=csv, content_type="text/csv"), 422)
    assert error["details"][0]["row"] == 2


def test_errors_do_not_echo_the_payload(api_client):
    secret = "do-not-reflect-" * 100
    error = error_of(api_client.post("/predict", json={**WINE, "pH": secret}), 422)
    assert "do-not-reflect" not in json.dumps(error)
    response = api_client.post(
        "/predict", data='{"x": "do-not-reflect' + "z" * 5000, content_type="application/json"
    )
    assert "do-not-reflect" not in response.get_data(as_text=True)


def test_model_not_ready_is_503(tmp_path):
    from wine_quality.app import create_app
    from wine_quality.app.settings import Settings

    client = create_app(Settings.from_env({"WINE_QUALITY_MODEL_DIR": str(tmp_path)})).test_client()
    assert error_of(client.post("/predict", json=WINE), 503)["code"] == "not_ready"
    assert error_of(client.get("/readyz"), 503)["code"] == "not_ready"


LIMIT = 2000
V2_INFER = "/v2/models/wine-quality/infer"


def json_body(size: int) -> bytes:
    """One wine as JSON, padded with whitespace to exactly `size` bytes."""
    body = json.dumps(WINE).encode()
    return body + b" " * (size - len(body))


def csv_body(size: int) -> bytes:
    body = (",".join(FEATURE_NAMES) + "\n" + ",".join(map(str, PAPER_ROW)) + "\n").encode()
    return body + b" " * (size - len(body))


def v2_body(size: int) -> bytes:
    tensor = {"name": "input-0", "shape": [1, 11], "datatype": "FP64", "data": list(PAPER_ROW)}
    body = json.dumps({"inputs": [tensor]}).encode()
    return body + b" " * (size - len(body))


def post(client, route: str, body: bytes, content_type: str, chunked: bool):
    """POST with a Content-Length, or as gunicorn hands a chunked body to the app: no length
    and a stream that ends at the body's end (wsgi.input_terminated)."""
    if not chunked:
        return client.post(route, data=body, content_type=content_type)
    return client.post(
        route,
        input_stream=io.BytesIO(body),
        headers={"Content-Type": content_type, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("route", "make_body", "content_type"),
    [
        ("/v1/predict", json_body, "application/json"),
        ("/v1/predict", csv_body, "text/csv"),
        (V2_INFER, v2_body, "application/json"),
    ],
)
def test_a_body_one_byte_over_the_limit_is_413_at_and_under_it_is_served(
    make_app, route, make_body, content_type, chunked
):
    client = make_app(max_body_bytes=LIMIT).test_client()
    for size in (LIMIT - 1, LIMIT):
        response = post(client, route, make_body(size), content_type, chunked)
        assert response.status_code == 200, (size, response.get_data(as_text=True)[:300])
    response = post(client, route, make_body(LIMIT + 1), content_type, chunked)
    assert response.status_code == 413
    assert response.headers["Connection"] == "close"
    if route == V2_INFER:
        assert f"larger than {LIMIT} bytes" in response.json["error"]
    else:
        error = error_of(response, 413)
        assert error["code"] == "payload_too_large"
        assert f"larger than {LIMIT} bytes (WINE_QUALITY_MAX_BODY_BYTES)" in error["message"]


def test_a_chunked_body_far_over_the_limit_is_413_not_cut_and_parsed(make_app):
    client = make_app(max_body_bytes=LIMIT).test_client()
    rows = ",".join(FEATURE_NAMES) + "\n" + "\n".join([",".join(map(str, PAPER_ROW))] * 500)
    response = post(client, "/v1/predict", rows.encode(), "text/csv", chunked=True)
    assert error_of(response, 413)["code"] == "payload_too_large"


class BrokenStream(io.RawIOBase):
    """gunicorn's wsgi.input when the chunked framing is broken: it raises from read()."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def read(self, size: int = -1) -> bytes:
        raise self.error


@pytest.mark.parametrize(
    "error", [InvalidChunkSize(b"zz"), ChunkMissingTerminator(b"ab"), NoMoreData()]
)
@pytest.mark.parametrize("route", ["/v1/predict", "/predict", V2_INFER])
def test_broken_framing_is_400_in_the_route_shape_never_500(api_client, route, error):
    response = api_client.post(
        route,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input": BrokenStream(error), "wsgi.input_terminated": True},
    )
    assert response.status_code == 400
    assert response.headers["Connection"] == "close"
    message = response.json["error"] if route == V2_INFER else error_of(response, 400)["message"]
    assert message.startswith("malformed request body framing: ")
    if isinstance(error, NoMoreData):
        assert "connection ended before the end of the body" in message
    else:
        assert type(error).__name__ in message


def test_a_body_shorter_than_its_content_length_is_400(api_client):
    response = api_client.post(
        "/v1/predict",
        data=b'{"alcohol": 9',
        content_type="application/json",
        environ_overrides={"CONTENT_LENGTH": "500"},  # the client promised more than it sent
    )
    error = error_of(response, 400)
    assert error["code"] == "malformed_body"
    assert "connection ended before the end of the body" in error["message"]


def test_duplicate_keys_are_400_naming_the_key_on_v1_and_v2(api_client):
    text = json.dumps(WINE)[:-1] + ', "pH": 3.0}'
    error = error_of(
        api_client.post("/v1/predict", data=text, content_type="application/json"), 400
    )
    assert error["code"] == "duplicate_key"
    assert error["details"] == [
        {"row": None, "field": "pH", "problem": "key given twice in one object"}
    ]
    body = '{"inputs": [{"name": "a", "name": "b", "shape": [1, 11], "datatype": "FP64"}]}'
    response = api_client.post(V2_INFER, data=body, content_type="application/json")
    assert response.status_code == 400
    assert "'name' appears twice" in response.json["error"]


def test_v2_takes_json_or_no_content_type_and_refuses_others_with_415(api_client):
    body = v2_body(0)
    assert api_client.post(V2_INFER, data=body).status_code == 200  # no Content-Type: as JSON
    for content_type in ("text/plain", "text/csv", "application/octet-stream"):
        response = api_client.post(V2_INFER, data=body, content_type=content_type)
        assert response.status_code == 415, content_type
        assert "Inference-Header-Content-Length" in response.json["error"]


def test_large_bodies_beyond_the_worker_slots_get_503_with_retry_after(make_app, monkeypatch):
    from wine_quality.app import requestbody

    client = make_app().test_client()
    large = json_body(requestbody.LARGE_BODY_BYTES + 1)
    monkeypatch.setattr(requestbody, "SLOT_WAIT_SECONDS", 0.05)
    for _ in range(requestbody.LARGE_BODY_SLOTS):  # other requests hold every slot
        assert requestbody._large_bodies.acquire(timeout=1)
    try:
        response = client.post("/v1/predict", data=large, content_type="application/json")
        assert error_of(response, 503)["code"] == "busy"
        assert response.headers["Retry-After"] == "1"
        small = client.post("/v1/predict", json=WINE)  # small bodies never wait for a slot
        assert small.status_code == 200
    finally:
        for _ in range(requestbody.LARGE_BODY_SLOTS):
            requestbody._large_bodies.release()
    # answered, refused or broken: every request gives its slot back
    assert post(client, "/v1/predict", large, "application/json", chunked=True).status_code == 200
    over = json_body(9 * 2**20)  # chunked over the 8 MiB default: read to the limit, then 413
    assert post(client, "/v1/predict", over, "application/json", chunked=True).status_code == 413
    broken = client.post(
        "/v1/predict",
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input": BrokenStream(NoMoreData()), "wsgi.input_terminated": True},
    )
    assert broken.status_code == 400
    slots = requestbody.LARGE_BODY_SLOTS
    acquired = [requestbody._large_bodies.acquire(blocking=False) for _ in range(slots)]
    assert acquired == [True] * slots
    for _ in acquired:
        requestbody._large_bodies.release()
