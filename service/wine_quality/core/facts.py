"""What a trained model is, as typed attributes: the validated view of `metadata.json`.

`ModelFacts.from_metadata()` checks every field the service reads (types, ranges, one entry per
feature) and raises `MetadataError` naming the first field that is wrong, so a damaged or
hand-edited metadata file makes the model unusable with a clear reason instead of failing later
in a page or a metric. The API, the web page, the metrics and the benchmarks read these
attributes; only `/v1/model` shows the raw metadata.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from wine_quality.core.features import (
    FEATURES,
    TARGET_MAXIMUM,
    TARGET_MINIMUM,
    Feature,
    one_value_clipped,
    within,
)
from wine_quality.core.problems import kind_of

# Versions end up in file names, URLs, CSV cells and metric labels: a plain token, never a formula.
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,127}$")


class MetadataError(ValueError):
    """A metadata field is missing or of the wrong type; the message names the field."""


@dataclass(frozen=True)
class FeatureFacts:
    """One input as the training data had it."""

    feature: Feature
    train_min: float
    train_max: float
    median: float


@dataclass(frozen=True)
class Difficulty:
    """How hard a wine is to predict: a linear estimate of the absolute error from its inputs and
    its prediction, kept within [floor, ceiling] (training/intervals.py fits it; a constant 1
    when normalising did not narrow the intervals)."""

    intercept: float
    weights: np.ndarray  # [11], FEATURES order
    prediction_weight: float
    floor: float
    ceiling: float

    def __call__(self, rows: np.ndarray, quality: np.ndarray) -> np.ndarray:
        # The weighted inputs are added column by column in FEATURES order rather than by a
        # matrix product, whose order of additions (BLAS's) depends on the batch's shape: so a
        # wine gets the same number alone (of_one) or in any batch.
        inputs = rows[:, 0] * self.weights[0]
        for column in range(1, len(self.weights)):
            inputs = inputs + rows[:, column] * self.weights[column]
        estimate = self.intercept + inputs + self.prediction_weight * quality
        return estimate.clip(self.floor, self.ceiling)

    def of_one(self, row: list[float], quality: float) -> float:
        """__call__ for a single row, in Python floats (features.one_value_clipped): the same
        operations in the same order, so the same number."""
        weights = self._weight_list
        inputs = row[0] * weights[0]
        for column in range(1, len(weights)):
            inputs = inputs + row[column] * weights[column]
        estimate = self.intercept + inputs + self.prediction_weight * quality
        return one_value_clipped(estimate, self.floor, self.ceiling)

    @cached_property
    def _weight_list(self) -> list[float]:
        return self.weights.tolist()

    def as_metadata(self) -> dict[str, Any]:
        return {
            "intercept": self.intercept,
            "weights": dict(zip((f.key for f in FEATURES), self.weights.tolist(), strict=True)),
            "prediction_weight": self.prediction_weight,
            "floor": self.floor,
            "ceiling": self.ceiling,
        }

    @classmethod
    def from_fields(cls, fields: _Fields) -> Difficulty:
        weights = fields.mapping("weights")
        floor, ceiling = fields.number("floor"), fields.number("ceiling")
        if not 0 < floor <= ceiling:
            raise MetadataError(
                f"{fields.where}: need 0 < floor <= ceiling, got {floor!r} and {ceiling!r}"
            )
        return cls(
            fields.number("intercept"),
            np.array([weights.number(f.key) for f in FEATURES], dtype=np.float64),
            fields.number("prediction_weight"),
            floor,
            ceiling,
        )


def interval_bounds(
    quality: np.ndarray, half_width: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """quality -/+ half_width, clipped to the grade scale (the one interval arithmetic)."""
    low = (quality - half_width).clip(TARGET_MINIMUM, TARGET_MAXIMUM)
    high = (quality + half_width).clip(TARGET_MINIMUM, TARGET_MAXIMUM)
    return low, high


def one_interval(quality: float, half_width: float) -> tuple[float, float]:
    """interval_bounds for a single prediction, in Python floats."""
    low = one_value_clipped(quality - half_width, _GRADE_MINIMUM, _GRADE_MAXIMUM)
    high = one_value_clipped(quality + half_width, _GRADE_MINIMUM, _GRADE_MAXIMUM)
    return low, high


_GRADE_MINIMUM, _GRADE_MAXIMUM = float(TARGET_MINIMUM), float(TARGET_MAXIMUM)


@dataclass(frozen=True)
class IntervalFacts:
    """The conformal prediction interval fixed at training time (training/intervals.py): a row's
    half-width is `quantile` times its difficulty."""

    level: float  # e.g. 0.8: the share of wines whose true grade the interval should hold
    quantile: float  # conformal quantile of the out-of-fold |residual| / difficulty
    difficulty: Difficulty
    coverage_test: float  # measured on the held-out part
    mean_width_test: float
    method: str

    @classmethod
    def from_fields(cls, fields: _Fields) -> IntervalFacts:
        level, quantile = fields.number("level"), fields.number("quantile")
        coverage = fields.number("coverage_test")
        if not 0 < level < 1:
            raise MetadataError(f"{fields.where}.level must be between 0 and 1, got {level!r}")
        if quantile < 0:
            raise MetadataError(f"{fields.where}.quantile must not be negative, got {quantile!r}")
        if not 0 <= coverage <= 1:
            raise MetadataError(f"{fields.where}.coverage_test must be in [0, 1], got {coverage!r}")
        return cls(
            level,
            quantile,
            Difficulty.from_fields(fields.mapping("difficulty")),
            coverage,
            fields.number("mean_width_test"),
            fields.text("method"),
        )

    def bounds(self, rows: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(quality) == 1:  # one wine: Python floats (features.one_value_clipped)
            value = float(quality[0])
            difficulty = self.difficulty.of_one(rows[0].tolist(), value)
            low, high = one_interval(value, self.quantile * difficulty)
            return np.array([low]), np.array([high])
        return interval_bounds(quality, self.quantile * self.difficulty(rows, quality))


@dataclass(frozen=True)
class ModelFacts:
    name: str
    version: str
    algorithm: str
    wine: str
    trained_at: str
    features: tuple[FeatureFacts, ...]  # in FEATURES order
    target_mean: float
    test_metrics: Mapping[str, float]
    baseline_test_metrics: Mapping[str, float]
    data_rows: int
    test_rows: int
    intervals: IntervalFacts

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> ModelFacts:
        fields = _Fields(metadata, "")
        metrics = fields.mapping("metrics")
        data = fields.mapping("data")
        baseline = metrics.optional_mapping("baseline")
        return cls(
            name=fields.text("name"),
            version=fields.version("version"),
            algorithm=fields.text("algorithm"),
            wine=fields.text("wine"),
            trained_at=fields.text("trained_at"),
            features=_feature_facts(fields.sequence("features")),
            target_mean=fields.mapping("target").number("mean"),
            test_metrics=metrics.mapping("test").numbers(),
            baseline_test_metrics=baseline.mapping("test").numbers() if baseline else {},
            data_rows=data.count("rows"),
            test_rows=data.count("test_rows"),
            intervals=IntervalFacts.from_fields(fields.mapping("intervals")),
        )

    @cached_property
    def training_range(self) -> TrainingRange:
        return TrainingRange(
            np.array([f.train_min for f in self.features], dtype=np.float64),
            np.array([f.train_max for f in self.features], dtype=np.float64),
        )


def _feature_facts(entries: list[_Fields]) -> tuple[FeatureFacts, ...]:
    by_name = {entry.text("name"): entry for entry in entries}
    facts = []
    for feature in FEATURES:
        entry = by_name.get(feature.name)
        if entry is None:
            raise MetadataError(f"features: no entry for {feature.name!r}")
        low, high = entry.number("train_min"), entry.number("train_max")
        if low > high:
            raise MetadataError(f"{entry.where}: train_min {low:g} is above train_max {high:g}")
        median = entry.mapping("quantiles").number("0.5")
        facts.append(FeatureFacts(feature, low, high, median))
    return tuple(facts)


class _Fields:
    """Typed access to one JSON object of the metadata; errors name the field's path."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, Mapping):
            raise MetadataError(f"{where or 'metadata'} must be an object, got {_kind(value)}")
        self.value = value
        self.where = where

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _get(self, key: str) -> Any:
        if key not in self.value:
            raise MetadataError(f"{self._path(key)} is missing")
        return self.value[key]

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value:
            raise MetadataError(f"{self._path(key)} must be a non-empty string, got {_kind(value)}")
        return value

    def version(self, key: str) -> str:
        value = self.text(key)
        if not _VERSION.match(value):
            raise MetadataError(
                f"{self._path(key)} must be letters, digits and . + _ - (at most 128), "
                f"got {value[:40]!r}"
            )
        return value

    def number(self, key: str) -> float:
        value = self._get(key)
        if not _is_number(value) or not math.isfinite(value):
            raise MetadataError(f"{self._path(key)} must be a finite number, got {_kind(value)}")
        return float(value)

    def count(self, key: str) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise MetadataError(f"{self._path(key)} must be a whole number, got {_kind(value)}")
        return value

    def mapping(self, key: str) -> _Fields:
        return _Fields(self._get(key), self._path(key))

    def optional_mapping(self, key: str) -> _Fields | None:
        return self.mapping(key) if key in self.value else None

    def sequence(self, key: str) -> list[_Fields]:
        value = self._get(key)
        if not isinstance(value, list):
            raise MetadataError(f"{self._path(key)} must be an array, got {_kind(value)}")
        return [_Fields(item, f"{self._path(key)}[{i}]") for i, item in enumerate(value)]

    def numbers(self) -> dict[str, float]:
        """Every entry of this object, each a finite number."""
        return {key: self.number(key) for key in self.value}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    """The value itself for a number or an empty string (metadata is ours to show), else its
    kind."""
    if _is_number(value):
        return repr(value)
    return "an empty string" if value == "" else kind_of(value)


class TrainingRange:
    """The range each feature had in the training data; values outside it are served with a
    warning (and counted as drift)."""

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        self.low = low
        self.high = high
        self._low, self._high = low.tolist(), high.tolist()

    def outside(self, rows: np.ndarray) -> np.ndarray:
        """Boolean [n, 11] mask of cells outside the training range (read-only for a single
        row inside it: one shared array)."""
        if len(rows) == 1 and within(rows[0].tolist(), self._low, self._high):
            return _NONE_OUTSIDE
        return (rows < self.low) | (rows > self.high)

    def warnings(self, rows: np.ndarray, mask: np.ndarray) -> list[list[str]]:
        """One list of warning strings per row (empty for most rows), for the cells in `mask`."""
        result: list[list[str]] = [[] for _ in range(len(rows))]
        for row, column in zip(*np.nonzero(mask), strict=True):
            value = rows[row, column]
            side = "below" if value < self.low[column] else "above"
            result[row].append(
                f"{FEATURES[column].name} {value:g} is {side} the training range "
                f"[{self.low[column]:g}, {self.high[column]:g}]; the prediction is less reliable"
            )
        return result


def any_outside(mask: np.ndarray) -> bool:
    """Whether a mask from TrainingRange.outside flags any cell (the shared one-row mask without
    asking numpy)."""
    return mask is not _NONE_OUTSIDE and bool(mask.any())


_NONE_OUTSIDE = np.zeros((1, len(FEATURES)), dtype=bool)
_NONE_OUTSIDE.flags.writeable = False
