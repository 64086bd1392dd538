"""Prometheus metrics that stay right with several gunicorn workers.

Under gunicorn, `PROMETHEUS_MULTIPROC_DIR` is set (by gunicorn_conf, before prometheus_client is
imported anywhere) and every worker writes its values to files there; a scrape of /metrics on any
worker sums all of them (prometheus-flask-exporter's GunicornInternalPrometheusMetrics). Without
it (the Flask test client, a one-process run) the app gets its own registry.

A request's counts go to a tally (`Tally`) in memory, not to the files one by one: the client
writes every increment to its file under a lock, eight writes for a single-row request (45 to 50
µs of its 500 in process). The tally writes them at most FLUSH_SECONDS later, from one thread per
process, and at once before this process answers a scrape and when it exits: a scrape sees the
counts of the worker that answers it at once, the other workers' within a second; a worker that
is killed (not stopped) loses at most its last second of counts.

HTTP metrics are labelled by route template (`path="/v1/predict"`), never by raw URL, and methods
outside the standard ones are labelled "other", so no client can blow up the series count. They
keep prometheus-flask-exporter's names, labels and buckets; `HttpMetrics` records them from one
after_request hook with each label set's children looked up once, at about half the CPU of the
exporter's own per-request hooks (which took a tenth of a single-row prediction's).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

import numpy as np
from flask import Flask, Request, Response, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

from wine_quality.app.holder import ModelHolder
from wine_quality.app.hooks import started_at, was_unhandled
from wine_quality.core.facts import any_outside
from wine_quality.core.features import FEATURES

QUALITY_BUCKETS = (3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 9.0)
BATCH_BUCKETS = (1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000)
METRICS_PATH = "/metrics"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
FLUSH_SECONDS = 1.0

log = logging.getLogger(__name__)


class Tally:
    """Counter increments and histogram observations added up in memory, written to their metrics
    by `flush()` (module docstring): counters take the sum of their increments, a histogram each
    bucket's count and the sum of the values, exactly as one call per increment or value would
    have left them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the pending counts
        self._flushing = threading.Lock()  # one flush at a time: a second waits for the first
        self._counts: dict[Any, float] = {}  # counter (or labelled child) -> amount
        self._observed: dict[Any, list[float]] = {}  # histogram -> [per bucket..., sum]
        _tallies.add(self)

    def inc(self, counter: Any, amount: float = 1.0) -> None:
        with self._lock:
            counts = self._counts
            counts[counter] = counts.get(counter, 0.0) + amount
        if not _writer_running:
            _start_writer()

    def observe(self, histogram: Any, value: float) -> None:
        """histogram.observe(value): the first bucket whose bound is >= value (a NaN in none)."""
        bucket = bisect_left(histogram._upper_bounds, value) if value == value else None
        with self._lock:
            pending = self._pending(histogram)
            if bucket is not None:
                pending[bucket] += 1
            pending[-1] += value
        if not _writer_running:
            _start_writer()

    def observe_many(self, histogram: Any, values: np.ndarray) -> None:
        """histogram.observe(v) for every v of `values`."""
        if len(values) == 1:
            self.observe(histogram, float(values[0]))
            return
        counts, total = bucket_counts(histogram._upper_bounds, values)
        with self._lock:
            pending = self._pending(histogram)
            for i, count in enumerate(counts):
                pending[i] += count
            pending[-1] += total
        if not _writer_running:
            _start_writer()

    def _pending(self, histogram: Any) -> list[float]:
        pending = self._observed.get(histogram)
        if pending is None:
            pending = self._observed[histogram] = [0.0] * (len(histogram._upper_bounds) + 1)
        return pending

    def flush(self) -> None:
        """Write the pending counts to their metrics."""
        with self._flushing:
            with self._lock:
                counts, observed = self._counts, self._observed
                self._counts, self._observed = {}, {}
            for counter, amount in counts.items():
                counter.inc(amount)
            for histogram, pending in observed.items():
                add_observations(histogram, pending[:-1], pending[-1])

    def flushed_first(self, view: Callable[..., Any]) -> Callable[..., Any]:
        """`view` (the /metrics endpoint), after this process's pending counts are written."""

        @wraps(view)
        def flushed(*args: Any, **kwargs: Any) -> Any:
            self.flush()
            return view(*args, **kwargs)

        return flushed


_tallies: weakref.WeakSet[Tally] = weakref.WeakSet()
_writer_running = False  # in this process: a fork leaves the thread behind
_writer_lock = threading.Lock()


def _start_writer() -> None:
    global _writer_running
    with _writer_lock:
        if not _writer_running:
            threading.Thread(target=_write_tallies, name="metrics-tally", daemon=True).start()
            _writer_running = True


def _forked() -> None:
    global _writer_running
    _writer_running = False


os.register_at_fork(after_in_child=_forked)


def _write_tallies() -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        try:
            flush_all()
        except Exception:  # a failed write (a full disk) loses those counts, not the later ones
            log.exception("writing the metrics")


@atexit.register
def flush_all() -> None:
    """Write every tally's pending counts (each FLUSH_SECONDS, and when the process exits)."""
    for tally in list(_tallies):
        tally.flush()


def path(req: Request) -> str:
    """The `path` label: the matched route template, or "unmatched" for 404s."""
    return req.url_rule.rule if req.url_rule is not None else "unmatched"


class HttpMetrics:
    """flask_http_request_duration_seconds, flask_http_request_total and
    flask_http_request_exceptions_total, as prometheus-flask-exporter defines them."""

    def __init__(self, registry: CollectorRegistry, tally: Tally) -> None:
        self.tally = tally
        self.duration = Histogram(
            "flask_http_request_duration_seconds",
            "Flask HTTP request duration in seconds",
            ["method", "path", "status"],
            registry=registry,
        )
        self.total = Counter(
            "flask_http_request_total",
            "Total number of HTTP requests",
            ["method", "status"],
            registry=registry,
        )
        self.exceptions = Counter(
            "flask_http_request_exceptions_total",
            "Total number of HTTP requests which resulted in an exception",
            ["method", "status"],
            registry=registry,
        )
        # (method, path, status) -> (duration child, total child); bounded by the routes,
        # HTTP_METHODS and the status codes the app answers with
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def after_request(self, response: Response) -> Response:
        """Count the answered request (a Flask after_request hook; /metrics is not counted)."""
        req = request._get_current_object()  # one context lookup, not one per attribute
        route = path(req)
        if route == METRICS_PATH:
            return response
        method = req.method if req.method in HTTP_METHODS else "other"
        status = response.status_code
        children = self._children.get((method, route, status))
        if children is None:
            children = self._children[(method, route, status)] = (
                self.duration.labels(method, route, status),
                self.total.labels(method, status),
            )
        tally = self.tally
        tally.observe(children[0], max(time.perf_counter() - started_at(req.environ), 0.0))
        tally.inc(children[1])
        if was_unhandled(req.environ):
            tally.inc(self.exceptions.labels(method, status))
        return response


@dataclass
class ServiceMetrics:
    registry: CollectorRegistry  # for metrics other modules add (the shadow's, the log's)
    predictions: Counter
    predicted_quality: Histogram
    batch_rows: Histogram
    out_of_range: Counter
    model_load_seconds: Gauge
    model_info: Gauge
    training_target_mean: Gauge
    tally: Tally  # the request path's counts, written to the metrics within FLUSH_SECONDS

    def record_prediction(self, qualities: np.ndarray, outside: np.ndarray) -> None:
        """Count one served request: its rows, predicted qualities and out-of-range cells."""
        tally = self.tally
        tally.inc(self.predictions, len(qualities))
        tally.observe(self.batch_rows, len(qualities))
        tally.observe_many(self.predicted_quality, qualities)
        if not any_outside(outside):
            return
        counts = outside.sum(axis=0)
        for column in np.flatnonzero(counts):
            tally.inc(self.out_of_range.labels(feature=FEATURES[column].key), int(counts[column]))


def bucket_counts(bounds: list[float], values: np.ndarray) -> tuple[list[float], float]:
    """How many of `values` histogram.observe() puts in each bucket (the first whose bound is >=
    the value; a NaN in none), and their sum."""
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    return counts[: len(bounds)].astype(float).tolist(), float(np.sum(values))


def add_observations(histogram: Histogram, counts: list[float], total: float) -> None:
    """Add bucket counts and a sum to a histogram in one write each. Uses the client's bucket
    list (`_buckets`, `_sum`); tests/test_api_v1.py checks the result equals value-by-value
    observation."""
    histogram._sum.inc(total)
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """`histogram.observe(v)` for every v, in one write per bucket instead of one per value (a
    10,000-row batch would otherwise cost 10,000 file-backed writes in multiprocess mode)."""
    if len(values):
        add_observations(histogram, *bucket_counts(histogram._upper_bounds, values))


def multiprocess_mode() -> bool:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return bool(directory) and os.path.isdir(directory)


def init_metrics(app: Flask, holder: ModelHolder) -> ServiceMetrics:
    """Register /metrics and the HTTP metrics on `app`; create the service's own metrics."""
    registry = CollectorRegistry()
    exporter_class = GunicornInternalPrometheusMetrics if multiprocess_mode() else PrometheusMetrics
    tally = Tally()
    exporter = exporter_class(
        app,
        path=METRICS_PATH,
        export_defaults=False,
        registry=registry,
        metrics_decorator=tally.flushed_first,
    )
    exporter.info(
        "flask_exporter_info",
        "Information about the Prometheus Flask exporter",
        version=exporter.version,
    )
    app.after_request(HttpMetrics(registry, tally).after_request)
    metrics = ServiceMetrics(
        registry=registry,
        predictions=Counter(
            "wine_quality_predictions_total", "Rows predicted (all APIs).", registry=registry
        ),
        predicted_quality=Histogram(
            "wine_quality_predicted_quality",
            "Predicted quality per row.",
            buckets=QUALITY_BUCKETS,
            registry=registry,
        ),
        batch_rows=Histogram(
            "wine_quality_batch_rows",
            "Rows per prediction request.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        ),
        out_of_range=Counter(
            "wine_quality_out_of_range_total",
            "Input values outside the model's training range (drift signal).",
            ["feature"],
            registry=registry,
        ),
        model_load_seconds=Gauge(
            "wine_quality_model_load_seconds",
            "Seconds the worker took to load and verify the model.",
            multiprocess_mode="livemax",
            registry=registry,
        ),
        model_info=Gauge(
            "wine_quality_model_info",
            "The served model (value 1).",
            ["version", "algorithm", "runtime"],
            multiprocess_mode="livemax",
            registry=registry,
        ),
        training_target_mean=Gauge(
            "wine_quality_training_target_mean",
            "Mean quality of the served model's training data (metadata "
            "target.mean); the reference of the prediction-shift alert.",
            multiprocess_mode="livemax",
            registry=registry,
        ),
        tally=tally,
    )
    # One series per feature from the start: rate() and increase() then see the first
    # out-of-range value too, and the dashboard shows 0 for the features in range.
    for feature in FEATURES:
        metrics.out_of_range.labels(feature=feature.key)
    model = holder.model
    if model is not None:
        metrics.model_load_seconds.set(model.load_seconds)
        metrics.model_info.labels(
            version=model.version, algorithm=model.algorithm, runtime=model.runtime
        ).set(1)
        metrics.training_target_mean.set(model.facts.target_mean)
    return metrics
