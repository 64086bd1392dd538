"""Prometheus metrics that stay right with several gunicorn workers.

Under gunicorn, `PROMETHEUS_MULTIPROC_DIR` is set (by gunicorn_conf, before prometheus_client is
imported anywhere) and every worker writes its values to files there; a scrape of /metrics on any
worker sums all of them (prometheus-flask-exporter's GunicornInternalPrometheusMetrics). Without
it (the Flask test client, a one-process run) the app gets its own registry.

HTTP metrics are labelled by route template (`path="/v1/predict"`), never by raw URL, so unknown
URLs cannot blow up the series count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from flask import Flask, Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

from wine_quality.app.holder import ModelHolder
from wine_quality.core.features import FEATURES

QUALITY_BUCKETS = (3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 9.0)
BATCH_BUCKETS = (1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000)


def path(req: Request) -> str:
    """The `path` label: the matched route template, or "unmatched" for 404s."""
    return req.url_rule.rule if req.url_rule is not None else "unmatched"


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

    def record_prediction(self, qualities: np.ndarray, outside: np.ndarray) -> None:
        """Count one served request: its rows, predicted qualities and out-of-range cells."""
        self.predictions.inc(len(qualities))
        self.batch_rows.observe(len(qualities))
        observe_many(self.predicted_quality, qualities)
        counts = outside.sum(axis=0)
        for column in np.flatnonzero(counts):
            self.out_of_range.labels(feature=FEATURES[column].key).inc(int(counts[column]))


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """`histogram.observe(v)` for every v, in one pass per bucket instead of one per value.

    A 10,000-row batch would otherwise cost 10,000 file-backed writes in multiprocess mode.
    Uses the client's bucket list (`_upper_bounds`, `_buckets`, `_sum`); tests/test_api_v1.py
    checks the result equals value-by-value observation.
    """
    if len(values) <= 1:  # the common single-row request: the plain call is cheaper
        for value in values:
            histogram.observe(float(value))
        return
    bounds = np.asarray(histogram._upper_bounds)
    # observe() puts v into the first bucket whose bound is >= v
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    histogram._sum.inc(float(np.sum(values)))
    for i, count in enumerate(counts[: len(bounds)]):
        if count:
            histogram._buckets[i].inc(float(count))


def multiprocess_mode() -> bool:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return bool(directory) and os.path.isdir(directory)


def init_metrics(app: Flask, holder: ModelHolder) -> ServiceMetrics:
    """Register /metrics and the HTTP metrics on `app`; create the service's own metrics."""
    registry = CollectorRegistry()
    exporter_class = GunicornInternalPrometheusMetrics if multiprocess_mode() else PrometheusMetrics
    exporter_class(app, path="/metrics", group_by=path, registry=registry)
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
