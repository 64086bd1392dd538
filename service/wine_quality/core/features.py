"""The one definition of the model's inputs: names, order, units and physical bounds.

Training, the data validator, the HTTP API, the OpenAPI spec, the web page and the chart's docs
all read this module; nothing else spells the feature list out.

The physical bounds are what the chemistry allows for a table wine, not what the training data
happened to contain: a value outside them is an error everywhere (422 from the API, a failed
validation for a training file). The *training* range (recorded per feature in the model
metadata) is narrower; values between the two are served with a warning.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Feature:
    name: str  # as in the UCI CSV header, e.g. "fixed acidity"
    key: str  # snake_case alias, e.g. "fixed_acidity"
    unit: str
    minimum: float  # inclusive physical lower bound
    maximum: float  # inclusive physical upper bound
    description: str

    def in_bounds(self, value: float) -> bool:
        return self.minimum <= value <= self.maximum

    def problem(self, value: float) -> str | None:
        """Why `value` cannot be a measurement of this feature, or None when it can."""
        if not math.isfinite(value):
            return "must be a finite number (not NaN or infinity)"
        if self.in_bounds(value):
            return None
        bounds = f"[{self.minimum:g}, {self.maximum:g}] {self.unit}"
        return f"{value:g} is outside the physical bounds {bounds}"


FEATURES: tuple[Feature, ...] = (
    Feature(
        "fixed acidity",
        "fixed_acidity",
        "g(tartaric acid)/dm³",
        0.0,
        25.0,
        "Non-volatile acids, mostly tartaric.",
    ),
    Feature(
        "volatile acidity",
        "volatile_acidity",
        "g(acetic acid)/dm³",
        0.0,
        5.0,
        "Acetic acid; high values taste of vinegar.",
    ),
    Feature("citric acid", "citric_acid", "g/dm³", 0.0, 5.0, "Adds freshness in small amounts."),
    Feature(
        "residual sugar", "residual_sugar", "g/dm³", 0.0, 300.0, "Sugar left after fermentation."
    ),
    Feature("chlorides", "chlorides", "g(sodium chloride)/dm³", 0.0, 2.0, "Salt content."),
    Feature(
        "free sulfur dioxide",
        "free_sulfur_dioxide",
        "mg/dm³",
        0.0,
        500.0,
        "Unbound SO₂, protects against microbes and oxidation.",
    ),
    Feature(
        "total sulfur dioxide",
        "total_sulfur_dioxide",
        "mg/dm³",
        0.0,
        1000.0,
        "Free plus bound SO₂.",
    ),
    Feature(
        "density", "density", "g/cm³", 0.8, 1.2, "Close to water's; depends on alcohol and sugar."
    ),
    Feature("pH", "ph", "pH", 0.0, 14.0, "Acidity on the pH scale."),
    Feature(
        "sulphates",
        "sulphates",
        "g(potassium sulphate)/dm³",
        0.0,
        5.0,
        "Additive contributing to SO₂ levels.",
    ),
    Feature("alcohol", "alcohol", "% vol", 0.0, 25.0, "Alcohol by volume."),
)

TARGET = "quality"
TARGET_MINIMUM = 0
TARGET_MAXIMUM = 10


def grades(quality: np.ndarray) -> np.ndarray:
    """Predicted qualities as whole grades: rounded half up, clipped to the target's scale."""
    if len(quality) == 1 and math.isfinite(quality[0]):  # one wine: see one_value_clipped
        grade = math.floor(float(quality[0]) + 0.5)
        return np.array([min(max(grade, TARGET_MINIMUM), TARGET_MAXIMUM)], dtype=np.int64)
    return np.floor(quality + 0.5).clip(TARGET_MINIMUM, TARGET_MAXIMUM).astype(np.int64)


def within(values: list[float], low: list[float], high: list[float]) -> bool:
    """low[i] <= values[i] <= high[i] for every i (False for NaN): one row's range check, the
    comparisons done in C."""
    return all(map(operator.le, low, values)) and all(map(operator.le, values, high))


def one_value_clipped(value: float, low: float, high: float) -> float:
    """np.clip for a single float and bounds that are numbers, to the bit: a value is replaced
    only when strictly past a bound (so NaN stays NaN, and -0.0 at a bound of 0.0 stays -0.0),
    as numpy's loop does.

    A single wine's arithmetic is done in Python floats, which round every operation as numpy's
    float64 does: numpy costs a microsecond or more per call on an array of one (several under
    load, with cold caches), a Python float operation a few tens of nanoseconds."""
    value = low if value < low else value
    return high if value > high else value


FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURE_KEYS: tuple[str, ...] = tuple(f.key for f in FEATURES)
CSV_COLUMNS: tuple[str, ...] = (*FEATURE_NAMES, TARGET)

_BY_ANY_NAME: dict[str, Feature] = {
    **{f.name: f for f in FEATURES},
    **{f.key: f for f in FEATURES},
}


def resolve(name: str) -> Feature | None:
    """The feature called `name` ("fixed acidity" or "fixed_acidity"), or None."""
    return _BY_ANY_NAME.get(name)


_COLUMN: dict[str, int] = {f.name: column for column, f in enumerate(FEATURES)}


def index_of(feature: Feature) -> int:
    """The feature's column; a dict lookup, as it runs once per value of every request row
    (FEATURES.index compared whole dataclasses: a third of a 10,000-row JSON request)."""
    return _COLUMN[feature.name]
