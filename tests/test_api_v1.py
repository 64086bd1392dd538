"""The v1 API through Flask's test client, around a real trained and verified model."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import shutil
import warnings

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

# The seed paper's curl example (first row of the red-wine file).
from support import PAPER_ROW
from wine_quality import MODEL_NAME
from wine_quality.app import create_app
from wine_quality.app.metrics import observe_many
from wine_quality.app.settings import Settings
from wine_quality.core.features import (
    FEATURE_KEYS,
    FEATURE_NAMES,
    FEATURES,
    TARGET_MAXIMUM,
    TARGET_MINIMUM,
)

WINE = dict(zip(FEATURE_NAMES, PAPER_ROW, strict=True))
OTHER = dict(
    zip(
        FEATURE_NAMES, (7.8, 0.88, 0.0, 2.6, 0.098, 25.0, 67.0, 0.9968, 3.2, 0.68, 9.8), strict=True
    )
)


def expected(loaded_model, *wines):
    return loaded_model.predict(np.array([list(w.values()) for w in wines], dtype=np.float64))


def metric(client, line_start: str) -> float:
    """The value of the first /metrics sample whose line starts with `line_start` (0 if absent)."""
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_healthz_and_readyz(api_client, loaded_model):
    assert api_client.get("/healthz").json == {"status": "ok"}
    ready = api_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["model_version"] == loaded_model.version


def test_model_metadata_has_schema_with_units_bounds_and_training_ranges(api_client, loaded_model):
    body = api_client.get("/v1/model").json
    for key in ("name", "version", "algorithm", "trained_at", "data", "metrics"):
        assert body[key] == loaded_model.metadata[key]
    assert "reference" not in body
    assert [f["name"] for f in body["features"]] == list(FEATURE_NAMES)
    for served, feature in zip(body["features"], FEATURES, strict=True):
        assert served["unit"] == feature.unit
        assert served["minimum"] == feature.minimum and served["maximum"] == feature.maximum
        assert served["train_min"] <= served["train_max"]
    assert body["serving"]["runtime"] == loaded_model.runtime


@pytest.mark.parametrize("url", ["/predict", "/v1/predict"])
def test_single_prediction(api_client, loaded_model, url):
    response = api_client.post(url, json=WINE)
    assert response.status_code == 200
    body = response.json
    want = float(expected(loaded_model, WINE)[0])
    assert body["quality"] == pytest.approx(want, abs=1e-6)
    assert 3 <= body["quality"] <= 8
    assert body["grade"] == int(np.floor(want + 0.5))
    assert body["model_version"] == loaded_model.version
    assert body["warnings"] == []


def test_snake_case_names_give_the_same_prediction(api_client):
    snake = dict(zip(FEATURE_KEYS, WINE.values(), strict=True))
    by_key = api_client.post("/predict", json=snake).json
    assert by_key == api_client.post("/predict", json=WINE).json


def test_batch_predictions_come_back_in_order(api_client, loaded_model):
    body = api_client.post("/v1/predict", json={"instances": [WINE, OTHER, WINE]}).json
    assert body["count"] == 3
    got = [p["quality"] for p in body["predictions"]]
    np.testing.assert_allclose(got, expected(loaded_model, WINE, OTHER, WINE), atol=1e-6)
    assert got[0] == got[2] != got[1]


def _csv(wines, delimiter=","):
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter)
    writer.writerow(FEATURE_NAMES)
    writer.writerows([list(w.values()) for w in wines])
    return out.getvalue()


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_csv_batch_answers_json_by_default(api_client, loaded_model, delimiter):
    response = api_client.post(
        "/v1/predict", data=_csv([WINE, OTHER], delimiter), content_type="text/csv"
    )
    assert response.status_code == 200
    got = [p["quality"] for p in response.json["predictions"]]
    np.testing.assert_allclose(got, expected(loaded_model, WINE, OTHER), atol=1e-6)


def test_csv_batch_answers_csv_when_accepted(api_client, loaded_model):
    response = api_client.post(
        "/v1/predict",
        data=_csv([WINE, OTHER]),
        content_type="text/csv",
        headers={"Accept": "text/csv"},
    )
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["model_version"] for r in rows] == [loaded_model.version] * 2
    np.testing.assert_allclose(
        [float(r["quality"]) for r in rows], expected(loaded_model, WINE, OTHER), atol=1e-6
    )
    assert [int(r["grade"]) for r in rows] == [
        int(np.floor(q + 0.5)) for q in expected(loaded_model, WINE, OTHER)
    ]


def test_the_whole_uci_file_as_csv(api_client, loaded_model, data_source):
    text = (data_source / "winequality-red.csv").read_text()
    response = api_client.post("/v1/predict", data=text, content_type="text/csv")
    assert response.status_code == 200
    rows = np.loadtxt(io.StringIO(text), delimiter=";", skiprows=1)[:, :11]
    got = [p["quality"] for p in response.json["predictions"]]
    np.testing.assert_allclose(got, loaded_model.predict(rows), atol=1e-6)


def test_out_of_training_range_is_served_with_a_warning_and_counted(api_client, loaded_model):
    train_max = next(
        f["train_max"] for f in loaded_model.metadata["features"] if f["name"] == "alcohol"
    )
    high = {**WINE, "alcohol": min(train_max + 1.0, 24.9)}
    before = metric(api_client, 'wine_quality_out_of_range_total{feature="alcohol"}')
    response = api_client.post("/predict", json=high)
    assert response.status_code == 200
    assert len(response.json["warnings"]) == 1
    assert response.json["warnings"][0].startswith("alcohol ")
    assert "above the training range" in response.json["warnings"][0]
    after = metric(api_client, 'wine_quality_out_of_range_total{feature="alcohol"}')
    assert after == before + 1


def test_prediction_metrics(api_client, loaded_model):
    api_client.post("/predict", json=WINE)
    api_client.post("/v1/predict", json={"instances": [WINE, OTHER, WINE]})
    assert metric(api_client, "wine_quality_predictions_total ") == 4
    assert metric(api_client, "wine_quality_batch_rows_count ") == 2
    assert metric(api_client, "wine_quality_predicted_quality_count ") == 4
    assert (
        metric(
            api_client,
            'flask_http_request_duration_seconds_count{method="POST",'
            'path="/v1/predict",status="200"}',
        )
        == 1
    )
    info = (
        f'wine_quality_model_info{{algorithm="{loaded_model.algorithm}",'
        f'runtime="{loaded_model.runtime}",version="{loaded_model.version}"}}'
    )
    assert metric(api_client, info) == 1
    assert metric(api_client, "wine_quality_model_load_seconds ") == pytest.approx(
        loaded_model.load_seconds
    )


@pytest.mark.parametrize(
    ("accept", "mimetype"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("text/*", "text/csv"),
        ("TEXT/CSV", "text/csv"),
        ("application/json;q=0, */*", "text/csv"),
        ("text/csv;q=0.5, application/json", "application/json"),
    ],
)
def test_the_answer_format_follows_accept(api_client, accept, mimetype):
    headers = {"Accept": accept} if accept else {}
    response = api_client.post("/v1/predict", json=WINE, headers=headers)
    assert response.status_code == 200
    assert response.mimetype == mimetype


def test_http_metrics_count_answers_by_method_route_and_status(api_client):
    api_client.post("/v1/predict", json=WINE)
    api_client.post("/v1/predict", data="x", content_type="text/plain")
    api_client.get("/metrics")
    api_client.get("/metrics")
    text = api_client.get("/metrics").get_data(as_text=True)
    duration = 'flask_http_request_duration_seconds_count{method="POST",path="/v1/predict",'
    assert f'{duration}status="200"}} 1.0' in text
    assert f'{duration}status="415"}} 1.0' in text
    assert 'flask_http_request_total{method="POST",status="200"} 1.0' in text
    assert 'path="/metrics"' not in text and 'flask_http_request_total{method="GET"' not in text
    assert 'flask_exporter_info{version="' in text


def test_http_metrics_label_unusual_methods_other(api_client):
    for method in ("BREW", "SPAM", "PROPFIND"):
        assert api_client.open("/v1/predict", method=method).status_code == 405
    text = api_client.get("/metrics").get_data(as_text=True)
    assert 'flask_http_request_total{method="other",status="405"} 3.0' in text
    assert not re.search("BREW|SPAM|PROPFIND", text)


def test_an_unhandled_exception_is_counted_and_answered_500(make_app):
    app = make_app()

    @app.get("/boom")
    def boom():
        raise RuntimeError("a bug")

    client = app.test_client()
    response = client.get("/boom")
    assert response.status_code == 500
    assert response.json["error"]["code"] == "internal_error"
    assert metric(client, 'flask_http_request_exceptions_total{method="GET",status="500"}') == 1
    assert metric(client, 'flask_http_request_total{method="GET",status="500"}') == 1
    client.get("/healthz")
    assert metric(client, 'flask_http_request_exceptions_total{method="GET",status="500"}') == 1


def test_unknown_urls_share_one_metric_label(api_client):
    api_client.get("/no/such/page")
    api_client.get("/another/one")
    text = api_client.get("/metrics").get_data(as_text=True)
    assert 'path="unmatched",status="404"} 2.0' in text
    assert "/no/such/page" not in text


def test_observe_many_matches_observing_one_by_one():
    values = np.array([2.0, 3.0, 3.2, 5.5, 5.50001, 6.0, 9.5, 11.0, 4.0])
    buckets = (3.0, 4.0, 5.5, 6.0, 9.0)
    one, many = CollectorRegistry(), CollectorRegistry()
    single = Histogram("h", "h", buckets=buckets, registry=one)
    bulk = Histogram("h", "h", buckets=buckets, registry=many)
    for value in values:
        single.observe(value)
    observe_many(bulk, values)
    samples = lambda registry: {  # noqa: E731
        (s.name, tuple(s.labels.items())): s.value
        for m in registry.collect()
        for s in m.samples
        if not s.name.endswith("_created")
    }
    bulk_samples, single_samples = samples(many), samples(one)
    assert bulk_samples.pop(("h_sum", ())) == pytest.approx(single_samples.pop(("h_sum", ())))
    assert bulk_samples == single_samples


def test_request_id_is_echoed_or_generated(api_client):
    given = api_client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    generated = {api_client.get("/healthz").headers["X-Request-ID"] for _ in range(50)}
    assert len(generated) == 50  # a new id for every request
    assert all(re.fullmatch("[0-9a-f]{32}", request_id) for request_id in generated)
    unsafe = api_client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert unsafe.headers["X-Request-ID"] != "bad id\twith spaces"


def test_shutdown_turns_readiness_off_but_keeps_serving(make_app):
    app = make_app()
    client = app.test_client()
    app.extensions["wine_quality"].holder.begin_shutdown()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["error"]["message"] == "shutting down"
    assert client.get("/v2/health/ready").status_code == 503
    assert client.get("/healthz").status_code == 200
    assert client.post("/predict", json=WINE).status_code == 200


def test_missing_artifact_keeps_the_app_up_with_the_reason(tmp_path):
    app = create_app(Settings.from_env({"WINE_QUALITY_MODEL_DIR": str(tmp_path / "nothing-here")}))
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "nothing-here" in ready.json["error"]["message"]
    assert client.post("/predict", json=WINE).status_code == 503
    assert client.get("/v1/model").status_code == 503
    assert client.get("/v2/health/ready").json["error"]
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("target", 5.6, "target must be an object"),
        ("features", ["x", 1], "features[0] must be an object"),
        ("data", "oops", "data must be an object"),
        ("version", "=1+2", "version must be letters, digits"),
    ],
)
def test_wrong_metadata_is_not_ready_with_the_field_named(
    tmp_path, small_model_dir, field, value, named
):
    """Parseable but wrong metadata: the process stays up, nothing half-works."""
    copy = tmp_path / "model"
    shutil.copytree(small_model_dir, copy)
    path = copy / "metadata.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    client = create_app(Settings.from_env({"WINE_QUALITY_MODEL_DIR": str(copy)})).test_client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and named in ready.json["error"]["message"]
    assert client.get("/").status_code == 503
    assert client.post("/predict", json=WINE).status_code == 503
    assert client.get("/openapi.json").status_code == 200


def test_tampered_artifact_is_refused_with_the_reason(tmp_path, small_model_dir):
    copy = tmp_path / "model"
    shutil.copytree(small_model_dir, copy)
    model_file = copy / "model.onnx"  # the file the service runs
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    client = create_app(Settings.from_env({"WINE_QUALITY_MODEL_DIR": str(copy)})).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "model.onnx: sha256 mismatch" in ready.json["error"]["message"]


def test_openapi_spec_is_generated_from_the_feature_module(make_app):
    client = make_app(max_batch_rows=123).test_client()
    spec = client.get("/openapi.json").json
    assert spec["openapi"].startswith("3.")
    wine = spec["components"]["schemas"]["Wine"]
    assert list(wine["properties"]) == list(FEATURE_NAMES)
    assert wine["required"] == list(FEATURE_NAMES)
    for feature in FEATURES:
        prop = wine["properties"][feature.name]
        assert (prop["minimum"], prop["maximum"]) == (feature.minimum, feature.maximum)
        assert feature.unit in prop["description"]
    assert list(spec["components"]["schemas"]["WineSnakeCase"]["properties"]) == list(FEATURE_KEYS)
    assert spec["components"]["schemas"]["Batch"]["properties"]["instances"]["maxItems"] == 123
    routes = {
        str(rule) for rule in client.application.url_map.iter_rules() if rule.endpoint != "static"
    }
    documented = set(spec["paths"])
    for path in (
        "/healthz",
        "/readyz",
        "/v1/model",
        "/v1/predict",
        "/predict",
        "/metrics",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
    ):
        assert path in documented
    assert {"/openapi.json", "/docs", "/v1/predict", "/predict"} <= routes
    grade = spec["components"]["schemas"]["Prediction"]["properties"]["grade"]
    assert (grade["minimum"], grade["maximum"]) == (TARGET_MINIMUM, TARGET_MAXIMUM)
    assert spec["info"]["title"] == MODEL_NAME


def test_openapi_spec_documents_every_v2_route_and_its_404(api_client):
    spec = api_client.get("/openapi.json").json
    v2_routes = {
        re.sub(r"<(\w+)>", r"{\1}", str(rule))
        for rule in api_client.application.url_map.iter_rules()
        if str(rule).startswith("/v2")
    }
    assert "/v2/models/{model_name}/versions/{model_version}/infer" in v2_routes
    assert v2_routes <= set(spec["paths"])
    for path in v2_routes:
        item = spec["paths"][path]
        declared = {p["name"] for p in item.get("parameters", [])}
        assert declared == set(re.findall(r"{(\w+)}", path)), path
        for method, operation in item.items():
            if method != "parameters" and "{model_name}" in path:
                assert "404" in operation["responses"], f"{method} {path}"


def test_openapi_and_docs_describe_the_loaded_models_wine(make_app, loaded_model):
    white = dataclasses.replace(
        loaded_model, facts=dataclasses.replace(loaded_model.facts, wine="white")
    )
    client = create_app(Settings.from_env({}), model=white).test_client()
    description = client.get("/openapi.json").json["info"]["description"]
    assert description.startswith("Predicts the quality of white wine (0-10) from 11 ")
    assert "white wine" in client.get("/docs").get_data(as_text=True)
    red = make_app().test_client().get("/openapi.json").json["info"]["description"]
    assert red.startswith(f"Predicts the quality of {loaded_model.metadata['wine']} wine")


def test_docs_page_is_self_contained(api_client):
    response = api_client.get("/docs")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    for name in FEATURE_NAMES:
        assert name in html
    assert "/v2/models/{model_name}/infer" in html
    assert "The model name is <code>wine-quality</code>" in html
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "<style" not in html
    assert api_client.get("/docs/docs.css").mimetype == "text/css"


@pytest.mark.parametrize("runtime", ["sklearn", "onnx"])
def test_the_hot_path_emits_no_warnings(model_dir, runtime):
    from wine_quality.core.artifact import load_artifact

    model = load_artifact(model_dir, runtime)
    if model.runtime != runtime:
        pytest.skip(f"the artifact has no {runtime} runtime")
    client = create_app(Settings.from_env({}), model=model).test_client()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert client.post("/predict", json=WINE).status_code == 200
        assert client.post("/v1/predict", json={"instances": [WINE, OTHER]}).status_code == 200
    assert [str(w.message) for w in caught] == []


# --------------------------------------------------------------------------- intervals, reasons


def test_every_prediction_carries_its_interval(api_client, loaded_model):
    single = api_client.post("/v1/predict", json=WINE).json
    batch = api_client.post("/v1/predict", json={"instances": [WINE, OTHER]}).json
    level = loaded_model.facts.intervals.level
    for record in [single, *batch["predictions"]]:
        interval = record["interval"]
        assert interval["level"] == level
        assert interval["low"] < record["quality"] < interval["high"]
        assert "contributions" not in record and "base_value" not in record
    rows = np.array([list(WINE.values())])
    low, high = loaded_model.facts.intervals.bounds(rows, loaded_model.predict(rows))
    assert single["interval"]["low"] == pytest.approx(low[0], abs=1e-6)
    assert single["interval"]["high"] == pytest.approx(high[0], abs=1e-6)


def test_csv_answers_have_quality_low_and_high(api_client):
    response = api_client.post(
        "/v1/predict",
        data=_csv([WINE, OTHER]),
        content_type="text/csv",
        headers={"Accept": "text/csv"},
    )
    records = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert list(records[0])[:4] == ["quality", "grade", "quality_low", "quality_high"]
    for record in records:
        assert (
            float(record["quality_low"]) < float(record["quality"]) < float(record["quality_high"])
        )


@pytest.mark.parametrize("flag", ["1", "true", "TRUE"])
def test_explain_adds_contributions_that_sum_to_the_quality(api_client, flag):
    body = api_client.post(f"/v1/predict?explain={flag}", json={"instances": [WINE, OTHER]}).json
    for record in body["predictions"]:
        assert list(record["contributions"]) == list(FEATURE_KEYS)
        total = record["base_value"] + sum(record["contributions"].values())
        assert abs(total - record["quality"]) <= 1e-6
    single = api_client.post(f"/v1/predict?explain={flag}", json=WINE).json
    assert set(single["contributions"]) == set(FEATURE_KEYS) and "interval" in single


@pytest.mark.parametrize("flag", ["0", "false"])
def test_explain_off_answers_as_without_it(api_client, flag):
    assert api_client.post(f"/v1/predict?explain={flag}", json=WINE).json == (
        api_client.post("/v1/predict", json=WINE).json
    )


@pytest.mark.parametrize("query", ["explain=2", "explain=yes", "explain=", "explain=1&explain=1"])
def test_an_invalid_explain_value_is_422_naming_the_parameter(api_client, query):
    response = api_client.post(f"/v1/predict?{query}", json=WINE)
    assert response.status_code == 422
    error = response.json["error"]
    assert error["code"] == "invalid_parameter"
    assert error["details"][0]["field"] == "explain"
    assert "1, true, 0, false" in error["message"]


def test_explained_csv_gains_base_value_and_contribution_columns(api_client):
    response = api_client.post(
        "/v1/predict?explain=1",
        data=_csv([WINE, OTHER]),
        content_type="text/csv",
        headers={"Accept": "text/csv"},
    )
    records = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    for record in records:
        parts = [float(record[f"contribution_{key}"]) for key in FEATURE_KEYS]
        assert abs(float(record["base_value"]) + sum(parts) - float(record["quality"])) <= 1e-6


def test_forest_explanations_of_500_served_rows_add_up(model_dir, data_source):
    """The promoted extra-trees model, served by ONNX, explained from the artifact's tree arrays:
    500 rows of the red file, each within 1e-6 of the served quality."""
    from wine_quality.core.artifact import load_artifact

    model = load_artifact(model_dir)
    assert model.runtime == "onnx" and model.explainer.method == "tree_path"
    app = create_app(Settings.from_env({}), model=model)
    text = (data_source / "winequality-red.csv").read_text().splitlines()
    body = "\n".join(text[:501])
    response = app.test_client().post("/v1/predict?explain=1", data=body, content_type="text/csv")
    predictions = response.json["predictions"]
    assert len(predictions) == 500
    gaps = [
        abs(p["base_value"] + sum(p["contributions"].values()) - p["quality"]) for p in predictions
    ]
    assert max(gaps) <= 1e-6
