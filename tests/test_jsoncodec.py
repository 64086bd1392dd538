"""orjson reads and writes the service's JSON only where the json module would give the same."""

from __future__ import annotations

import codecs
import json
from typing import Any

import numpy as np
import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wine_quality.app import inputs
from wine_quality.app.inputs import InputError, parse_json
from wine_quality.app.jsoncodec import (
    NOT_PLAIN,
    PLAIN_MAX_DEPTH,
    PLAIN_MAX_DIGITS,
    JsonProvider,
    loads_plain,
)
from wine_quality.core.features import FEATURES

MAX_ROWS = 10_000
ROW = {f.key: round(f.minimum + (f.maximum - f.minimum) / 3, 4) for f in FEATURES}


def outcome(parse: Any, data: bytes) -> tuple:
    """What a parse gives, comparable: the value's repr (ints and floats, -0.0 and NaN told
    apart) or the InputError's status, code, message and details."""
    try:
        return ("value", repr(parse(data, MAX_ROWS) if parse is parse_json else parse(data)))
    except InputError as error:
        return ("error", error.status, error.code, error.message, error.details)


def assert_same_as_json_module(data: bytes) -> None:
    assert outcome(parse_json, data) == outcome(inputs._parse_json_exactly, data)


# ----------------------------------------------------------------- documents, as bytes

KEYS = st.sampled_from(["a", "b", "a:b", "fixed_acidity", "é", "{", "["])
NUMBERS = st.one_of(
    st.integers(-(10**22), 10**22).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "-0", "-0.0", "1e400", "1E-400", "0.1e1"]),
)
STRINGS = st.one_of(
    st.text(max_size=8).map(json.dumps),
    st.sampled_from([r'"\ud800"', r'"\udc00x"', '"a:b"', '"{["', r'"\u00e9"', '"é"']),
)
SCALARS = st.one_of(NUMBERS, STRINGS, st.sampled_from(["true", "false", "null"]))


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{json.dumps(key)}:{value}" for key, value in pairs) + "}"


DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(KEYS, inner), max_size=4).map(_object),  # keys repeat often
    ),
    max_leaves=20,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    text = draw(DOCUMENTS)
    if draw(st.booleans()):
        text = f" \n{text}\t"
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:
        data = codecs.BOM_UTF8 + data
    if draw(st.integers(0, 9)) == 0:  # cut short, or a stray byte
        data = data[: draw(st.integers(0, len(data)))] + draw(st.sampled_from([b"", b"\xff", b","]))
    return data


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_parse_json_agrees_with_the_json_module_on_any_document(data: bytes) -> None:
    assert_same_as_json_module(data)


# ----------------------------------------------------------------- the plain path is taken


def test_a_batch_and_a_v2_request_are_read_by_orjson() -> None:
    batch = json.dumps({"instances": [ROW] * 50}).encode()
    v2 = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [50, 11],
                    "datatype": "FP64",
                    "data": [list(ROW.values())] * 50,
                }
            ],
            "parameters": {"binary_data_output": False},
        }
    ).encode()
    for body in (batch, v2, json.dumps(ROW).encode(), b"[]", b"3"):
        assert loads_plain(body) is not NOT_PLAIN, body[:60]
        assert loads_plain(body) == json.loads(body)
        assert_same_as_json_module(body)


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


NOT_PLAIN_BODIES = {
    "a key twice": b'{"a": 1, "b": 2, "a": 3}',
    "a key twice in one row of a batch": json.dumps({"instances": [ROW] * 5}).encode()[:-3]
    + b', "alcohol": 9.5}]}',
    "a key twice, hidden by a ':' in a string": b'{"a": 1, "a": "x:y"}',
    "a ':' in a key": b'{"a:b": 1}',
    "NaN": b'{"alcohol": NaN}',
    "Infinity": b"[Infinity, -Infinity]",
    "an integer beyond 64 bits": b'{"ph": 18446744073709551616}',
    "a negative integer beyond 64 bits": b"[-9223372036854775809]",
    f"{PLAIN_MAX_DIGITS + 1} digits in a fraction": b"[0." + b"1" * (PLAIN_MAX_DIGITS + 1) + b"]",
    "a lone surrogate": rb'["\ud800"]',
    "a byte order mark": codecs.BOM_UTF8 + b'{"a": 1}',
    "not UTF-8": b'{"a": "\xff"}',
    "nesting deeper than PLAIN_MAX_DEPTH": _nested(PLAIN_MAX_DEPTH + 1),
    "nesting beyond the json module's limit": b"[" * 5000 + b"]" * 5000,
    "a number beyond float range": b"[1e400]",
    "cut short": b'{"instances": [{"a": 1',
}


@pytest.mark.parametrize("body", NOT_PLAIN_BODIES.values(), ids=NOT_PLAIN_BODIES.keys())
def test_documents_orjson_reads_otherwise_go_to_the_json_module(body: bytes) -> None:
    assert loads_plain(body) is NOT_PLAIN
    assert_same_as_json_module(body)


def test_brackets_and_colons_inside_strings_do_not_hide_a_nested_duplicate() -> None:
    body = b'{"s": "[{[{:", "rows": [{"x": {"k": 1, "k": 2}}]}'
    with pytest.raises(InputError) as caught:
        parse_json(body, MAX_ROWS)
    assert (caught.value.status, caught.value.code) == (400, "duplicate_key")
    assert "'k'" in caught.value.message


def test_plain_nesting_up_to_the_limit_is_read_by_orjson() -> None:
    assert loads_plain(_nested(PLAIN_MAX_DEPTH)) is not NOT_PLAIN


def test_an_integer_of_the_longest_plain_length_is_read_exactly() -> None:
    body = b"[" + b"9" * PLAIN_MAX_DIGITS + b", -" + b"9" * PLAIN_MAX_DIGITS + b"]"
    assert loads_plain(body) == [int("9" * PLAIN_MAX_DIGITS), -int("9" * PLAIN_MAX_DIGITS)]


# ----------------------------------------------------------------- writing


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    app.json = JsonProvider(app)
    return app


def test_answers_hold_the_values_the_json_module_would_write(app: Flask) -> None:
    answer = {
        "model_version": "0.1.0+m1",
        "quality": 5.123457,
        "tiny": 2.5e-05,
        "grade": 6,
        "unit": "g(SO₂)/dm³",
        "interval": {"level": 0.8, "low": 4.5, "high": 6.25},
        "warnings": [],
    }
    with app.app_context():
        response = app.json.response(answer)
    assert response.mimetype == "application/json"
    assert response.data.endswith(b"}\n")
    assert json.loads(response.data) == answer
    assert list(json.loads(response.data)) == list(answer)  # insertion order, not sorted


@pytest.mark.parametrize(
    "value",
    [{"q": np.float64(5.5)}, {1: "a"}, [2**70]],
    ids=["numpy scalar", "integer key", "integer beyond 64 bits"],
)
def test_values_orjson_cannot_write_are_written_by_flask(app: Flask, value: Any) -> None:
    with app.app_context():
        response = app.json.response(value)
    assert response.data == (json.dumps(value, separators=(",", ":")) + "\n").encode()


def test_sort_keys_and_indent_follow_flask_settings(app: Flask) -> None:
    app.json.sort_keys = True
    app.json.compact = False
    with app.app_context():
        text = app.json.response({"b": 1, "a": [2]}).get_data(as_text=True)
    assert text == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
