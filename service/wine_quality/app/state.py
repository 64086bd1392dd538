"""What every blueprint needs: the settings, the model holder, the metrics, and one predict step
whose result every surface answers with (JSON records, or the one CSV layout)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, replace

import numpy as np
from flask import current_app

from wine_quality.app.errors import APIError
from wine_quality.app.holder import ModelHolder
from wine_quality.app.hooks import request_id
from wine_quality.app.metrics import ServiceMetrics
from wine_quality.app.prediction_log import LoggedRows, PredictionLog
from wine_quality.app.settings import Settings
from wine_quality.app.shadow import OnScored, Shadow
from wine_quality.core.artifact import LoadedModel
from wine_quality.core.explain import Explanation
from wine_quality.core.facts import any_outside
from wine_quality.core.features import FEATURE_KEYS, FEATURE_NAMES, grades

EXTENSION = "wine_quality"

# OWASP's CSV-injection advice: a text cell starting with one of these is a formula to a
# spreadsheet, so it gets a leading apostrophe.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: object) -> object:
    """The cell as a spreadsheet shows it, never as a formula it runs; numbers stay numbers."""
    if isinstance(cell, str) and cell.startswith(_FORMULA_STARTS):
        return "'" + cell
    return cell


class _SpreadsheetSafeWriter:
    """csv.writer whose text cells are neutralised by `spreadsheet_safe` (API and web CSV)."""

    def __init__(self, out: io.StringIO) -> None:
        self._writer = csv.writer(out, lineterminator="\n")

    def writerow(self, cells: list[object]) -> None:
        self._writer.writerow([spreadsheet_safe(cell) for cell in cells])


@dataclass
class Prediction:
    """Predictions for n rows: quality (float), grade (rounded, clipped to 0-10), warnings, the
    interval at `level` [low, high], and (when asked for) the explanation of each row."""

    quality: np.ndarray
    grade: np.ndarray
    warnings: list[list[str]]
    outside: np.ndarray  # [n, 11]: True where a value is outside the training range
    model_version: str
    low: np.ndarray
    high: np.ndarray
    level: float
    explanation: Explanation | None = None

    def records(self) -> list[dict]:
        qualities, lows, highs = _rounded((self.quality, self.low, self.high))
        grades = self.grade.tolist()
        records = [
            {"quality": q, "grade": g, "interval": {"level": self.level, "low": lo, "high": hi}}
            for q, g, lo, hi in zip(qualities, grades, lows, highs, strict=True)
        ]
        if self.explanation is not None:
            # not rounded: base_value + contributions is the model's prediction to ~1e-12
            bases = self.explanation.base_value.tolist()
            for record, base, row in zip(
                records, bases, self.explanation.contributions.tolist(), strict=True
            ):
                record["base_value"] = base
                record["contributions"] = dict(zip(FEATURE_KEYS, row, strict=True))
        for record, warnings in zip(records, self.warnings, strict=True):
            record["warnings"] = warnings
        return records

    def csv(self, inputs: np.ndarray | None = None) -> str:
        """One line per row: quality, grade, the interval (quality_low, quality_high), model
        version and warnings (then base_value and contribution_<key> when explained). With
        `inputs` (the web page's download) the 11 measured values come first and the
        predictions are named predicted_quality and predicted_grade beside them."""
        head = (
            [*FEATURE_NAMES, "predicted_quality", "predicted_grade"]
            if inputs is not None
            else [
                "quality",
                "grade",
            ]
        )
        out = io.StringIO()
        writer = _SpreadsheetSafeWriter(out)
        explained = self.explanation is not None
        contribution_columns = [f"contribution_{key}" for key in FEATURE_KEYS] if explained else []
        writer.writerow(
            [
                *head,
                "quality_low",
                "quality_high",
                "model_version",
                "warnings",
                *(["base_value", *contribution_columns] if explained else []),
            ]
        )
        values = inputs.tolist() if inputs is not None else [[]] * len(self.quality)
        for cells, record in zip(values, self.records(), strict=True):
            warnings = " | ".join(record["warnings"])
            interval = record["interval"]
            writer.writerow(
                [
                    *cells,
                    record["quality"],
                    record["grade"],
                    interval["low"],
                    interval["high"],
                    self.model_version,
                    warnings,
                    *(
                        [record["base_value"], *record["contributions"].values()]
                        if explained
                        else []
                    ),
                ]
            )
        return out.getvalue()


def _rounded(columns: tuple[np.ndarray, ...]) -> list[list[float]]:
    """The columns rounded to 6 decimals as numpy rounds them (times 10**6, to the nearest even
    whole number, divided by 10**6); a single row in Python floats, to the bit
    (core/features.one_value_clipped says why)."""
    values = [float(column[0]) for column in columns] if len(columns[0]) == 1 else None
    if values is None or not all(abs(value) < _EXACT_BELOW for value in values):
        return np.array(columns).round(6).tolist()
    return [[math.copysign(round(value * 1e6) / 1e6, value)] for value in values]


# below this, value * 1e6 is a whole number exactly when it should be (2**53 / 1e6 is 9e9)
_EXACT_BELOW = 1e9


@dataclass
class ServiceState:
    settings: Settings
    holder: ModelHolder
    metrics: ServiceMetrics
    shadow: Shadow | None = None
    prediction_log: PredictionLog | None = None

    def require_model(self) -> LoadedModel:
        if self.holder.model is None:
            raise APIError(503, self.holder.readiness().reason)
        return self.holder.model

    def predict(self, rows: np.ndarray, api: str, explain: bool = False) -> Prediction:
        """Predict validated float64 rows [n, 11] and record the metrics; the shadow scores them
        too, and the prediction log records them as coming from `api` (prediction_log.APIS).
        `explain` adds each row's base value and per-feature contributions."""
        model = self.require_model()
        if explain and model.explainer is None:
            raise APIError(409, "the served model has no explanation", "not_explainable")
        quality = model.predict(rows)
        training_range = model.facts.training_range
        outside = training_range.outside(rows)
        # rows without warnings share one empty list (never mutated)
        flagged = any_outside(outside)
        warnings = training_range.warnings(rows, outside) if flagged else [[]] * len(rows)
        self.metrics.record_prediction(quality, outside)
        low, high = model.facts.intervals.bounds(rows, quality)
        prediction = Prediction(
            quality,
            grades(quality),
            warnings,
            outside,
            model.version,
            low,
            high,
            model.facts.intervals.level,
            model.explainer.explain(rows) if explain else None,
        )
        self._follow_up(rows, prediction, api)
        return prediction

    def _follow_up(self, rows: np.ndarray, prediction: Prediction, api: str) -> None:
        """What happens beside the answer, never changing it: the shadow scores the rows (off the
        request path), the prediction log records them (once scored, with a shadow)."""
        log = self._log_writer(rows, prediction, api)
        if self.shadow is not None:
            self.shadow.submit(rows, prediction.quality, prediction.grade, log)
        elif log is not None:
            log(None)

    def _log_writer(self, rows: np.ndarray, prediction: Prediction, api: str) -> OnScored | None:
        """Writes this request's log lines given the shadow's qualities (None: no shadow, or
        it failed); None without a prediction log."""
        if self.prediction_log is None:
            return None
        prediction_log, shadow = self.prediction_log, self.shadow
        logged = LoggedRows(
            api=api,
            request_id=request_id(),
            model_version=prediction.model_version,
            rows=rows,
            quality=prediction.quality,
            grades=prediction.grade,
            shadow_version=shadow.model.version if shadow and shadow.model else None,
        )

        def write(shadow_quality: np.ndarray | None) -> None:
            prediction_log.write(
                replace(logged, shadow_quality=shadow_quality),
                shadow_configured=shadow is not None,
            )

        return write


def state() -> ServiceState:
    return current_app.extensions[EXTENSION]
