"""Open Inference Protocol v2 routes through Flask's test client, around a real model."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from support import PAPER_ROW
from wine_quality.core.features import FEATURE_KEYS, FEATURE_NAMES

ROWS = [
    list(PAPER_ROW),
    [7.8, 0.88, 0.0, 2.6, 0.098, 25.0, 67.0, 0.9968, 3.2, 0.68, 9.8],
    [11.2, 0.28, 0.56, 1.9, 0.075, 17.0, 60.0, 0.998, 3.16, 0.58, 9.8],
]
INFER = "/v2/models/wine-quality/infer"


def tensor(rows=ROWS, datatype="FP64", nested=True, name="input-0"):
    data = rows if nested else [v for row in rows for v in row]
    return {"name": name, "shape": [len(rows), 11], "datatype": datatype, "data": data}


def named(rows=ROWS, names=FEATURE_NAMES, shape_extra=()):
    return [
        {
            "name": n,
            "shape": [len(rows), *shape_extra],
            "datatype": "FP32",
            "data": [row[i] for row in rows],
        }
        for i, n in enumerate(names)
    ]


def test_health_and_metadata(api_client, loaded_model):
    assert api_client.get("/v2/health/live").json == {"live": True}
    assert api_client.get("/v2/health/ready").json == {"ready": True}
    server = api_client.get("/v2").json
    assert server["name"] == "wine-quality" and "version" in server
    model = api_client.get("/v2/models/wine-quality").json
    assert model["name"] == "wine-quality"
    assert model["versions"] == [loaded_model.version]
    assert model["inputs"][0]["shape"] == [-1, 11]
    assert model["inputs"][0]["parameters"]["columns"] == list(FEATURE_NAMES)
    assert model["inputs"][0]["parameters"]["datatypes"] == ["FP32", "FP64"]  # both accepted
    assert [o["name"] for o in model["outputs"]] == [
        "quality",
        "grade",
        "quality_low",
        "quality_high",
    ]
    assert api_client.get("/v2/models/wine-quality/ready").json["ready"] is True


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
@pytest.mark.parametrize("nested", [True, False])
def test_infer_with_one_tensor(api_client, loaded_model, datatype, nested):
    response = api_client.post(
        INFER, json={"id": "req-7", "inputs": [tensor(datatype=datatype, nested=nested)]}
    )
    assert response.status_code == 200
    body = response.json
    assert body["model_name"] == "wine-quality"
    assert body["model_version"] == loaded_model.version
    assert body["id"] == "req-7"
    quality, grade, _, _ = body["outputs"]  # then the interval's bounds
    assert (quality["name"], quality["shape"], quality["datatype"]) == ("quality", [3], "FP64")
    np.testing.assert_allclose(quality["data"], loaded_model.predict(np.array(ROWS)), atol=1e-9)
    assert grade["data"] == [int(np.floor(q + 0.5)) for q in quality["data"]]


@pytest.mark.parametrize("names", [FEATURE_NAMES, FEATURE_KEYS])
@pytest.mark.parametrize("shape_extra", [(), (1,)])
def test_infer_with_named_inputs_in_any_order(api_client, loaded_model, names, shape_extra):
    inputs = list(reversed(named(names=names, shape_extra=shape_extra)))
    body = api_client.post(INFER, json={"inputs": inputs}).json
    np.testing.assert_allclose(
        body["outputs"][0]["data"], loaded_model.predict(np.array(ROWS)), atol=1e-9
    )


def test_requested_outputs_and_versioned_route(api_client, loaded_model):
    url = f"/v2/models/wine-quality/versions/{loaded_model.version}/infer"
    body = api_client.post(url, json={"inputs": [tensor()], "outputs": [{"name": "grade"}]}).json
    assert [o["name"] for o in body["outputs"]] == ["grade"]


def test_out_of_training_range_rows_are_reported_as_parameters(api_client, loaded_model):
    train_max = next(
        f["train_max"] for f in loaded_model.metadata["features"] if f["name"] == "alcohol"
    )
    rows = [[*ROWS[0][:10], min(train_max + 1.0, 24.9)]]
    body = api_client.post(INFER, json={"inputs": [tensor(rows)]}).json
    assert body["parameters"]["warnings"][0].startswith("row 0: alcohol")


def bad_request(client, body, status=400):
    response = client.post(INFER, json=body)
    assert response.status_code == status, response.json
    assert isinstance(response.json["error"], str) and response.json["error"]
    return response.json["error"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "inputs"),
        ({"inputs": []}, "inputs"),
        ({"inputs": [1]}, "object"),
        ({"inputs": [{**tensor(), "datatype": "INT64"}]}, "datatype"),
        ({"inputs": [{**tensor(), "datatype": "BYTES"}]}, "datatype"),
        ({"inputs": [{**tensor(), "shape": [3, 10]}]}, "shape"),
        ({"inputs": [{**tensor(), "shape": [2, 11]}]}, "elements"),
        ({"inputs": [{**tensor(), "shape": "3x11"}]}, "shape"),
        ({"inputs": [{k: v for k, v in tensor().items() if k != "data"}]}, "data"),
        ({"inputs": [tensor([[*ROWS[0][:10], "9.4"]])]}, "number"),
        ({"inputs": [tensor([[*ROWS[0][:10], True]])]}, "number"),
        ({"inputs": [tensor([[*ROWS[0][:10], None]])]}, "number"),
        ({"inputs": [tensor([[*ROWS[0][:10], 99.0]])]}, "alcohol"),
        ({"inputs": named()[:10]}, "missing inputs: alcohol"),
        ({"inputs": [*named()[:10], {**named()[10], "name": "colour"}]}, "colour"),
        ({"inputs": [*named(), named()[0]]}, "twice"),
        ({"inputs": [*named()[:10], {**named()[10], "shape": [2], "data": [9.4, 9.5]}]}, "length"),
        ({"inputs": [tensor()], "outputs": [{"name": "colour"}]}, "outputs"),
        ({"inputs": [{**tensor([]), "shape": [0, 11]}]}, "empty"),
    ],
)
def test_bad_requests_get_400_with_a_message(api_client, body, words):
    assert words in bad_request(api_client, body)


def test_too_many_rows_is_413(make_app):
    client = make_app(max_batch_rows=2).test_client()
    assert "limit is 2" in bad_request(client, {"inputs": [tensor()]}, status=413)


def test_protocol_errors_use_the_protocol_body(api_client, loaded_model):
    malformed = api_client.post(INFER, data="{not json", content_type="application/json")
    assert malformed.status_code == 400
    wrong_type = api_client.post(INFER, data="a,b", content_type="text/csv")
    assert wrong_type.status_code == 415 and isinstance(wrong_type.json["error"], str)
    unknown_model = api_client.post("/v2/models/red-wine/infer", json={"inputs": [tensor()]})
    assert unknown_model.status_code == 404 and isinstance(unknown_model.json["error"], str)
    unknown_version = api_client.get("/v2/models/wine-quality/versions/0.0.0-nope")
    assert unknown_version.status_code == 404
    wrong_method = api_client.get(INFER)
    assert wrong_method.status_code == 405 and isinstance(wrong_method.json["error"], str)
    unknown_route = api_client.get("/v2/nothing")
    assert unknown_route.status_code == 404 and isinstance(unknown_route.json["error"], str)


def test_model_routes_by_version_and_their_404s(api_client, loaded_model):
    versioned = f"/v2/models/wine-quality/versions/{loaded_model.version}"
    assert api_client.get(versioned).json["versions"] == [loaded_model.version]
    assert api_client.get(f"{versioned}/ready").json["ready"] is True
    assert api_client.post(f"{versioned}/infer", json={"inputs": [tensor()]}).status_code == 200
    for path in (
        "/v2/models/red-wine",
        "/v2/models/wine-quality/versions/0.0.0",
        "/v2/models/red-wine/ready",
        "/v2/models/wine-quality/versions/0.0.0/ready",
    ):
        response = api_client.get(path)
        assert response.status_code == 404 and "unknown" in response.json["error"]
    response = api_client.post(
        "/v2/models/wine-quality/versions/0.0.0/infer", json={"inputs": [tensor()]}
    )
    assert response.status_code == 404 and "unknown version" in response.json["error"]


def test_interval_bounds_are_outputs_with_their_level(api_client, loaded_model):
    body = api_client.post(INFER, json={"inputs": [tensor()]}).json
    outputs = {o["name"]: o for o in body["outputs"]}
    assert list(outputs) == ["quality", "grade", "quality_low", "quality_high"]
    quality = np.array(outputs["quality"]["data"])
    low, high = np.array(outputs["quality_low"]["data"]), np.array(outputs["quality_high"]["data"])
    assert np.all(low < quality) and np.all(quality < high)
    for name in ("quality_low", "quality_high"):
        assert outputs[name]["datatype"] == "FP64" and outputs[name]["shape"] == [len(ROWS)]
        assert outputs[name]["parameters"]["level"] == loaded_model.facts.intervals.level
    metadata = api_client.get("/v2/models/wine-quality").json
    assert [o["name"] for o in metadata["outputs"]][2:] == ["quality_low", "quality_high"]


def test_interval_outputs_can_be_requested_alone(api_client):
    wanted = [{"name": "quality_high"}, {"name": "quality_low"}]
    body = api_client.post(INFER, json={"inputs": [tensor()], "outputs": wanted}).json
    assert [o["name"] for o in body["outputs"]] == ["quality_high", "quality_low"]


ROW = ROWS[0]


@pytest.mark.parametrize(
    ("shape", "data", "problem"),
    [
        ([1, 11], [ROW[:5], ROW[5:]], "data has 2 elements where the shape needs 1"),
        ([1, 11], [[], ROW], "data has 2 elements where the shape needs 1"),
        ([2, 11], [ROW[:5], ROW[5:], ROW], "data has 3 elements where the shape needs 2"),
        (
            [2, 11],
            [ROW[:10], [*ROW[10:], *ROW]],
            "data[0] has 10 elements where the shape needs 11",
        ),
        ([2, 11], [*ROW, ROW], "data has 12 elements where the shape needs 2"),
        (
            [1, 11],
            [[*ROW[:10], [ROW[10]]]],
            "data[0][10] is an array where the shape needs a number",
        ),
        ([2, 11], [ROW, 7.4], "data[1] is not an array of 11 elements"),
    ],
)
def test_nested_data_must_follow_the_shape_exactly(api_client, shape, data, problem):
    tensor = {"name": "input-0", "shape": shape, "datatype": "FP64", "data": data}
    error = bad_request(api_client, {"inputs": [tensor]})
    assert error.startswith("input 'input-0': 'data' must be flat")
    assert error.endswith(problem)


def test_named_inputs_are_flat_or_nested_as_their_shape_says(api_client):
    column = [[row[10]] for row in ROWS]
    for shape, data in (([3, 1], column), ([3, 1], [v for (v,) in column])):
        inputs = [*named()[:10], {**named()[10], "shape": shape, "data": data}]
        assert api_client.post(INFER, json={"inputs": inputs}).status_code == 200
    inputs = [*named()[:10], {**named()[10], "data": column}]  # shape [3]: one level only
    error = bad_request(api_client, {"inputs": inputs})
    assert error.startswith("input 'alcohol': 'data' must be flat (3 numbers) or nested")
    assert error.endswith("data[0] is an array where the shape needs a number")


def test_an_output_requested_twice_is_400_naming_it(api_client):
    outputs = [{"name": "quality"}, {"name": "grade"}, {"name": "quality"}]
    error = bad_request(api_client, {"inputs": [tensor()], "outputs": outputs})
    assert error == "output 'quality' is requested twice in 'outputs'"


@pytest.mark.parametrize(
    ("inputs", "name"),
    [
        ([tensor(), tensor()], "input-0"),
        ([*named(), named()[3]], "residual sugar"),
    ],
)
def test_an_input_given_twice_is_400_naming_it(api_client, inputs, name):
    error = bad_request(api_client, {"inputs": inputs})
    assert error == f"input {name!r}: given twice (input names must be unique)"


def test_a_feature_given_under_both_spellings_is_400_naming_it(api_client):
    inputs = [*named(), named(names=FEATURE_KEYS)[0]]
    error = bad_request(api_client, {"inputs": inputs})
    assert error == "input 'fixed_acidity': feature given twice"


def binary_request(rows=ROWS, size=None):
    """A binary-extension body of one FP64 tensor: its JSON header, then the raw values."""
    raw = np.asarray(rows, dtype="<f8").tobytes()
    parameters = {"binary_data_size": len(raw) if size is None else size}
    tensor = {"name": "input-0", "shape": [len(rows), 11], "datatype": "FP64"}
    header = json.dumps({"inputs": [{**tensor, "parameters": parameters}]}).encode()
    return header, raw


def post_binary(client, header, raw, length):
    headers = {"Inference-Header-Content-Length": length}
    return client.post(
        INFER, data=header + raw, headers=headers, content_type="application/octet-stream"
    )


@pytest.mark.parametrize("spelling", ["{}_{}", "+{}{}", " {}{} "])  # int() takes each
def test_the_header_length_takes_ascii_digits_only(api_client, loaded_model, spelling):
    header, raw = binary_request()
    length = str(len(header))
    assert post_binary(api_client, header, raw, length).status_code == 200
    response = post_binary(api_client, header, raw, spelling.format(length[:1], length[1:]))
    assert response.status_code == 400
    assert response.json["error"].startswith(
        "Inference-Header-Content-Length must be a whole number in ASCII digits"
    )


@pytest.mark.parametrize("size", [True, 264.0, "264", -8])
def test_binary_data_size_must_be_a_json_integer(api_client, size):
    header, raw = binary_request(size=size)
    response = post_binary(api_client, header, raw, str(len(header)))
    assert response.status_code == 400
    assert response.json["error"] == "input 'input-0': binary_data_size must be a whole number"


def test_an_integer_literal_past_the_digit_limit_is_described_not_python_advice(api_client):
    body = '{"inputs": [{"name": "input-0", "data": [' + "1" * 5000 + "]}]}"
    response = api_client.post(INFER, data=body, content_type="application/json")
    assert response.status_code == 400
    limit = sys.get_int_max_str_digits()
    assert (
        response.json["error"]
        == f"malformed JSON: an integer literal with more than {limit} digits"
    )
