"""The one place a process keeps its loaded model, and whether it should receive traffic.

A gunicorn worker loads the artifact once, through the verified loader
(`wine_quality.core.artifact.load_artifact`: metadata fields, checksums, versions, reference
predictions). When that
fails the worker keeps running, logs the reason and answers `/readyz` with 503 and the reason,
so a broken artifact is visible instead of a silent crash loop. On SIGTERM the worker calls the
app's holder's `begin_shutdown()` (wine_quality.app.gunicorn_conf), which turns readiness to 503 at
once while in-flight and new requests are still served.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from wine_quality.core.artifact import LoadedModel, load_artifact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str


class ModelHolder:
    """Holds one LoadedModel (or the reason there is none) and the shutdown flag."""

    def __init__(self, model: LoadedModel | None = None, error: str | None = None):
        self.model = model
        self.error = error
        self._shutting_down = threading.Event()

    @classmethod
    def load(cls, model_dir: Path, runtime: str) -> ModelHolder:
        """Load the artifact; never raises: a failure is kept as the reason for /readyz."""
        try:
            model = load_artifact(Path(model_dir), runtime)
        except Exception as exc:  # any failure must keep the worker up and say why
            reason = f"model not loaded: {exc}"
            log.error("%s", reason)
            return cls(error=reason)
        log.info(
            "model %s loaded from %s (%s, runtime %s) in %.3f s",
            model.version,
            model_dir,
            model.algorithm,
            model.runtime,
            model.load_seconds,
        )
        if model.fallback_reason:
            log.warning("serving with the %s runtime: %s", model.runtime, model.fallback_reason)
        return cls(model=model)

    def begin_shutdown(self) -> None:
        self._shutting_down.set()

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down.is_set()

    def readiness(self) -> Readiness:
        if self.shutting_down:
            return Readiness(False, "shutting down")
        if self.model is None:
            return Readiness(False, self.error or "model not loaded")
        return Readiness(True, "model loaded")
