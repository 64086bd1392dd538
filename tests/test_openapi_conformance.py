"""Real answers against the served OpenAPI document: each one validates against the schema the
spec gives for its route and status, and every key it holds is documented there (the interval,
the explanation, the v2 interval outputs, /v1/model's facts). A field added to an answer without
its documentation fails here."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from support import PAPER_ROW
from wine_quality.core.features import FEATURE_KEYS, FEATURE_NAMES

WINE = dict(zip(FEATURE_NAMES, PAPER_ROW, strict=True))
SNAKE = dict(zip(FEATURE_KEYS, PAPER_ROW, strict=True))
V2_INFER = "/v2/models/wine-quality/infer"
V2_ROUTE = "/v2/models/{model_name}/infer"
V2_TENSOR = {"name": "input-0", "shape": [2, 11], "datatype": "FP64", "data": [PAPER_ROW] * 2}
V2_BODY = {"id": "7", "inputs": [V2_TENSOR]}
ONE_OUTPUT = {**V2_BODY, "outputs": [{"name": "quality_low"}]}
BATCH = {"instances": [SNAKE, WINE]}

CASES = {  # url, the spec's path, JSON body (None: GET), status
    "one wine": ("/v1/predict", "/v1/predict", WINE, 200),
    "one wine, explained": ("/v1/predict?explain=1", "/v1/predict", WINE, 200),
    "a batch, explained": ("/v1/predict?explain=true", "/v1/predict", BATCH, 200),
    "the seed paper's URL": ("/predict", "/predict", WINE, 200),
    "v2 infer": (V2_INFER, V2_ROUTE, V2_BODY, 200),
    "v2 infer, one output": (V2_INFER, V2_ROUTE, ONE_OUTPUT, 200),
    "v2 model metadata": ("/v2/models/wine-quality", "/v2/models/{model_name}", None, 200),
    "model facts": ("/v1/model", "/v1/model", None, 200),
    "invalid input": ("/v1/predict", "/v1/predict", {**WINE, "pH": 15}, 422),
    "invalid explain": ("/v1/predict?explain=2", "/v1/predict", WINE, 422),
}


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        *_, name = schema["$ref"].split("/")
        schema = spec["components"]["schemas"][name]
    return schema


def _branches(schema: dict[str, Any], spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The schema and every allOf/oneOf/anyOf branch under it, references resolved."""
    schema = _resolve(schema, spec)
    yield schema
    for key in ("allOf", "oneOf", "anyOf"):
        for branch in schema.get(key, []):
            yield from _branches(branch, spec)


def undocumented(value: Any, schema: dict[str, Any], spec: dict[str, Any], at: str = "$"):
    """Paths of the keys in `value` that no branch of `schema` documents as a property."""
    branches = list(_branches(schema, spec))
    if isinstance(value, dict) and not any("properties" in b for b in branches):
        return  # a free-form object (params, metrics, ...): documented as a whole
    if isinstance(value, dict):
        for key, item in value.items():
            documented = [b["properties"][key] for b in branches if key in b.get("properties", {})]
            if not documented:
                yield f"{at}.{key}"
            else:
                yield from undocumented(item, documented[0], spec, f"{at}.{key}")
    elif isinstance(value, list):
        items = [b["items"] for b in branches if isinstance(b.get("items"), dict)]
        for index, item in enumerate(value):
            if items:
                yield from undocumented(item, items[0], spec, f"{at}[{index}]")


def response_schema(spec: dict[str, Any], route: str, method: str, status: int) -> dict[str, Any]:
    responses = spec["paths"][route][method]["responses"]
    return _resolve(responses[str(status)], spec)["content"]["application/json"]["schema"]


@pytest.mark.parametrize("case", CASES)
def test_answers_are_what_the_spec_says(api_client, case: str) -> None:
    url, route, body, status = CASES[case]
    spec = api_client.get("/openapi.json").json
    answer = api_client.get(url) if body is None else api_client.post(url, json=body)
    assert answer.status_code == status, answer.get_data(as_text=True)
    schema = response_schema(spec, route, "get" if body is None else "post", status)
    errors = list(
        Draft202012Validator({**schema, "components": spec["components"]}).iter_errors(answer.json)
    )
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
    assert list(undocumented(answer.json, schema, spec)) == []


def test_the_explanation_and_interval_fields_are_in_the_spec(api_client) -> None:
    """The check above only means something if the fields it meets are documented ones: an
    explained answer has them, and the spec describes them."""
    spec = api_client.get("/openapi.json").json
    answer = api_client.post("/v1/predict?explain=1", json=WINE).json
    assert {"interval", "base_value", "contributions"} <= set(answer)
    prediction = spec["components"]["schemas"]["Prediction"]["properties"]
    assert set(prediction["contributions"]["properties"]) == set(FEATURE_KEYS)
    assert set(prediction["interval"]["required"]) == {"level", "low", "high"}
    parameters = spec["paths"]["/v1/predict"]["post"]["parameters"]
    assert [p["name"] for p in parameters] == ["explain"]
    bogus = {**answer, "confidence": 0.9}
    assert list(undocumented(bogus, response_schema(spec, "/v1/predict", "post", 200), spec)) == [
        "$.confidence"
    ]


def test_csv_answers_have_the_documented_columns(api_client) -> None:
    spec = api_client.get("/openapi.json").json
    content = spec["paths"]["/v1/predict"]["post"]["responses"]["200"]["content"]["text/csv"]
    documented = content["schema"]["description"].split(" ")[0].split(",")
    body = "\n".join([",".join(FEATURE_NAMES), ",".join(map(str, PAPER_ROW))])
    for query, extra in (
        ("", []),
        ("?explain=1", ["base_value"] + [f"contribution_{k}" for k in FEATURE_KEYS]),
    ):
        answer = api_client.post(
            "/v1/predict" + query,
            data=body,
            content_type="text/csv",
            headers={"Accept": "text/csv"},
        )
        assert answer.status_code == 200
        header = next(csv.reader(io.StringIO(answer.get_data(as_text=True))))
        assert header == documented + extra, json.dumps(header)
