"""A shadow model: a second artifact that scores every predicted row beside the champion.

Set WINE_QUALITY_SHADOW_MODEL_DIR and every row any API predicts (v1 JSON and CSV, v2, the web
page) is also scored by the shadow, loaded through the same verified loader as the champion.
Answers always come from the champion; the shadow only feeds metrics (how often the two agree on
the grade, how far apart their predictions are) and the prediction log, so a challenger proves
itself on live traffic before it answers anyone. A shadow that fails to load or to predict is
logged and counted; it never changes readiness or an answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from wine_quality.app.holder import ModelHolder
from wine_quality.app.metrics import observe_many
from wine_quality.core.artifact import LoadedModel
from wine_quality.core.features import grades as to_grades

log = logging.getLogger(__name__)

# |champion - shadow|, in grades (non-negative buckets keep the _sum series: mean difference)
DIFFERENCE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


@dataclass
class ShadowMetrics:
    rows: Counter
    difference: Histogram
    grades: Counter
    failures: Counter
    info: Gauge
    agree: Counter  # grades' two children, looked up once instead of per request
    differ: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ShadowMetrics:
        grades = Counter(
            "wine_quality_shadow_grades_total",
            "Rows whose grades from the champion and the shadow agree or differ.",
            ["agreement"],
            registry=registry,
        )
        metrics = cls(
            rows=Counter(
                "wine_quality_shadow_predictions_total",
                "Rows scored by the shadow model.",
                registry=registry,
            ),
            difference=Histogram(
                "wine_quality_shadow_difference",
                "Absolute difference between the champion's and the shadow's predicted quality, "
                "per row.",
                buckets=DIFFERENCE_BUCKETS,
                registry=registry,
            ),
            grades=grades,
            failures=Counter(
                "wine_quality_shadow_failures_total",
                "Shadow failures: a worker that could not load it, or a request it could not "
                "score.",
                ["stage"],
                registry=registry,
            ),
            info=Gauge(
                "wine_quality_shadow_info",
                "The shadow model (value 1).",
                ["version", "algorithm", "runtime"],
                multiprocess_mode="livemax",
                registry=registry,
            ),
            agree=grades.labels(agreement="agree"),
            differ=grades.labels(agreement="differ"),
        )
        for stage in ("load", "predict"):
            metrics.failures.labels(stage=stage)
        return metrics


@dataclass(frozen=True)
class ShadowScores:
    version: str
    quality: np.ndarray


class Shadow:
    """The shadow of one worker: its model, or the reason it has none."""

    def __init__(
        self, metrics: ShadowMetrics, model: LoadedModel | None, error: str | None = None
    ) -> None:
        self.metrics = metrics
        self.model = model
        self.error = error

    @classmethod
    def load(cls, model_dir: Path, runtime: str, metrics: ShadowMetrics) -> Shadow:
        """The shadow, verified like the champion and, under gunicorn, pinned in the master like
        it (ModelHolder.load); a failure is logged and kept, never raised."""
        holder = ModelHolder.load(Path(model_dir), runtime)
        if holder.model is None:
            reason = f"shadow {holder.error}"
            log.error("%s", reason)
            metrics.failures.labels(stage="load").inc()
            return cls(metrics, None, reason)
        model = holder.model
        log.info("shadow model %s from %s", model.version, model_dir)
        metrics.info.labels(
            version=model.version, algorithm=model.algorithm, runtime=model.runtime
        ).set(1)
        return cls(metrics, model)

    def score(
        self, rows: np.ndarray, quality: np.ndarray, grades: np.ndarray
    ) -> ShadowScores | None:
        """The shadow's predictions for rows the champion predicted as `quality` and `grades`,
        recorded in the metrics; None when there is no shadow or it failed."""
        if self.model is None:
            return None
        try:
            shadow = np.asarray(self.model.predict(rows), dtype=np.float64).reshape(len(rows))
            shadow_grades = to_grades(shadow)
        except Exception:  # a failing shadow is counted, never passed on to the client
            log.exception("shadow model %s failed on %d row(s)", self.model.version, len(rows))
            self.metrics.failures.labels(stage="predict").inc()
            return None
        self._record(quality, grades, shadow, shadow_grades)
        return ShadowScores(self.model.version, shadow)

    def _record(
        self,
        quality: np.ndarray,
        grades: np.ndarray,
        shadow: np.ndarray,
        shadow_grades: np.ndarray,
    ) -> None:
        self.metrics.rows.inc(len(shadow))
        observe_many(self.metrics.difference, np.abs(quality - shadow))
        agree = int(np.count_nonzero(grades == shadow_grades))
        if agree:
            self.metrics.agree.inc(agree)
        if agree < len(shadow):
            self.metrics.differ.inc(len(shadow) - agree)

    def describe(self) -> dict[str, Any]:
        """The shadow's state, for /v1/model."""
        if self.model is None:
            return {"loaded": False, "error": self.error}
        return {
            "loaded": True,
            "version": self.model.version,
            "algorithm": self.model.algorithm,
            "runtime": self.model.runtime,
        }
