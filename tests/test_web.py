"""The web page through Flask's test client: the form, CSRF, batch uploads, errors, headers.

The app runs with a real trained artifact (the session's `model_dir`); the browser tests in
tests/browser/ drive the same page through gunicorn and Chromium.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from wine_quality.app import create_app
from wine_quality.app.settings import MALLOC_TUNABLE, Settings, with_malloc_tunable
from wine_quality.app.web.csrf import COOKIE_NAME, CSRFError, CsrfTokens
from wine_quality.core.artifact import LoadedModel
from wine_quality.core.features import FEATURES

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def model(loaded_model: LoadedModel) -> LoadedModel:
    return loaded_model


@pytest.fixture(scope="module")
def settings(small_model_dir: Path) -> Settings:
    return Settings.from_env({"WINE_QUALITY_MODEL_DIR": str(small_model_dir)})


def build_app(settings: Settings, model: LoadedModel, **changes: object) -> Flask:
    return create_app(dataclasses.replace(settings, **changes), model=model)


@pytest.fixture(scope="module")
def app(settings: Settings, model: LoadedModel) -> Flask:
    return build_app(settings, model)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="module")
def red_csv(data_source: Path) -> bytes:
    return (data_source / "winequality-red.csv").read_bytes()


@pytest.fixture(scope="module")
def red_rows(red_csv: bytes) -> np.ndarray:
    reader = csv.reader(io.StringIO(red_csv.decode()), delimiter=";")
    next(reader)
    return np.array([[float(v) for v in record[:11]] for record in reader])


def token_of(client: FlaskClient) -> str:
    """Open the page as a browser would (getting the CSRF cookie) and return the form's token."""
    page = client.get("/")
    assert page.status_code == 200
    return TOKEN.search(page.get_data(as_text=True)).group(1)


def text_of(response) -> str:
    """The response's visible text, tags removed and entities decoded, whitespace collapsed."""
    body = re.sub(r"<[^>]+>", "", response.get_data(as_text=True))
    return " ".join(html.unescape(body).split())


def form_for(row: np.ndarray, token: str) -> dict[str, str]:
    values = {f.key: repr(float(v)) for f, v in zip(FEATURES, row, strict=True)}
    return {"csrf_token": token, **values}


def upload(client: FlaskClient, content: bytes, filename: str = "wines.csv"):
    data = {"csrf_token": token_of(client), "file": (io.BytesIO(content), filename)}
    return client.post("/batch", data=data, content_type="multipart/form-data")


def problems_of(response) -> list[tuple[str, str, str]]:
    """(line, column, problem) of every row of the error page's problems table."""
    body = response.get_data(as_text=True)
    table = re.search(r'<table class="problems".*?<tbody>(.*?)</tbody>', body, re.S)
    assert table, "the error page has no problems table"
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td></tr>", table.group(1), re.S)
    return [tuple(html.unescape(cell) for cell in row) for row in rows]


def csv_text(rows: np.ndarray, header: list[str], separator: str) -> bytes:
    lines = [separator.join(header)]
    lines += [separator.join(repr(float(v)) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


# ---------------------------------------------------------------- the form


def test_form_has_every_feature_with_unit_bounds_and_training_median(client, model) -> None:
    body = client.get("/").get_data(as_text=True)
    medians = {f["name"]: f["quantiles"]["0.5"] for f in model.metadata["features"]}
    inputs = re.findall(r"<input id=\"f-[^>]*>", body, re.S)
    assert len(inputs) == len(FEATURES) == 11
    for feature, tag in zip(FEATURES, inputs, strict=True):
        attributes = dict(re.findall(r'([a-z-]+)="([^"]*)"', tag))
        assert attributes["name"] == feature.key
        assert attributes["type"] == "number"
        assert attributes["step"] == "any"
        assert float(attributes["min"]) == feature.minimum
        assert float(attributes["max"]) == feature.maximum
        assert float(attributes["value"]) == pytest.approx(medians[feature.name], rel=1e-5)
        assert "required" in tag
        label = re.search(rf'<label for="f-{feature.key}">(.*?)</label>', body, re.S).group(1)
        assert html.escape(feature.unit) in label


def test_page_shows_model_version_algorithm_test_metrics_and_api_docs(client, model) -> None:
    response = client.get("/")
    text = text_of(response)
    assert model.version in text
    assert model.algorithm in text
    test_metrics = model.metadata["metrics"]["test"]
    assert f"{test_metrics['rmse']:.3f}" in text
    assert f"{test_metrics['mae']:.3f}" in text
    assert 'href="/docs"' in response.get_data(as_text=True)


def test_stylesheet_is_served_by_the_app(client) -> None:
    body = client.get("/").get_data(as_text=True)
    href = re.search(r'<link rel="stylesheet" href="([^"]+)"', body).group(1)
    response = client.get(href)
    assert response.status_code == 200
    assert response.mimetype == "text/css"
    assert "http://" not in body.replace('xmlns="http://www.w3.org', "")  # no CDN
    assert "<script" not in body and " style=" not in body  # nothing the CSP would block


def test_single_prediction_shows_the_models_estimate_and_grade(client, model, red_rows) -> None:
    response = client.post("/", data=form_for(red_rows[0], token_of(client)))
    assert response.status_code == 200
    expected = float(model.predict(red_rows[:1])[0])
    body = response.get_data(as_text=True)
    assert re.search(r'<strong id="prediction">(.*?)</strong>', body).group(1) == f"{expected:.2f}"
    grade = int(np.floor(expected + 0.5))
    assert re.search(r'<span id="grade">(\d+)</span>', body).group(1) == str(grade)
    assert 'id="warnings"' not in body
    # the submitted values stay in the form
    assert f'value="{float(red_rows[0][0])!r}"' in body


def test_values_outside_the_training_range_are_served_with_a_warning(client, red_rows) -> None:
    row = red_rows[0].copy()
    row[10] = 20.0  # alcohol: inside the physical bounds, above anything in the training data
    response = client.post("/", data=form_for(row, token_of(client)))
    assert response.status_code == 200
    warnings = re.search(
        r'<div class="alert alert-warning" id="warnings">(.*?)</div>',
        response.get_data(as_text=True),
        re.S,
    ).group(1)
    assert "alcohol 20 is above the training range" in html.unescape(warnings)


def test_server_side_validation_names_each_bad_field(client, red_rows) -> None:
    data = form_for(red_rows[0], token_of(client))
    data.update(alcohol="30", ph="abc", density="")
    response = client.post("/", data=data)
    assert response.status_code == 422
    text = text_of(response)
    assert "3 values need fixing" in text
    assert "Alcohol: 30 is outside the physical bounds [0, 25] % vol" in text
    assert "pH: enter a number, for example 7.4" in text
    assert "Density: enter a value" in text
    body = response.get_data(as_text=True)
    for key in ("alcohol", "ph", "density"):
        assert f'<a href="#f-{key}">' in body
        assert re.search(rf'<input id="f-{key}"[^>]*aria-invalid="true"', body, re.S)
    assert not re.search(r'<input id="f-fixed_acidity"[^>]*aria-invalid', body, re.S)
    assert 'value="30"' in body  # the user's input is kept for correction


@pytest.mark.parametrize(
    "text",
    ["1_0", "1_0.5", "\uff11\uff10", "\u0661\u0660", "\u00a010\u00a0", "10\u2003"],
)
def test_form_fields_take_the_number_syntax_csv_cells_do(client, red_rows, text) -> None:
    data = {**form_for(red_rows[0], token_of(client)), "alcohol": text}
    response = client.post("/", data=data)
    assert response.status_code == 422
    assert "Alcohol: enter a number, for example 7.4" in text_of(response)
    assert re.search(
        r'<input id="f-alcohol"[^>]*aria-invalid="true"', response.get_data(as_text=True)
    )


def test_form_fields_take_spaces_around_a_number_and_name_nan(client, red_rows) -> None:
    token = token_of(client)
    spaced = client.post("/", data={**form_for(red_rows[0], token), "alcohol": " 9.4\t"})
    assert spaced.status_code == 200
    nan = client.post("/", data={**form_for(red_rows[0], token), "alcohol": "nan"})
    assert nan.status_code == 422
    assert "Alcohol: must be a finite number (not NaN or infinity)" in text_of(nan)


def test_the_page_names_the_models_wine_and_grade_scale(settings, model) -> None:
    white = dataclasses.replace(model, facts=dataclasses.replace(model.facts, wine="white"))
    text = text_of(create_app(settings, model=white).test_client().get("/"))
    assert "Enter the lab measurements of a white wine." in text
    assert "the grade tasters would give (0\u201310)" in text  # en dash
    assert f"from {len(FEATURES)} physicochemical measurements of white vinho verde" in text
    assert "red wine" not in text and "red vinho verde" not in text


# ---------------------------------------------------------------- CSRF


def test_the_csrf_cookie_is_http_only_and_same_site_strict(client) -> None:
    cookie = client.get("/").headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert client.get("/").headers.get("Set-Cookie") is None  # kept, not renewed per page


@pytest.mark.parametrize("path", ["/", "/batch"])
def test_a_post_without_the_token_gets_a_readable_400(client, path, red_rows) -> None:
    token_of(client)
    data = form_for(red_rows[0], "")
    del data["csrf_token"]
    response = client.post(path, data=data)
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "The form was sent without its security token" in text_of(response)


def test_a_forged_or_foreign_token_is_refused(app, client, red_rows) -> None:
    token = token_of(client)
    forged = client.post("/", data=form_for(red_rows[0], token[:-4] + "AAAA"))
    assert forged.status_code == 400
    assert "security token is not valid" in text_of(forged)

    other_browser = app.test_client()
    foreign = other_browser.post("/", data=form_for(red_rows[0], token))  # no cookie at all
    assert foreign.status_code == 400
    assert "did not send the page's security cookie" in text_of(foreign)
    token_of(other_browser)  # now it has a cookie of its own, which the token does not match
    foreign = other_browser.post("/", data=form_for(red_rows[0], token))
    assert foreign.status_code == 400
    assert "belongs to another browser session" in text_of(foreign)


def post_with_token_of(source: FlaskClient, target: FlaskClient, row: np.ndarray):
    """Post to `target` the form `source` served, with `source`'s cookie (one browser, two apps)."""
    token = token_of(source)
    target.set_cookie(COOKIE_NAME, source.get_cookie(COOKIE_NAME).value)
    return target.post("/", data=form_for(row, token))


def test_without_a_key_each_app_signs_with_its_own_random_key(
    settings, model, red_rows, caplog
) -> None:
    """Nothing public (such as the model checksum) is the key: two apps without one disagree."""
    service_log = logging.getLogger("wine_quality")  # it does not propagate to the root logger
    service_log.addHandler(caplog.handler)
    try:
        first = build_app(settings, model).test_client()
        second = build_app(settings, model).test_client()
    finally:
        service_log.removeHandler(caplog.handler)
    response = post_with_token_of(first, second, red_rows[0])
    assert response.status_code == 400
    assert "security token is not valid" in text_of(response)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING" and "WINE_QUALITY_SECRET_KEY" in r.getMessage()
    ]
    assert len(warnings) == 2  # one line per app started without a key
    assert "only validate within this server" in warnings[0]


def test_apps_sharing_a_key_accept_each_others_tokens(settings, model, red_rows) -> None:
    """Two app instances (as in two gunicorn workers or two replicas) with the same key agree."""
    first = build_app(settings, model, secret_key="shared key").test_client()
    second = build_app(settings, model, secret_key="shared key").test_client()
    assert post_with_token_of(first, second, red_rows[0]).status_code == 200


def test_a_configured_secret_key_signs_the_tokens(settings, model, red_rows) -> None:
    keyed = build_app(settings, model, secret_key="one key").test_client()
    other = build_app(settings, model, secret_key="another key").test_client()
    token = token_of(keyed)
    assert keyed.post("/", data=form_for(red_rows[0], token)).status_code == 200
    other.set_cookie(COOKIE_NAME, keyed.get_cookie(COOKIE_NAME).value)
    assert other.post("/", data=form_for(red_rows[0], token)).status_code == 400


GUNICORN_MASTER = """
import json, os
from wine_quality.app import gunicorn_conf

class Server:
    warnings = []
    def warning(self, message, *args):
        self.warnings.append(message % args)

server = Server()
server.log = server
gunicorn_conf.on_starting(server)
print(json.dumps({"key": os.environ["WINE_QUALITY_SECRET_KEY"], "warnings": server.warnings,
                  "forwarded_allow_ips": gunicorn_conf.forwarded_allow_ips}))
"""


def gunicorn_master(tmp_path: Path, **env: str) -> dict:
    """What gunicorn's master gets from the service's config: run in a process of its own, since
    the config exports variables and its on_starting hook clears the metrics directory."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WINE_QUALITY_SECRET_KEY", "FORWARDED_ALLOW_IPS")
    }
    environ = with_malloc_tunable(environ)  # as wine-quality serve and the image start it
    environ.update(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"), **env)
    result = subprocess.run(
        [sys.executable, "-c", GUNICORN_MASTER],
        env=environ,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(result.stdout)


def test_the_master_makes_one_random_key_for_its_workers(tmp_path) -> None:
    """gunicorn's on_starting hook (run once, before the workers fork) fills an empty key."""
    first, second = gunicorn_master(tmp_path), gunicorn_master(tmp_path, WINE_QUALITY_SECRET_KEY="")
    assert len(first["key"]) >= 43 and first["key"] != second["key"]  # random, never derived
    for master in (first, second):
        assert len(master["warnings"]) == 1
        assert "only validate within this server" in master["warnings"][0]
    configured = gunicorn_master(tmp_path, WINE_QUALITY_SECRET_KEY="configured")
    assert configured["key"] == "configured" and configured["warnings"] == []


def test_the_master_warns_without_the_malloc_tunable(tmp_path) -> None:
    master = gunicorn_master(tmp_path, WINE_QUALITY_SECRET_KEY="configured", GLIBC_TUNABLES="")
    assert len(master["warnings"]) == 1
    assert f"GLIBC_TUNABLES lacks {MALLOC_TUNABLE}" in master["warnings"][0]


def test_expired_tokens_and_keys() -> None:
    nonce = "n" * 43
    tokens = CsrfTokens("key a")
    tokens.check(nonce, tokens.issue(nonce))
    expired = CsrfTokens("key a", max_age_seconds=-1)
    with pytest.raises(CSRFError, match="expired"):
        expired.check(nonce, tokens.issue(nonce))
    with pytest.raises(CSRFError, match="not valid"):
        CsrfTokens("key b").check(nonce, tokens.issue(nonce))


# ---------------------------------------------------------------- batch upload


def test_the_uci_file_itself_is_predicted(client, model, red_csv, red_rows) -> None:
    response = upload(client, red_csv, "winequality-red.csv")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert re.search(r'<strong id="row-count">(\d+)</strong>', body).group(1) == "1599"
    counts = [int(c) for c in re.findall(r'<td class="count">(\d+) ', body)]
    assert sum(counts) == 1599
    expected = model.predict(red_rows)
    grades = np.clip(np.floor(expected + 0.5), 0, 10).astype(int)
    assert counts == np.bincount(grades - grades.min()).tolist()
    table = body.split('id="results-table"')[1]
    first_row = re.search(r"<tbody>\s*<tr[^>]*>(.*?)</tr>", table, re.S)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", first_row.group(1))
    assert cells[-3] == f"{expected[0]:.2f}"  # then the grade and the interval


def test_the_download_holds_every_row_with_inputs_and_predictions(
    client, model, red_csv, red_rows
) -> None:
    body = upload(client, red_csv, "winequality-red.csv").get_data(as_text=True)
    link = re.search(r'<a class="button" id="download" href="([^"]+)" download="([^"]+)"', body)
    assert link.group(2) == "winequality-red-predictions.csv"
    prefix = "data:text/csv;charset=utf-8;base64,"
    assert link.group(1).startswith(prefix)
    text = base64.b64decode(link.group(1)[len(prefix) :]).decode()
    records = list(csv.DictReader(io.StringIO(text)))
    assert len(records) == 1599
    assert list(records[0])[:11] == [f.name for f in FEATURES]
    inputs = np.array([[float(r[f.name]) for f in FEATURES] for r in records])
    np.testing.assert_array_equal(inputs, red_rows)
    predicted = np.array([float(r["predicted_quality"]) for r in records])
    np.testing.assert_allclose(predicted, model.predict(red_rows), atol=1e-6)
    assert {r["model_version"] for r in records} == {model.version}


def test_a_comma_separated_file_with_snake_case_names_in_any_order(client, model, red_rows) -> None:
    header = [f.key for f in FEATURES][::-1]
    content = csv_text(red_rows[:5, ::-1], header, ",")
    response = upload(client, content)
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert re.search(r'<strong id="row-count">(\d+)</strong>', body).group(1) == "5"
    shown = re.findall(r'<td>(\d+\.\d\d)</td>\s*<td class="grade">', body)
    assert shown == [f"{q:.2f}" for q in model.predict(red_rows[:5])]


def test_a_missing_column_is_named(client, red_rows) -> None:
    header = [f.name for f in FEATURES if f.key != "ph"]
    content = csv_text(np.delete(red_rows[:3], 8, axis=1), header, ";")
    response = upload(client, content)
    assert response.status_code == 422
    assert ("1", "pH", "missing column in the header") in problems_of(response)


def with_cell(content: bytes, line: int, column: int, text: str) -> bytes:
    """`content` with the cell at file line `line` (the header is line 1), `column` replaced."""
    lines = content.decode().splitlines()
    cells = lines[line - 1].split(";")
    cells[column] = text
    lines[line - 1] = ";".join(cells)
    return ("\n".join(lines) + "\n").encode()


def test_a_bad_value_is_named_by_line_and_column(client, red_rows) -> None:
    content = csv_text(red_rows[:30], [f.name for f in FEATURES], ";")
    response = upload(client, with_cell(content, 17, 10, "strong"))
    assert response.status_code == 422
    assert problems_of(response) == [
        ("17", "alcohol", "must be a number, got text that is not a number")
    ]
    assert "Invalid CSV: 1 problem." in text_of(response)

    response = upload(client, with_cell(with_cell(content, 17, 8, "15"), 20, 0, "-1"))
    assert response.status_code == 422
    assert problems_of(response) == [
        ("17", "pH", "15 is outside the physical bounds [0, 14] pH"),
        ("20", "fixed acidity", "-1 is outside the physical bounds [0, 25] g(tartaric acid)/dm³"),
    ]


@pytest.mark.parametrize("cell", ["1_0", "\uff11\uff10", "\u00a010\u00a0"])
def test_a_value_only_python_reads_as_a_number_is_named_by_line_and_column(
    client, red_rows, cell
) -> None:
    content = csv_text(red_rows[:30], [f.name for f in FEATURES], ";")
    response = upload(client, with_cell(content, 17, 10, cell))
    assert response.status_code == 422
    assert problems_of(response) == [
        ("17", "alcohol", "must be a number, got text that is not a number")
    ]


def multipart(token: str, content: bytes, boundary: str = "wq-boundary") -> bytes:
    """A browser's upload of `content` as wines.csv, with the CSRF token, as raw bytes."""
    return b"".join(
        [
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'.encode(),
            f"{token}\r\n--{boundary}\r\n".encode(),
            b'Content-Disposition: form-data; name="file"; filename="wines.csv"\r\n',
            b"Content-Type: text/csv\r\n\r\n",
            content,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )


@pytest.mark.parametrize(
    ("content_type", "cut", "problem"),
    [
        ("multipart/form-data", False, "its Content-Type header has no boundary parameter"),
        (
            "multipart/form-data; boundary=another",
            False,
            "no parts found: the body never holds the boundary its Content-Type names",
        ),
        (
            "multipart/form-data; boundary=wq-boundary",
            True,
            "the body is truncated: it ends before the closing boundary",
        ),
    ],
)
def test_a_malformed_multipart_body_is_named_not_taken_for_a_missing_token(
    client, red_rows, content_type, cut, problem
) -> None:
    body = multipart(token_of(client), csv_text(red_rows[:20], [f.name for f in FEATURES], ";"))
    whole = client.post(
        "/batch", data=body, content_type="multipart/form-data; boundary=wq-boundary"
    )
    assert whole.status_code == 200  # the same body, well formed
    response = client.post(
        "/batch", data=body[: len(body) // 2] if cut else body, content_type=content_type
    )
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    text = text_of(response)
    assert f"The upload is not a well-formed multipart/form-data body: {problem}." in text
    assert "security token" not in text


def test_a_url_encoded_form_that_is_not_utf8_is_named(client) -> None:
    token_of(client)
    response = client.post(
        "/", data=b"alcohol=\xff", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400
    assert "The form data is not UTF-8 text." in text_of(response)


def test_the_csrf_cookie_is_checked_before_the_multipart_body(app) -> None:
    response = app.test_client().post("/batch", data=b"--x\r\n", content_type="multipart/form-data")
    assert response.status_code == 400
    assert "did not send the page's security cookie" in text_of(response)


def test_too_many_rows_are_refused_with_the_limit(settings, model, red_csv) -> None:
    client = build_app(settings, model, max_batch_rows=100).test_client()
    response = upload(client, red_csv)
    assert response.status_code == 413
    text = text_of(response)
    assert "The CSV has more than 100 lines after the header" in text
    assert "the limit is 100 rows" in text
    assert "Split the file into smaller batches" in text


def test_an_upload_above_the_body_limit_gets_a_readable_413(settings, model, red_csv) -> None:
    client = build_app(settings, model, max_body_bytes=20_000).test_client()
    response = upload(client, red_csv)
    assert response.status_code == 413
    assert response.mimetype == "text/html"
    assert "larger than the limit of 19.5 KiB" in text_of(response)


def test_too_many_form_fields_get_a_413_that_names_the_form_limits(client, red_rows) -> None:
    data = {**form_for(red_rows[0], token_of(client)), **{f"extra{i}": "1" for i in range(40)}}
    response = client.post("/", data=data, content_type="multipart/form-data")
    assert response.status_code == 413
    text = text_of(response)
    assert "The form is too large or has too many fields" in text
    assert "at most 32 form fields, 500 KiB in a text field" in text
    assert "The upload is larger than" not in text


@pytest.mark.parametrize(
    ("content", "status", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 400, "binary, not a CSV text file"),
        ("acidité;pH\n1;2\n".encode("latin-1"), 400, "not UTF-8 text"),
        (b"", 422, "The file is empty"),
        (b"just some words\n", 422, "just some words"),
    ],
)
def test_a_file_that_is_not_a_csv_gets_a_readable_error(client, content, status, message) -> None:
    response = upload(client, content, "picture.png")
    assert response.status_code == status
    assert message in text_of(response)
    assert "Traceback" not in response.get_data(as_text=True)


def test_no_file_chosen(client) -> None:
    response = client.post(
        "/batch", data={"csrf_token": token_of(client)}, content_type="multipart/form-data"
    )
    assert response.status_code == 400
    assert "no file was chosen" in text_of(response).lower()


def test_uploaded_content_is_shown_escaped(client, red_rows) -> None:
    payload = '<script>alert("x")</script>'
    header = [*(f.name for f in FEATURES), payload]
    content = csv_text(red_rows[:2], header, ";")
    response = upload(client, content, filename="<img src=x onerror=alert(1)>.csv")
    body = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "<script>alert" not in body and "<img src=x" not in body
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in body
    assert "&lt;img src=x onerror=alert(1)&gt;.csv" in body


def test_uploads_are_parsed_in_memory(settings, model, red_rows, monkeypatch) -> None:
    """A file above werkzeug's 500 KB spool threshold must not reach a temporary file."""
    import werkzeug.formparser

    def no_disk(*args, **kwargs):
        raise AssertionError("the upload was spooled to disk")

    monkeypatch.setattr(werkzeug.formparser, "SpooledTemporaryFile", no_disk)
    monkeypatch.setattr(werkzeug.formparser, "TemporaryFile", no_disk, raising=False)
    rows = np.tile(red_rows, (6, 1)) + 1e-9  # 9,594 rows with long numbers: about 1.5 MB
    content = csv_text(rows, [f.name for f in FEATURES], ";")
    assert len(content) > 600_000
    response = upload(build_app(settings, model).test_client(), content)
    assert response.status_code == 200
    assert f'<strong id="row-count">{len(rows)}</strong>' in response.get_data(as_text=True)


def test_reloading_a_result_url_leads_back_to_the_upload_form(client) -> None:
    response = client.get("/batch")
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/#batch")


def test_an_unexpected_failure_gets_an_html_page_not_a_trace(
    settings, model, red_csv, monkeypatch
) -> None:
    import wine_quality.app.web.views

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(wine_quality.app.web.views, "parse_csv", broken)
    client = build_app(settings, model).test_client()
    response = upload(client, red_csv)
    assert response.status_code == 500
    assert response.mimetype == "text/html"
    request_id = response.headers["X-Request-ID"]
    assert f"The request id {request_id} identifies it" in text_of(response)
    assert "secret internals" not in response.get_data(as_text=True)


# ---------------------------------------------------------------- headers on every response


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/healthz",
        "/v1/model",
        "/openapi.json",
        "/docs",
        "/no-such-page",
        "/static/web/style.css",
    ],
)
def test_security_headers_on_every_response(client, path) -> None:
    headers = client.get(path).headers
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"


def test_api_post_responses_carry_the_headers_too(client, red_rows) -> None:
    record = {f.name: float(v) for f, v in zip(FEATURES, red_rows[0], strict=True)}
    response = client.post("/v1/predict", json=record)
    assert response.status_code == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def test_https_requests_get_hsts_and_a_secure_cookie(app) -> None:
    """HTTPS as the app sees it: gunicorn sets the scheme from X-Forwarded-Proto of a proxy in
    FORWARDED_ALLOW_IPS (tests/browser checks that part under the real server)."""
    plain = app.test_client().get("/")
    assert "Strict-Transport-Security" not in plain.headers
    assert "Secure" not in plain.headers["Set-Cookie"]
    secure = app.test_client().get("/", base_url="https://localhost")
    assert secure.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "; Secure" in secure.headers["Set-Cookie"]


def test_gunicorn_trusts_forwarded_proto_from_the_configured_proxies(tmp_path) -> None:
    assert gunicorn_master(tmp_path)["forwarded_allow_ips"] == "127.0.0.1,::1"
    ingress = gunicorn_master(tmp_path, FORWARDED_ALLOW_IPS="10.42.0.0/16")
    assert ingress["forwarded_allow_ips"] == "10.42.0.0/16"


def test_pages_are_not_cached_but_assets_are(client) -> None:
    assert client.get("/").headers["Cache-Control"] == "no-store"
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.mimetype == "image/svg+xml"
    assert "no-store" not in icon.headers.get("Cache-Control", "")


# ---------------------------------------------------------------- intervals and reasons


def test_the_result_shows_the_interval_next_to_the_grade(client, model, red_rows) -> None:
    body = client.post("/", data=form_for(red_rows[0], token_of(client))).get_data(as_text=True)
    low, high = model.facts.intervals.bounds(red_rows[:1], model.predict(red_rows[:1]))
    assert re.search(r'id="interval-low">(.*?)<', body).group(1) == f"{low[0]:.1f}"
    assert re.search(r'id="interval-high">(.*?)<', body).group(1) == f"{high[0]:.1f}"
    assert f"{model.facts.intervals.level:.0%} interval" in body
    assert 'id="contributions"' not in body  # only when asked for
    assert 'name="explain" value="1" id="explain">' in body  # the toggle, unchecked


def test_the_explain_toggle_draws_the_contributions_without_inline_styles(
    client, model, red_rows
) -> None:
    form = {**form_for(red_rows[0], token_of(client)), "explain": "1"}
    response = client.post("/", data=form)
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    explanation = model.explainer.explain(red_rows[:1])
    chart = re.search(r'<figure class="contributions".*?</figure>', body, re.S).group(0)
    rows = re.findall(
        r'<tr data-key="(\w+)">.*?<rect x="([\d.]+)" width="([\d.]+)".*?class="amount">(.*?)</td>',
        chart,
        re.S,
    )
    assert len(rows) == 11
    shown = {key: float(amount) for key, _, _, amount in rows}
    expected = dict(zip((f.key for f in FEATURES), explanation.contributions[0], strict=True))
    for key, value in shown.items():
        assert value == pytest.approx(expected[key], abs=5e-4)
    # largest effect first, its bar half the chart wide; the others in proportion
    assert [abs(v) for v in shown.values()] == sorted(
        (abs(v) for v in shown.values()), reverse=True
    )
    assert float(rows[0][2]) == pytest.approx(50)
    for _, x, width, amount in rows:
        assert float(x) == pytest.approx(50 if float(amount) >= 0 else 50 - float(width), abs=0.01)
    base = float(re.search(r'id="base-value">(.*?)<', chart).group(1))
    assert base == pytest.approx(explanation.base_value[0], abs=5e-3)
    assert "style=" not in body and "<script" not in body
    assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]
    assert 'id="explain" checked' in body  # the toggle stays on


def test_the_batch_table_and_download_carry_the_interval(client, model, red_rows) -> None:
    content = csv_text(red_rows[:5], [f.name for f in FEATURES], ";")
    body = upload(client, content).get_data(as_text=True)
    low, high = model.facts.intervals.bounds(red_rows[:5], model.predict(red_rows[:5]))
    cells = re.findall(r'<td class="interval">(.*?)</td>', body)
    assert cells == [f"{a:.1f}\N{EN DASH}{b:.1f}" for a, b in zip(low, high, strict=True)]
    link = re.search(r'id="download" href="data:text/csv;charset=utf-8;base64,([^"]+)"', body)
    records = list(csv.DictReader(io.StringIO(base64.b64decode(link.group(1)).decode())))
    np.testing.assert_allclose([float(r["quality_low"]) for r in records], low, atol=1e-6)
    np.testing.assert_allclose([float(r["quality_high"]) for r in records], high, atol=1e-6)


def test_an_upload_beyond_the_workers_parsing_slots_gets_503_with_retry_after(
    client, red_csv, monkeypatch
) -> None:
    from wine_quality.app import requestbody

    monkeypatch.setattr(requestbody, "SLOT_WAIT_SECONDS", 0.05)
    for _ in range(requestbody.LARGE_BODY_SLOTS):  # other requests hold every slot
        assert requestbody._large_bodies.acquire(timeout=1)
    try:
        response = upload(client, red_csv)  # about 100 KB: a large body
    finally:
        for _ in range(requestbody.LARGE_BODY_SLOTS):
            requestbody._large_bodies.release()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "retry in a moment" in text_of(response)
    assert upload(client, red_csv).status_code == 200
