"""A single wine is computed in Python floats rather than numpy (core/features.one_value_clipped
says why); these tests hold that it gets the very numbers, to the bit, that it gets as a row of
a batch, which numpy computes: the range check, the interval, the grade, the rounding of the
answer, the input validation and the whole API answer."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from wine_quality.app.inputs import InputError, validate_rows
from wine_quality.app.state import Prediction
from wine_quality.core.facts import any_outside
from wine_quality.core.features import FEATURES, grades, one_value_clipped

EDGES = [0.0, -0.0, 0.5, 2.5, 3.5, 4.999999999, 5.5, 9.5, 10.0, 10.5, -0.5, 1e-300, -1e-300]
SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def same_float(a: float, b: float) -> bool:
    """Equal bits: NaN equals NaN, and 0.0 differs from -0.0."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


any_float = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(EDGES)
bound = st.floats(allow_nan=False) | st.sampled_from(EDGES)  # ours are checked numbers
quality_like = st.floats(-2.0, 12.0) | st.sampled_from(EDGES)


@given(value=any_float, low=bound, high=bound)
@example(value=-0.0, low=0.0, high=10.0)
@example(value=0.0, low=-0.0, high=10.0)
@example(value=10.0, low=0.0, high=10.0)
@example(value=float("nan"), low=0.0, high=10.0)
@example(value=5.0, low=6.0, high=4.0)
def test_one_value_clipped_is_numpys_clip_to_the_bit(value, low, high):
    expected = float(np.clip(np.array([value]), low, high)[0])
    assert same_float(one_value_clipped(value, low, high), expected)


@given(quality=quality_like | st.sampled_from([math.nan, math.inf, -math.inf]))
def test_a_grade_alone_is_the_grade_in_a_batch(quality):
    with np.errstate(invalid="ignore"):  # NaN and infinity cast to int64, as numpy does
        alone = grades(np.array([quality]))
        batch = grades(np.array([quality, 5.0]))
    assert alone.dtype == batch.dtype == np.int64
    assert alone.tolist() == batch[:1].tolist()


@pytest.fixture(scope="module")
def facts(loaded_model):
    return loaded_model.facts


def near_the_training_range(facts) -> st.SearchStrategy[list[float]]:
    """Rows whose values lie around each feature's training range: inside, on its ends, just
    past them, and far outside."""

    def column(feature_facts):
        low, high = feature_facts.train_min, feature_facts.train_max
        width = high - low or 1.0
        return st.floats(low - width, high + width) | st.sampled_from(
            [low, high, math.nextafter(low, -math.inf), math.nextafter(high, math.inf)]
        )

    return st.tuples(*(column(f) for f in facts.features)).map(list)


def medians(facts) -> list[float]:
    return [f.median for f in facts.features]


@SETTINGS
@given(data=st.data(), quality=quality_like)
def test_a_wine_alone_gets_the_range_check_and_interval_it_gets_in_a_batch(facts, data, quality):
    row = data.draw(near_the_training_range(facts))
    alone = np.array([row])
    batch = np.array([row, medians(facts)])
    qualities = np.array([quality, 5.0])

    outside = facts.training_range.outside(alone)
    assert outside.tolist() == facts.training_range.outside(batch)[:1].tolist()
    assert any_outside(outside) == bool(outside.any())

    low, high = facts.intervals.bounds(alone, qualities[:1])
    batch_low, batch_high = facts.intervals.bounds(batch, qualities)
    assert same_float(low[0], batch_low[0]) and same_float(high[0], batch_high[0])


@SETTINGS
@given(data=st.data(), numbers=st.tuples(quality_like, quality_like, quality_like))
@example(data=None, numbers=(5.0000005, 4.9999995, 1.2345675))  # halfway at the 6th decimal
@example(data=None, numbers=(-0.0, -1e-7, 1e12))
def test_a_wine_alone_is_answered_with_the_record_it_gets_in_a_batch(facts, data, numbers):
    row = data.draw(near_the_training_range(facts)) if data else medians(facts)

    def first_record(rows: np.ndarray, values: tuple[float, float, float]) -> bytes:
        quality, low, high = (np.array(column) for column in values)
        outside = facts.training_range.outside(rows)
        warnings = facts.training_range.warnings(rows, outside)
        prediction = Prediction(quality, grades(quality), warnings, outside, "v", low, high, 0.8)
        return orjson.dumps(prediction.records()[0])  # "-0.0" and "0.0" differ here

    batch_values = tuple([value, 5.0] for value in numbers)
    alone = first_record(np.array([row]), tuple([value] for value in numbers))
    assert alone == first_record(np.array([row, medians(facts)]), batch_values)


def physical_rows() -> st.SearchStrategy[list[float]]:
    """Rows around each feature's physical bounds, NaN and infinities among them."""

    def column(feature):
        return st.floats(feature.minimum - 1, feature.maximum + 1) | st.sampled_from(
            [feature.minimum, feature.maximum, math.nan, math.inf, -math.inf]
        )

    return st.tuples(*(column(f) for f in FEATURES)).map(list)


def problems(rows: np.ndarray) -> list[dict] | None:
    try:
        validate_rows(rows)
    except InputError as exc:
        return exc.details
    return None


@settings(max_examples=400, deadline=None)
@given(row=physical_rows())
def test_a_wine_alone_is_validated_as_in_a_batch(row):
    valid = [(f.minimum + f.maximum) / 2 for f in FEATURES]
    assert problems(np.array([row])) == problems(np.array([row, valid]))


@pytest.fixture(scope="module")
def client(loaded_model):
    from wine_quality.app import create_app
    from wine_quality.app.settings import Settings

    return create_app(Settings.from_env({}), model=loaded_model).test_client()


@SETTINGS
@given(data=st.data())
def test_the_api_answers_a_wine_alone_as_the_first_row_of_a_batch(client, facts, data):
    row = data.draw(near_the_training_range(facts))
    wine = {f.key: value for f, value in zip(FEATURES, row, strict=True)}
    other = {f.key: value for f, value in zip(FEATURES, medians(facts), strict=True)}
    alone = client.post("/v1/predict", json=wine)
    batch = client.post("/v1/predict", json={"instances": [wine, other]})
    assert alone.status_code == batch.status_code
    if alone.status_code != 200:  # outside the physical bounds: the same problems named
        assert alone.json["error"]["details"] == batch.json["error"]["details"]
        return
    answer = alone.json
    assert answer.pop("model_version") == batch.json["model_version"]
    assert orjson.dumps(answer) == orjson.dumps(batch.json["predictions"][0])
