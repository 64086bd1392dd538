"""Every client error class gets the one JSON error shape, the right status, and no 500."""

from __future__ import annotations

import gzip
import io
import json
import zlib

import pytest
from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkSize, NoMoreData

from support import PAPER_ROW
from wine_quality.app.requestbody import MAX_GZIP_MEMBERS, BodyDecoder
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


def post(
    client, route: str, body: bytes, content_type: str, chunked: bool, headers: dict | None = None
):
    """POST with a Content-Length, or as gunicorn hands a chunked body to the app: no length
    and a stream that ends at the body's end (wsgi.input_terminated)."""
    if not chunked:
        return client.post(
            route, data=body, headers={"Content-Type": content_type, **(headers or {})}
        )
    return client.post(
        route,
        input_stream=io.BytesIO(body),
        headers={"Content-Type": content_type, "Transfer-Encoding": "chunked", **(headers or {})},
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


class RecordingStream(io.BytesIO):
    """A body stream that counts the bytes handed to the app."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.handed = 0

    def read(self, size: int | None = -1) -> bytes:
        piece = super().read(size)
        self.handed += len(piece)
        return piece


def test_a_large_body_is_received_whole_before_it_waits_for_a_slot(make_app, monkeypatch):
    """No slot is held while a client sends: a request waits for one only with its whole body,
    and a chunked body of at most LARGE_BODY_BYTES needs none."""
    from wine_quality.app import requestbody

    client = make_app().test_client()
    monkeypatch.setattr(requestbody, "SLOT_WAIT_SECONDS", 0.05)
    large = json_body(requestbody.LARGE_BODY_BYTES + 1)
    small = json_body(requestbody.LARGE_BODY_BYTES)
    for _ in range(requestbody.LARGE_BODY_SLOTS):
        assert requestbody._large_bodies.acquire(timeout=1)
    try:
        for framing in ({"CONTENT_LENGTH": str(len(large))}, {"wsgi.input_terminated": True}):
            stream = RecordingStream(large)
            headers = {"Content-Type": "application/json"}
            if "CONTENT_LENGTH" not in framing:
                headers["Transfer-Encoding"] = "chunked"
            response = client.post(
                "/v1/predict",
                headers=headers,
                environ_overrides={"wsgi.input": stream, **framing},
            )
            assert error_of(response, 503)["code"] == "busy"
            assert stream.handed == len(large)  # read to its end before the slot was asked for
        response = post(client, "/v1/predict", small, "application/json", chunked=True)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
    finally:
        for _ in range(requestbody.LARGE_BODY_SLOTS):
            requestbody._large_bodies.release()


BODY_ROUTES = {  # route, a valid body, its Content-Type
    "v1 JSON": ("/v1/predict", json.dumps(WINE).encode(), "application/json"),
    "v1 CSV": ("/predict", csv_body(0), "text/csv"),
    "v2 JSON": (V2_INFER, v2_body(0), "application/json"),
}


def message_of(response, route: str, status: int, code: str) -> str:
    """The error message in the route's shape, after checking status and (outside v2) code."""
    if route == V2_INFER:
        assert response.status_code == status, response.get_data(as_text=True)[:300]
        return response.json["error"]
    error = error_of(response, status)
    assert error["code"] == code
    return error["message"]


@pytest.mark.parametrize("gunicorn", [False, True], ids=["plain-wsgi", "gunicorn-environ"])
@pytest.mark.parametrize("case", BODY_ROUTES)
def test_a_body_without_content_length_or_chunked_framing_is_411(api_client, case, gunicorn):
    """Neither Content-Length nor Transfer-Encoding: chunked: HTTP ends the request at its
    headers; gunicorn's environ then says the stream ends (wsgi.input_terminated) but holds
    nothing. Never read as an empty body (once a 400 "Expecting value")."""
    route, body, content_type = BODY_ROUTES[case]
    terminated = {"wsgi.input_terminated": True} if gunicorn else {}
    response = api_client.post(
        route,
        headers={"Content-Type": content_type},
        environ_overrides={"wsgi.input": io.BytesIO(body), **terminated},
    )
    assert "CONTENT_LENGTH" not in response.request.environ
    message = message_of(response, route, 411, "length_required")
    assert "send Content-Length or Transfer-Encoding: chunked" in message
    assert response.headers["Connection"] == "close"


@pytest.mark.parametrize("case", BODY_ROUTES)
def test_content_length_0_is_an_empty_body_not_a_411(api_client, case):
    route, _, content_type = BODY_ROUTES[case]
    response = api_client.post(
        route,
        data=b"",
        content_type=content_type,
        environ_overrides={"CONTENT_LENGTH": "0"},
    )
    expected = {"v1 JSON": (400, "malformed_json"), "v1 CSV": (422, "invalid_input")}
    status, code = expected.get(case, (400, ""))
    message = message_of(response, route, status, code)
    assert "Length" not in message
    if case == "v1 CSV":
        assert message == "the CSV body is empty"


@pytest.mark.parametrize(
    ("coding", "named"),
    [
        ("br", "br"),
        ("compress", "compress"),
        ("zstd, identity", "zstd"),
        ("gzip, gzip", "gzip, gzip"),
        ("deflate, gzip", "deflate, gzip"),
    ],
)
@pytest.mark.parametrize("case", BODY_ROUTES)
def test_a_content_encoding_not_decoded_is_415_naming_it(api_client, case, coding, named):
    route, body, content_type = BODY_ROUTES[case]
    response = api_client.post(
        route, data=body, headers={"Content-Type": content_type, "Content-Encoding": coding}
    )
    message = message_of(response, route, 415, "unsupported_encoding")
    assert f"Content-Encoding {named} is not supported; " in message
    assert "gzip or deflate" in message
    assert response.headers["Connection"] == "close"


def gzip_members(body: bytes) -> bytes:
    """The body as two gzip members, one after the other (RFC 1952 allows it)."""
    return gzip.compress(body[:10]) + gzip.compress(body[10:])


COMPRESSED = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "GZIP": gzip.compress,
    "identity, gzip": gzip.compress,
    "deflate": zlib.compress,
    "gzip (two members)": gzip_members,
}


@pytest.mark.parametrize("coding", COMPRESSED)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("case", BODY_ROUTES)
def test_gzip_and_deflate_bodies_are_decoded(api_client, case, chunked, coding):
    route, body, content_type = BODY_ROUTES[case]
    plain = api_client.post(route, data=body, content_type=content_type)
    response = post(
        api_client,
        route,
        COMPRESSED[coding](body),
        content_type,
        chunked,
        {"Content-Encoding": coding.split(" (")[0]},
    )
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.get_data() == plain.get_data()


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_compressed_body_is_held_to_the_limit_once_decoded(make_app, coding, chunked):
    """Bodies of LIMIT bytes once decoded are served; one byte more is 413, however small the
    compressed body (a body of spaces compresses a thousandfold)."""
    client = make_app(max_body_bytes=LIMIT).test_client()
    compress = gzip.compress if coding == "gzip" else zlib.compress
    for size in (LIMIT - 1, LIMIT):
        response = post(
            client,
            "/v1/predict",
            compress(json_body(size)),
            "application/json",
            chunked,
            {"Content-Encoding": coding},
        )
        assert response.status_code == 200, (size, response.get_data(as_text=True)[:300])
    sent = compress(json_body(LIMIT + 1))
    assert len(sent) < LIMIT // 10
    response = post(
        client, "/v1/predict", sent, "application/json", chunked, {"Content-Encoding": coding}
    )
    error = error_of(response, 413)
    assert error["message"] == (
        f"request body larger than {LIMIT} bytes once decoded from Content-Encoding {coding} "
        "(WINE_QUALITY_MAX_BODY_BYTES)"
    )
    assert response.headers["Connection"] == "close"


@pytest.mark.parametrize("size", [1, 3, 1000, 100_000])
def test_a_compressed_body_is_decoded_whatever_pieces_it_arrives_in(size):
    """Members that end and begin inside a piece, or across pieces (a chunked body arrives in
    the pieces its sender chose)."""
    body = json.dumps({"instances": [WINE] * 40}).encode()
    sent = gzip.compress(body[:300]) + gzip.compress(b"") + gzip.compress(body[300:])
    decoder = BodyDecoder("gzip", len(body))
    for start in range(0, len(sent), size):
        decoder.feed(sent[start : start + size])
    assert decoder.result() == body


def test_gzip_members_are_limited(api_client):
    """Each member costs a copy of the rest of the body: 40,000 empty ones cost seconds."""
    route, body, content_type = BODY_ROUTES["v1 JSON"]
    headers = {"Content-Type": content_type, "Content-Encoding": "gzip"}
    empty = gzip.compress(b"")
    members = gzip.compress(body) + empty * (MAX_GZIP_MEMBERS - 1)
    assert api_client.post(route, data=members, headers=headers).status_code == 200
    response = api_client.post(route, data=members + empty, headers=headers)
    message = message_of(response, route, 400, "malformed_body")
    assert message.endswith(f"more than {MAX_GZIP_MEMBERS} gzip members")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("case", BODY_ROUTES)
def test_an_empty_compressed_body_is_an_empty_body(api_client, case, chunked):
    route, _, content_type = BODY_ROUTES[case]

    def send(headers: dict) -> object:
        if chunked:
            return post(api_client, route, b"", content_type, True, headers)
        return api_client.post(  # the test client sends no Content-Length for an empty body
            route,
            data=b"",
            headers={"Content-Type": content_type, **headers},
            environ_overrides={"CONTENT_LENGTH": "0"},
        )

    plain, response = send({}), send({"Content-Encoding": "gzip"})
    assert (response.status_code, response.get_data()) == (plain.status_code, plain.get_data())
    assert response.status_code in (400, 422)


CORRUPT = {
    "not gzip at all": ("gzip", lambda body: body, "incorrect header check"),
    "cut short": (
        "gzip",
        lambda body: gzip.compress(body)[:-9],
        "ends before the end of the compressed stream",
    ),
    "a flipped byte": (
        "gzip",
        lambda body: (lambda z: z[:20] + bytes([z[20] ^ 0xFF]) + z[21:])(gzip.compress(body)),
        "",
    ),
    "garbage after gzip": (
        "gzip",
        lambda body: gzip.compress(body) + b"garbage!!",
        "data after the end of the compressed stream",
    ),
    "data after deflate": (
        "deflate",
        lambda body: zlib.compress(body) + b"x",
        "data after the end of the compressed stream",
    ),
    "raw deflate, not zlib": (
        "deflate",
        lambda body: zlib.compress(body, wbits=-15),
        "incorrect header check",
    ),
}


@pytest.mark.parametrize("name", CORRUPT)
@pytest.mark.parametrize("case", BODY_ROUTES)
def test_a_corrupt_compressed_body_is_a_400_naming_the_coding(api_client, case, name):
    coding, corrupt, problem = CORRUPT[name]
    route, body, content_type = BODY_ROUTES[case]
    response = api_client.post(
        route,
        data=corrupt(body),
        headers={"Content-Type": content_type, "Content-Encoding": coding},
    )
    message = message_of(response, route, 400, "malformed_body")
    assert message.startswith(f"the body is not valid {coding} data (Content-Encoding {coding}): ")
    assert problem in message and "Error -3" not in message
    assert response.headers["Connection"] == "close"


@pytest.mark.parametrize("case", BODY_ROUTES)
def test_content_encoding_identity_is_accepted(api_client, case):
    route, body, content_type = BODY_ROUTES[case]
    for coding in ("identity", "Identity", "identity, identity"):
        response = api_client.post(
            route, data=body, headers={"Content-Type": content_type, "Content-Encoding": coding}
        )
        assert response.status_code == 200, (coding, response.get_data(as_text=True)[:300])


@pytest.mark.parametrize("charset", ["utf-16", "latin-1", "bogus", "windows-1252"])
@pytest.mark.parametrize("case", BODY_ROUTES)
def test_a_charset_other_than_utf8_is_415_naming_it(api_client, case, charset):
    route, body, content_type = BODY_ROUTES[case]
    sent = body.decode().encode(charset) if charset in ("utf-16", "latin-1") else body
    response = api_client.post(route, data=sent, content_type=f"{content_type}; charset={charset}")
    message = message_of(response, route, 415, "unsupported_charset")
    assert f"charset {charset!r} is not supported" in message
    assert "UTF-8" in message


@pytest.mark.parametrize("case", BODY_ROUTES)
def test_a_utf8_charset_in_any_spelling_is_accepted(api_client, case):
    route, body, content_type = BODY_ROUTES[case]
    for charset in ("utf-8", "UTF-8", "utf8", "UTF8", '"utf-8"', "us-ascii", "ASCII"):
        response = api_client.post(
            route, data=body, content_type=f"{content_type};charset={charset}"
        )
        assert response.status_code == 200, (charset, response.get_data(as_text=True)[:300])


@pytest.mark.parametrize("case", BODY_ROUTES)
def test_a_transfer_coding_other_than_chunked_is_415_naming_it(api_client, case):
    """gunicorn accepts `gzip, chunked` (chunked last) and hands the app the dechunked, still
    compressed body: never parsed as if plain."""
    route, body, content_type = BODY_ROUTES[case]
    for value, named in (("gzip, chunked", "gzip"), ("deflate,chunked", "deflate")):
        response = api_client.post(
            route,
            headers={"Content-Type": content_type, "Transfer-Encoding": value},
            environ_overrides={
                "wsgi.input": io.BytesIO(gzip.compress(body)),
                "wsgi.input_terminated": True,
            },
        )
        message = message_of(response, route, 415, "unsupported_encoding")
        assert f"Transfer-Encoding {named} is not supported" in message, value
        assert response.headers["Connection"] == "close"
    response = post(api_client, route, body, content_type, chunked=True)  # chunked alone: served
    assert response.status_code == 200, response.get_data(as_text=True)[:300]


def test_the_web_routes_apply_the_same_body_rules(api_client):
    """The page's form and upload read their bodies through read_body too (error pages)."""
    assert api_client.get("/").status_code == 200  # the CSRF cookie, checked before any body
    form = "application/x-www-form-urlencoded"
    upload = "multipart/form-data; boundary=x"
    for path, content_type in (("/", form), ("/batch", upload)):
        for headers in (
            {"Content-Type": content_type, "Content-Encoding": "br"},
            {"Content-Type": content_type + "; charset=latin-1"},
        ):
            response = api_client.post(path, data=b"--x--\r\n", headers=headers)
            assert response.status_code == 415, (path, headers)
            assert "is not supported" in response.get_data(as_text=True)
    response = api_client.post(  # not a form type: werkzeug's test client gives those a length
        "/",
        headers={"Content-Type": "text/plain"},
        environ_overrides={"wsgi.input": io.BytesIO(b"a=1"), "wsgi.input_terminated": True},
    )
    assert response.status_code == 411
    assert "send Content-Length or Transfer-Encoding: chunked" in response.get_data(as_text=True)


def test_get_routes_never_read_a_body(api_client):
    for path in ("/healthz", "/readyz", "/v1/model", "/v2", "/openapi.json"):
        response = api_client.get(path, headers={"Content-Encoding": "gzip"})
        assert response.status_code == 200, path
