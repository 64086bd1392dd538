"""What every blueprint needs: the settings, the model holder, the metrics, and one predict step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from flask import current_app

from wine_quality.app.errors import APIError
from wine_quality.app.metrics import ServiceMetrics
from wine_quality.features import TARGET_MAXIMUM, TARGET_MINIMUM
from wine_quality.model_holder import ModelHolder
from wine_quality.settings import Settings

EXTENSION = "wine_quality"


@dataclass
class Prediction:
    """Predictions for n rows: quality (float), grade (rounded, clipped to 0-10), warnings."""

    quality: np.ndarray
    grade: np.ndarray
    warnings: list[list[str]]
    model_version: str

    def records(self) -> list[dict]:
        qualities = np.round(self.quality, 6).tolist()
        grades = self.grade.tolist()
        return [
            {"quality": q, "grade": g, "warnings": w}
            for q, g, w in zip(qualities, grades, self.warnings, strict=True)
        ]


def grades(quality: np.ndarray) -> np.ndarray:
    """Round half up to whole grades on the 0-10 scale."""
    return np.clip(np.floor(quality + 0.5), TARGET_MINIMUM, TARGET_MAXIMUM).astype(np.int64)


@dataclass
class ServiceState:
    settings: Settings
    holder: ModelHolder
    metrics: ServiceMetrics

    def require_model(self) -> None:
        if self.holder.model is None:
            raise APIError(503, self.holder.readiness().reason)

    def predict(self, rows: np.ndarray) -> Prediction:
        """Predict validated float64 rows [n, 11] and record the metrics."""
        self.require_model()
        quality = self.holder.predict(rows)
        training_range = self.holder.training_range
        outside = training_range.outside(rows)
        # rows without warnings share one empty list (never mutated)
        warnings = training_range.warnings(rows, outside) if outside.any() else [[]] * len(rows)
        self.metrics.record_prediction(quality, outside)
        return Prediction(quality, grades(quality), warnings, self.holder.model.version)


def state() -> ServiceState:
    return current_app.extensions[EXTENSION]
