"""What every blueprint needs: the settings, the model holder, the metrics, and one predict step
whose result every surface answers with (JSON records, or the one CSV layout)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np
from flask import current_app

from wine_quality.app.errors import APIError
from wine_quality.app.holder import ModelHolder
from wine_quality.app.metrics import ServiceMetrics
from wine_quality.app.settings import Settings
from wine_quality.core.artifact import LoadedModel
from wine_quality.core.features import FEATURE_NAMES, TARGET_MAXIMUM, TARGET_MINIMUM

EXTENSION = "wine_quality"


@dataclass
class Prediction:
    """Predictions for n rows: quality (float), grade (rounded, clipped to 0-10), warnings."""

    quality: np.ndarray
    grade: np.ndarray
    warnings: list[list[str]]
    outside: np.ndarray  # [n, 11]: True where a value is outside the training range
    model_version: str

    def records(self) -> list[dict]:
        qualities = np.round(self.quality, 6).tolist()
        grades = self.grade.tolist()
        return [
            {"quality": q, "grade": g, "warnings": w}
            for q, g, w in zip(qualities, grades, self.warnings, strict=True)
        ]

    def csv(self, inputs: np.ndarray | None = None) -> str:
        """One line per row: quality, grade, model version and warnings. With `inputs` (the web
        page's download) the 11 measured values come first and the predictions are named
        predicted_quality and predicted_grade beside them."""
        head = (
            [*FEATURE_NAMES, "predicted_quality", "predicted_grade"]
            if inputs is not None
            else [
                "quality",
                "grade",
            ]
        )
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*head, "model_version", "warnings"])
        values = inputs.tolist() if inputs is not None else [[]] * len(self.quality)
        for cells, record in zip(values, self.records(), strict=True):
            warnings = " | ".join(record["warnings"])
            writer.writerow(
                [*cells, record["quality"], record["grade"], self.model_version, warnings]
            )
        return out.getvalue()


def grades(quality: np.ndarray) -> np.ndarray:
    """Round half up to whole grades on the 0-10 scale."""
    return np.clip(np.floor(quality + 0.5), TARGET_MINIMUM, TARGET_MAXIMUM).astype(np.int64)


@dataclass
class ServiceState:
    settings: Settings
    holder: ModelHolder
    metrics: ServiceMetrics

    def require_model(self) -> LoadedModel:
        if self.holder.model is None:
            raise APIError(503, self.holder.readiness().reason)
        return self.holder.model

    def predict(self, rows: np.ndarray) -> Prediction:
        """Predict validated float64 rows [n, 11] and record the metrics."""
        model = self.require_model()
        quality = model.predict(rows)
        training_range = model.facts.training_range
        outside = training_range.outside(rows)
        # rows without warnings share one empty list (never mutated)
        warnings = training_range.warnings(rows, outside) if outside.any() else [[]] * len(rows)
        self.metrics.record_prediction(quality, outside)
        return Prediction(quality, grades(quality), warnings, outside, model.version)


def state() -> ServiceState:
    return current_app.extensions[EXTENSION]
