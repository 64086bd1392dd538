"""The typed view of the model metadata (wine_quality.core.facts): every field the service reads
is checked, and a wrong one is named; no model or data needed."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from support import sample_intervals
from wine_quality.core.facts import MetadataError, ModelFacts, TrainingRange
from wine_quality.core.features import FEATURES


def metadata() -> dict:
    return {
        "name": "wine-quality",
        "version": "0.1.0+m1234abcd",
        "algorithm": "ridge",
        "wine": "red",
        "trained_at": "2026-12-01T00:00:00+00:00",
        "data": {"rows": 1599, "test_rows": 272},
        "metrics": {"test": {"rmse": 0.7, "mae": 0.55}, "baseline": {"test": {"rmse": 0.73}}},
        "target": {"mean": 5.6},
        "intervals": sample_intervals(),
        "features": [
            {"name": f.name, "train_min": 1.0, "train_max": 2.0, "quantiles": {"0.5": 1.5}}
            for f in FEATURES
        ],
    }


def test_facts_read_every_field_as_typed_attributes():
    facts = ModelFacts.from_metadata(metadata())
    assert (facts.version, facts.algorithm, facts.wine) == ("0.1.0+m1234abcd", "ridge", "red")
    assert facts.target_mean == 5.6 and facts.data_rows == 1599 and facts.test_rows == 272
    assert facts.test_metrics == {"rmse": 0.7, "mae": 0.55}
    assert facts.baseline_test_metrics == {"rmse": 0.73}
    assert [f.feature for f in facts.features] == list(FEATURES)
    assert facts.features[0].median == 1.5


def test_features_are_matched_by_name_not_position():
    data = metadata()
    data["features"].reverse()
    data["features"][0]["train_max"] = 9.0  # now the last feature, alcohol
    facts = ModelFacts.from_metadata(data)
    assert facts.features[-1].feature.name == "alcohol" and facts.features[-1].train_max == 9.0


def edited(path: str, value: object) -> dict:
    data = copy.deepcopy(metadata())
    *parents, last = path.split("/")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("target", 5.6, "target must be an object, got 5.6"),
        ("target/mean", "high", "target.mean must be a finite number, got a string"),
        ("features", ["x", 1], "features[0] must be an object, got a string"),
        ("features/3/train_min", "low", "features[3].train_min must be a finite number"),
        ("features/3/train_min", 9.0, "features[3]: train_min 9 is above train_max 2"),
        ("features/2/quantiles", [1, 2], "features[2].quantiles must be an object, got an array"),
        ("features/2/name", "colour", "features: no entry for 'citric acid'"),
        ("data", "oops", "data must be an object, got a string"),
        ("data/rows", -1, "data.rows must be a whole number, got -1"),
        ("metrics/test/rmse", None, "metrics.test.rmse must be a finite number, got null"),
        ("metrics/test", KeyError, "metrics.test is missing"),
        ("version", "=HYPERLINK(1)", "version must be letters, digits"),
        ("version", "", "version must be a non-empty string, got an empty string"),
        ("wine", True, "wine must be a non-empty string, got a boolean"),
    ],
)
def test_a_wrong_field_is_named(path, value, named):
    with pytest.raises(MetadataError) as error:
        ModelFacts.from_metadata(edited(path, value))
    assert named in str(error.value)


def test_metadata_that_is_not_an_object_is_refused():
    with pytest.raises(MetadataError, match="metadata must be an object, got an array"):
        ModelFacts.from_metadata([])  # type: ignore[arg-type]


def test_training_range_warns_per_row_and_cell():
    training_range = TrainingRange(np.full(11, 1.0), np.full(11, 2.0))
    rows = np.array([[1.5] * 11, [1.5] * 10 + [2.5], [0.5] + [1.5] * 10])
    outside = training_range.outside(rows)
    warnings = training_range.warnings(rows, outside)
    assert warnings[0] == []
    assert warnings[1] == [
        "alcohol 2.5 is above the training range [1, 2]; the prediction is less reliable"
    ]
    assert warnings[2][0].startswith("fixed acidity 0.5 is below the training range")
    assert outside.sum() == 2
