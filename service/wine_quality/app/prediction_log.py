"""The prediction log: one JSON line per predicted row, for computing live accuracy later.

WINE_QUALITY_PREDICTION_LOG=stdout writes, for a sample of the rows
(WINE_QUALITY_PREDICTION_LOG_SAMPLE, 0 to 1), a line such as

    {"type": "prediction", "time": "2026-12-01T10:00:00.123Z", "request_id": "4f9c...",
     "api": "v1.json", "model_version": "0.1.0+m1234abcd", "row": 0,
     "inputs": {"fixed_acidity": 7.4, ...}, "quality": 5.0317, "grade": 5,
     "shadow_version": "...", "shadow_quality": 5.21}

The keys are fixed (docs/monitoring.md); `shadow_version` and `shadow_quality` appear only with a
shadow model, and `shadow_quality` is null for a request the shadow failed on. `request_id` is the
X-Request-ID of the response, so a label that arrives later can be joined to its prediction.

Lines go straight to file descriptor 1 in writes of whole lines of at most PIPE_BUF bytes, which
a pipe never interleaves with another process's writes: the workers of one pod share stdout
without mixing lines. A failed write is counted and dropped; it never fails the request.
"""

from __future__ import annotations

import os
import random
import select
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter

from wine_quality.core.features import FEATURE_KEYS

APIS = ("v1.json", "v1.csv", "v2", "web.form", "web.batch")
_ATOMIC_WRITE = getattr(select, "PIPE_BUF", 512)


@dataclass(frozen=True)
class LoggedRows:
    """What one request predicted, as the log needs it."""

    api: str
    request_id: str
    model_version: str
    rows: np.ndarray
    quality: np.ndarray
    grades: np.ndarray
    shadow_version: str | None = None
    shadow_quality: np.ndarray | None = None  # None: no shadow, or it failed on this request
    at: float = field(default_factory=time.time)  # when predicted; the shadow's line comes later


class PredictionLog:
    def __init__(self, sample: float, registry: CollectorRegistry, fd: int = 1) -> None:
        self.sample = sample
        self.fd = fd
        self.lines = Counter(
            "wine_quality_prediction_log_lines_total",
            "Lines written to the prediction log.",
            registry=registry,
        )
        self.dropped = Counter(
            "wine_quality_prediction_log_dropped_total",
            "Prediction-log lines lost to a failed write.",
            registry=registry,
        )

    def write(self, logged: LoggedRows, shadow_configured: bool) -> None:
        """Log the sampled rows of one request; never raises."""
        picked = [i for i in range(len(logged.rows)) if self._sampled()]
        if not picked:
            return
        lines = [_line(logged, i, shadow_configured) for i in picked]
        for chunk in _chunks(lines):
            try:
                os.write(self.fd, chunk)
            except OSError:
                self.dropped.inc(chunk.count(b"\n"))
                continue
            self.lines.inc(chunk.count(b"\n"))

    def _sampled(self) -> bool:
        return self.sample >= 1 or random.random() < self.sample  # noqa: S311 (sampling, not security)


def _line(logged: LoggedRows, i: int, shadow_configured: bool) -> bytes:
    record = {
        "type": "prediction",
        "time": _utc(logged.at),
        "request_id": logged.request_id,
        "api": logged.api,
        "model_version": logged.model_version,
        "row": i,
        "inputs": dict(zip(FEATURE_KEYS, logged.rows[i].tolist(), strict=True)),
        "quality": round(float(logged.quality[i]), 6),
        "grade": int(logged.grades[i]),
    }
    if shadow_configured:
        shadow = logged.shadow_quality
        record["shadow_version"] = logged.shadow_version
        record["shadow_quality"] = None if shadow is None else round(float(shadow[i]), 6)
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"


def _chunks(lines: list[bytes]) -> Iterator[bytes]:
    """Whole lines joined into writes of at most PIPE_BUF bytes (a longer line goes alone)."""
    chunk = b""
    for line in lines:
        if chunk and len(chunk) + len(line) > _ATOMIC_WRITE:
            yield chunk
            chunk = b""
        chunk += line
    if chunk:
        yield chunk
