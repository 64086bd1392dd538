"""The one place a process keeps its loaded model, and whether it should receive traffic.

The model is loaded once, through the verified loader (`wine_quality.core.artifact.load_artifact`:
metadata fields, checksums, reference predictions). Under gunicorn that happens in the master
before it forks (`preload`, called by wine_quality.app.gunicorn_conf): every worker, including one
started later to replace a dead one, serves that same verified model, or reports the same reason
there is none, whatever the files on disk hold by then. One pod serves one model version and
`/readyz` cannot differ between its workers. When loading fails the process keeps running, logs
the reason and answers `/readyz` with 503 and the reason, so a broken artifact is visible instead
of a silent crash loop. On SIGTERM the worker calls the app's holder's `begin_shutdown()`, which
turns readiness to 503 at once while in-flight and new requests are still served.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from wine_quality.core.artifact import (
    ArtifactError,
    LoadedModel,
    ReadArtifact,
    open_artifact,
    read_artifact,
)

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
        """The artifact `preload` pinned for this directory and runtime, else the one on disk now,
        opened in this process; never raises: a failure is kept as the reason for /readyz."""
        pinned = _PRELOADED.get(_key(model_dir, runtime))
        try:
            if isinstance(pinned, str):
                raise ArtifactError(pinned)
            model = open_artifact(pinned or read_artifact(Path(model_dir), runtime))
        except Exception as exc:  # any failure must keep the worker up and say why
            reason = str(exc) if isinstance(pinned, str) else f"model not loaded: {exc}"
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


# What `preload` read and checked (or the reason it could not), by directory and runtime.
_PRELOADED: dict[tuple[str, str], ReadArtifact | str] = {}


def _key(model_dir: Path, runtime: str) -> tuple[str, str]:
    return str(Path(model_dir).absolute()), runtime


def preload(model_dir: Path, runtime: str) -> ReadArtifact | str:
    """Read and check the artifact now, running none of its model code, and pin the result for
    this process and the processes it forks: every later `ModelHolder.load` of the same directory
    and runtime opens these very bytes (or reports this failure), whatever the files hold by then.
    The model itself (an ONNX Runtime session) is opened by each worker: its threads would not
    survive the fork. Returns what was pinned: the read artifact, or the reason."""
    try:
        pinned: ReadArtifact | str = read_artifact(Path(model_dir), runtime)
    except Exception as exc:  # kept as every worker's reason for /readyz
        pinned = f"model not loaded: {exc}"
    _PRELOADED[_key(model_dir, runtime)] = pinned
    return pinned
