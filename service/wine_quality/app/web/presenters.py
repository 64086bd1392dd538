"""What the page's templates show, built from the settings, the model's facts and a prediction.

Pure functions from values to plain dicts and lists: no request, no Flask, so each is easy to read
and to test on its own.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np

from wine_quality.app.inputs import InputError, number_from_text
from wine_quality.app.settings import Settings
from wine_quality.app.state import Prediction
from wine_quality.core.artifact import LoadedModel
from wine_quality.core.facts import ModelFacts
from wine_quality.core.features import FEATURES, Feature

TABLE_ROWS_SHOWN = 250
"""Rows shown in the batch table; the download always holds every row."""

_METRIC_LABELS = {
    "rmse": ("RMSE", "{:.3f}"),
    "mae": ("Mean absolute error", "{:.3f}"),
    "r2": ("R²", "{:.3f}"),
    "within_0_5": ("Within 0.5 grade", "{:.1%}"),
    "within_1": ("Within 1 grade", "{:.1%}"),
}


def number(value: float) -> str:
    """A measurement as people write it: 7.4, 0.9978, 1000 (six significant digits)."""
    return f"{value:g}"


def size_text(size: int) -> str:
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def limits(settings: Settings) -> dict[str, Any]:
    return {
        "rows": settings.max_batch_rows,
        "rows_text": f"{settings.max_batch_rows:,}",
        "bytes": settings.max_body_bytes,
        "size_text": size_text(settings.max_body_bytes),
    }


def model_view(model: LoadedModel | None) -> dict[str, Any] | None:
    if model is None:
        return None
    facts = model.facts
    return {
        "version": facts.version,
        "algorithm": facts.algorithm,
        "runtime": model.runtime,
        "trained_at": facts.trained_at,
        "wine": facts.wine,
        "data_rows": facts.data_rows,
        "metrics": metric_rows(facts.test_metrics, facts.baseline_test_metrics),
        "has_baseline": bool(facts.baseline_test_metrics),
        "metrics_caption": f"Held-out test set ({facts.test_rows} wines)",
    }


def metric_rows(
    test: Mapping[str, float], baseline: Mapping[str, float]
) -> list[tuple[str, str, str]]:
    """(label, this model's value, the baseline's value or "") per test metric."""
    rows = []
    for key, value in test.items():
        label, pattern = _METRIC_LABELS.get(key, (key, "{:.3f}"))
        other = baseline.get(key)
        rows.append((label, pattern.format(value), "" if other is None else pattern.format(other)))
    return rows


def label(feature: Feature) -> str:
    name = feature.name
    return name if any(c.isupper() for c in name) else name[:1].upper() + name[1:]


def form_fields(
    facts: ModelFacts, values: Mapping[str, str] | None, errors: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The 11 inputs, generated from FEATURES; defaults are the training medians."""
    return [
        {
            "key": f.feature.key,
            "input_id": f"f-{f.feature.key}",
            "label": label(f.feature),
            "unit": f.feature.unit,
            "description": f.feature.description,
            "minimum": f.feature.minimum,
            "maximum": f.feature.maximum,
            "train_range": (f.train_min, f.train_max),
            "value": number(f.median) if values is None else values.get(f.feature.key, ""),
            "error": errors.get(f.feature.name, ""),
        }
        for f in facts.features
    ]


def form_record(form: Mapping[str, str]) -> dict[str, Any]:
    """The form as an API record: numbers where the text is one (read as CSV cells are), the
    text itself otherwise (so the shared validator names the problem), and blank fields left
    out (reported missing)."""
    record: dict[str, Any] = {}
    for feature in FEATURES:
        text = form.get(feature.key, "")
        if not text.strip():
            continue
        number = number_from_text(text)
        record[feature.key] = text if number is None else number
    return record


def form_errors(error: InputError, form: Mapping[str, str]) -> list[dict[str, Any]]:
    """The validator's problems, worded for a form: a blank or non-numeric field says so."""
    shown = []
    for detail in error.details or [{"field": None, "problem": error.message}]:
        feature = next((f for f in FEATURES if f.name == detail.get("field")), None)
        problem = detail["problem"]
        if feature is not None:
            text = form.get(feature.key, "").strip()
            if not text:
                problem = "enter a value"
            elif problem.startswith("must be a number"):
                problem = "enter a number, for example 7.4"
        shown.append(
            {
                "field": detail.get("field"),
                "input_id": f"f-{feature.key}" if feature else "",
                "label": label(feature) if feature else "Form",
                "problem": problem,
            }
        )
    return shown


def single_result(prediction: Prediction) -> dict[str, Any]:
    explanation = prediction.explanation
    return {
        "quality": float(prediction.quality[0]),
        "grade": int(prediction.grade[0]),
        "low": float(prediction.low[0]),
        "high": float(prediction.high[0]),
        "level": f"{prediction.level:.0%}",
        "warnings": prediction.warnings[0],
        "explanation": None
        if explanation is None
        else contribution_bars(float(explanation.base_value[0]), explanation.contributions[0]),
    }


def contribution_bars(base_value: float, contributions: np.ndarray) -> dict[str, Any]:
    """A diverging bar per feature, largest effect first. Each bar is drawn in an SVG whose
    viewBox is 0..100 wide with the zero line at 50 (x and width are attributes, so the strict
    CSP's style-src 'self' holds: no inline styles)."""
    largest = float(np.max(np.abs(contributions))) or 1.0
    order = np.argsort(-np.abs(contributions), kind="stable")
    bars = []
    for index in order:
        value = float(contributions[index])
        length = 50 * abs(value) / largest
        bars.append(
            {
                "label": label(FEATURES[index]),
                "key": FEATURES[index].key,
                "value": value,
                "text": f"{value:+.3f}",
                "direction": "up" if value >= 0 else "down",
                "x": f"{50 if value >= 0 else 50 - length:.2f}",
                "width": f"{length:.2f}",
            }
        )
    return {"base_value": base_value, "bars": bars}


def histogram(grades: np.ndarray) -> list[dict[str, Any]]:
    """A bar per grade from the lowest to the highest predicted; widths relative to the largest."""
    low, high = int(grades.min()), int(grades.max())
    counts = np.bincount(grades - low, minlength=high - low + 1)
    largest = int(counts.max())
    total = len(grades)
    return [
        {
            "grade": low + i,
            "count": int(count),
            "width": f"{100 * count / largest:.2f}",
            "percent": f"{100 * count / total:.1f} %",
        }
        for i, count in enumerate(counts)
    ]


def batch_view(filename: str, rows: np.ndarray, prediction: Prediction) -> dict[str, Any]:
    flagged = prediction.outside.any(axis=1)
    per_feature = prediction.outside.sum(axis=0)
    shown = min(len(rows), TABLE_ROWS_SHOWN)
    encoded = base64.b64encode(prediction.csv(inputs=rows).encode()).decode("ascii")
    stem = PurePath(filename).stem or "wines"
    return {
        "filename": filename,
        "rows": len(rows),
        "mean": float(np.mean(prediction.quality)),
        "level": f"{prediction.level:.0%}",
        "histogram": histogram(prediction.grade),
        "download_href": f"data:text/csv;charset=utf-8;base64,{encoded}",
        "download_name": f"{stem}-predictions.csv",
        "rows_out_of_range": int(flagged.sum()),
        "out_of_range": [
            (f.name, int(per_feature[i])) for i, f in enumerate(FEATURES) if per_feature[i]
        ],
        "shown": shown,
        "table": [
            {
                "line": i + 1,
                "cells": rows[i].tolist(),
                "quality": float(prediction.quality[i]),
                "grade": int(prediction.grade[i]),
                "low": float(prediction.low[i]),
                "high": float(prediction.high[i]),
                "warn": bool(flagged[i]),
            }
            for i in range(shown)
        ],
    }


def batch_error(error: InputError, filename: str) -> dict[str, Any]:
    return {
        "filename": filename,
        "message": sentence(error.message),
        "hint": "Split the file into smaller batches, or use the HTTP API."
        if error.status == 413
        else "",
        "problems": [
            {
                "line": "" if detail.get("row") is None else str(detail["row"]),  # header = 1
                "column": detail.get("field") or "",
                "problem": detail.get("problem", ""),
            }
            for detail in error.details
        ],
        "more": error.message.endswith("listed)"),
    }


def sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "."
