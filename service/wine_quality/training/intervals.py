"""Prediction intervals by normalised conformal prediction on the promoted model's out-of-fold
residuals.

The K-fold cross-validation that selects the model already predicts every training wine once
with a model that did not see it. From those out-of-fold predictions:

1. a *difficulty* estimate: a linear model of the absolute out-of-fold error on the 11 inputs and
   the prediction, kept between a tenth of the mean absolute error (no interval collapses) and
   the largest value it takes on the training wines (no wild extrapolation); cross-fitted, so
   each training wine's difficulty comes from a fit on the other folds;
2. the calibration scores ``|y - oof prediction| / difficulty``, and their conformal quantile,
   the ``ceil((n + 1) * level)``-th smallest;
3. at serving, the interval is ``prediction -/+ quantile * difficulty(x, prediction)``, clipped
   to the 0-10 scale: one dot product per row.

The guarantee of split conformal prediction (coverage of at least the level for a new wine from
the same distribution) is exact when the scores come from one model that never saw them; here
they come from K fold models and the interval is applied around the model refitted on all the
training part (cross-conformal, the CV+ family), so coverage is measured, not assumed: on the
held-out 20 %, which neither the calibration nor the fit saw. Normalising makes the interval
narrower where the model is reliably good and wider where it is not; over five splits of the red
file it gave a slightly smaller mean width than one constant width on four of them, at similar
coverage (docs/explanations.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from wine_quality.core.facts import Difficulty, interval_bounds

DEFAULT_LEVEL = 0.8
CURVE_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
FLOOR_SHARE = 0.1  # the difficulty's floor, as a share of the mean absolute out-of-fold error
METHOD = (
    "normalised cross-conformal: half-width = the ceil((n+1)*level)-th smallest out-of-fold "
    "|residual| / difficulty, times the row's difficulty (a cross-fitted linear estimate of the "
    "absolute error from the inputs and the prediction), around the refitted model's "
    "prediction, clipped to the 0-10 scale"
)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ceil((n + 1) * level)-th smallest score (infinite when n is too small)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    rank = math.ceil((len(ordered) + 1) * level)
    return float(ordered[rank - 1]) if rank <= len(ordered) else math.inf


def fit_difficulty(
    X: np.ndarray, prediction: np.ndarray, absolute_error: np.ndarray, floor: float
) -> Difficulty:
    """Least squares of the absolute error on [1, x, prediction], within [floor, the largest
    fitted value on these rows]."""
    design = np.column_stack([np.ones(len(X)), X, prediction])
    coefficients, *_ = np.linalg.lstsq(design, absolute_error, rcond=None)
    ceiling = max(float(np.max(design @ coefficients)), floor)
    return Difficulty(
        float(coefficients[0]), coefficients[1:-1].copy(), float(coefficients[-1]), floor, ceiling
    )


def cross_fitted_difficulty(
    X: np.ndarray,
    oof_prediction: np.ndarray,
    absolute_error: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    floor: float,
) -> np.ndarray:
    """Each row's difficulty from a fit on the other folds' rows."""
    result = np.empty(len(X))
    for fit_rows, score_rows in folds:
        model = fit_difficulty(
            X[fit_rows], oof_prediction[fit_rows], absolute_error[fit_rows], floor
        )
        result[score_rows] = model(X[score_rows], oof_prediction[score_rows])
    return result


def measure(y_true: np.ndarray, y_pred: np.ndarray, half_width: np.ndarray) -> tuple[float, float]:
    """Share of true grades inside the intervals, and the intervals' mean width."""
    low, high = interval_bounds(y_pred, half_width)
    inside = (y_true >= low) & (y_true <= high)
    return float(np.mean(inside)), float(np.mean(high - low))


def calibrate(
    X_train: np.ndarray,
    y_train: np.ndarray,
    oof_prediction: np.ndarray,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    X_test: np.ndarray,
    y_test: np.ndarray,
    test_prediction: np.ndarray,
    level: float = DEFAULT_LEVEL,
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """The `intervals` block of the metadata: the quantile and difficulty model at `level`, the
    held-out coverage and width, the same at a few other levels (the model card's calibration
    plot), and what one constant width would have given, for comparison; and the held-out
    intervals (low, high) at `level`."""
    if not 0 < level < 1:
        raise ValueError(f"the interval level must be between 0 and 1, got {level}")
    error = np.abs(y_train - oof_prediction)
    floor = max(FLOOR_SHARE * float(error.mean()), 1e-6)
    calibration_difficulty = cross_fitted_difficulty(X_train, oof_prediction, error, folds, floor)
    scores = error / calibration_difficulty
    difficulty = fit_difficulty(X_train, oof_prediction, error, floor)
    test_difficulty = difficulty(X_test, test_prediction)

    def at(other: float, constant: bool = False) -> dict[str, float]:
        quantile = conformal_quantile(error if constant else scores, other)
        if not math.isfinite(quantile):
            raise ValueError(
                f"{len(error)} out-of-fold residuals are too few for a {other:g} interval"
            )
        half_width = np.full(len(y_test), quantile) if constant else quantile * test_difficulty
        coverage, width = measure(y_test, test_prediction, half_width)
        return {
            "level": other,
            "quantile": quantile,
            "coverage_test": coverage,
            "mean_width_test": width,
        }

    chosen = at(level)
    held_out = interval_bounds(test_prediction, chosen["quantile"] * test_difficulty)
    block = {
        "level": level,
        "method": METHOD,
        "quantile": chosen["quantile"],
        "difficulty": difficulty.as_metadata(),
        "calibration_rows": len(error),
        "test_rows": len(y_test),
        "coverage_test": chosen["coverage_test"],
        "mean_width_test": chosen["mean_width_test"],
        "constant_width": {k: v for k, v in at(level, constant=True).items() if k != "level"},
        "curve": [at(other) for other in CURVE_LEVELS],
    }
    return block, held_out
