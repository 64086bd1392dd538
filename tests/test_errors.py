"""Every client error class gets the one JSON error shape, the right status, and no 500."""

from __future__ import annotations

import json

import pytest

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
