"""The feature schema: one list, matching the UCI files, both spellings, sane bounds."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from wine_quality.core import features
from wine_quality.core.features import CSV_COLUMNS, FEATURE_KEYS, FEATURE_NAMES, FEATURES, TARGET
from wine_quality.training.data import load_dataset


def test_eleven_features_with_unique_names_and_keys():
    assert len(FEATURES) == 11
    assert len(set(FEATURE_NAMES)) == 11
    assert len(set(FEATURE_KEYS)) == 11
    assert (*FEATURE_NAMES, TARGET) == CSV_COLUMNS


@pytest.mark.parametrize("feature", FEATURES, ids=FEATURE_KEYS)
def test_key_is_the_snake_case_of_the_name(feature):
    assert re.fullmatch(r"[a-z][a-z0-9_]*", feature.key)
    assert feature.key == feature.name.lower().replace(" ", "_")


@pytest.mark.parametrize("feature", FEATURES, ids=FEATURE_KEYS)
def test_bounds_units_and_descriptions(feature):
    assert feature.minimum < feature.maximum
    assert feature.unit and feature.description
    assert feature.in_bounds(feature.minimum) and feature.in_bounds(feature.maximum)
    assert not feature.in_bounds(feature.maximum + 1)
    assert not feature.in_bounds(feature.minimum - 1)


def test_ph_bounds_are_the_ph_scale():
    ph = features.resolve("pH")
    assert (ph.minimum, ph.maximum) == (0.0, 14.0)


@pytest.mark.parametrize("feature", FEATURES, ids=FEATURE_KEYS)
def test_resolve_accepts_both_spellings(feature):
    assert features.resolve(feature.name) is feature
    assert features.resolve(feature.key) is feature
    assert features.index_of(feature) == FEATURES.index(feature)


def test_resolve_unknown_name():
    assert features.resolve("colour") is None
    assert features.resolve("Alcohol") is None  # exact spellings only


@pytest.mark.parametrize("wine", ["red", "white"])
def test_schema_matches_the_uci_header_in_order(data_source: Path, wine: str):
    with (data_source / f"winequality-{wine}.csv").open(newline="") as handle:
        header = next(csv.reader(handle, delimiter=";"))
    assert tuple(header) == CSV_COLUMNS


@pytest.mark.parametrize("wine", ["red", "white"])
def test_every_uci_value_is_inside_the_physical_bounds(data_source: Path, wine: str):
    dataset = load_dataset(data_source / f"winequality-{wine}.csv")  # raises on any violation
    for index, feature in enumerate(FEATURES):
        column = dataset.X[:, index]
        assert feature.minimum <= column.min() and column.max() <= feature.maximum, feature.name
