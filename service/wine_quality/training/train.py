"""Training: model selection among candidate pipelines, honest evaluation, quality gate, artifact.

Two evaluation protocols run side by side on the same candidates:

* ``leakage_free`` (used for selection and the gate): exact duplicate rows are dropped first, then
  an 80/20 split; K-fold cross-validation on the 80 % part picks the candidate with the lowest mean
  RMSE, which is refitted on the whole 80 % part and scored once on the held-out 20 %.
* ``paper``: the seed paper's protocol, duplicates kept (80/20 split, random_state = seed), with
  the same K-fold CV on its training part. Copies of one wine land on both sides of every split, so
  these numbers are optimistic; they are reported only to show by how much.

The linear-regression baseline is always evaluated. The promoted model must beat it on the
leakage-free held-out part (lower RMSE *and* lower MAE), otherwise `QualityGateError` is raised and
nothing is written.
"""

from __future__ import annotations

import logging
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import (
    ExtraTreesRegressor,
    HistGradientBoostingRegressor,
    RandomForestRegressor,
)
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import KFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR
from threadpoolctl import threadpool_limits

from wine_quality import MODEL_NAME
from wine_quality.core import artifact, explain
from wine_quality.core.features import FEATURES
from wine_quality.training import intervals
from wine_quality.training.data import Dataset, file_name, load_dataset

log = logging.getLogger(__name__)

BASELINE = "linear_regression"
TEST_SIZE = 0.2
GATE_MARGIN = 1e-9
QUANTILES = ("0.01", "0.25", "0.5", "0.75", "0.99")
REFERENCE_TOLERANCE = 1e-6
REFERENCE_TEST_ROWS = 5
# Accuracy within a tolerance of the true grade, as in Cortez et al. 2009 (|error| <= T).
TOLERANCES = {0.5: "within_0_5", 1.0: "within_1"}


def _linear_regression(seed: int, jobs: int) -> Pipeline:
    return Pipeline([("regressor", LinearRegression())])


def _ridge(seed: int, jobs: int) -> Pipeline:
    return Pipeline([("scale", StandardScaler()), ("regressor", Ridge(alpha=1.0))])


def _svr(seed: int, jobs: int) -> Pipeline:
    return Pipeline([("scale", StandardScaler()), ("regressor", SVR(C=1.0, epsilon=0.1))])


def _random_forest(seed: int, jobs: int) -> Pipeline:
    return Pipeline(
        [
            (
                "regressor",
                RandomForestRegressor(
                    n_estimators=200,
                    max_features=0.5,
                    min_samples_leaf=2,
                    random_state=seed,
                    n_jobs=jobs,
                ),
            )
        ]
    )


def _extra_trees(seed: int, jobs: int) -> Pipeline:
    return Pipeline(
        [
            (
                "regressor",
                ExtraTreesRegressor(
                    n_estimators=100, min_samples_leaf=3, random_state=seed, n_jobs=jobs
                ),
            )
        ]
    )


def _hist_gradient_boosting(seed: int, jobs: int) -> Pipeline:
    return Pipeline(
        [
            (
                "regressor",
                HistGradientBoostingRegressor(
                    learning_rate=0.1,
                    max_iter=100,
                    max_leaf_nodes=15,
                    l2_regularization=1.0,
                    early_stopping=False,
                    random_state=seed,
                ),
            )
        ]
    )


CANDIDATES: dict[str, Callable[[int, int], Pipeline]] = {
    BASELINE: _linear_regression,
    "ridge": _ridge,
    "svr": _svr,
    "random_forest": _random_forest,
    "extra_trees": _extra_trees,
    "hist_gradient_boosting": _hist_gradient_boosting,
}

PROTOCOLS = {
    "leakage_free": "exact duplicate rows dropped before the 80/20 split; K-fold CV on the 80 %",
    "paper": "duplicates kept (the seed paper's protocol); 80/20 split; K-fold CV on the 80 %",
}


class QualityGateError(RuntimeError):
    """The promoted model does not beat the baseline; no artifact was written."""

    def __init__(self, message: str, report: str):
        super().__init__(message)
        self.report = report  # every candidate's metrics, so the failure can be understood


@dataclass(frozen=True)
class TrainConfig:
    data_dir: Path
    output: Path
    wine: str = "red"
    seed: int = 0
    folds: int = 5
    candidates: tuple[str, ...] = tuple(CANDIDATES)
    jobs: int = 1
    progress: bool = False
    interval_level: float = intervals.DEFAULT_LEVEL

    @property
    def data_file(self) -> Path:
        return self.data_dir / file_name(self.wine)


@dataclass
class Progress:
    """Progress lines on stderr (a terminal), silent otherwise."""

    enabled: bool
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[{self.elapsed():6.1f}s] {message}", file=sys.stderr, flush=True)


def score(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, R² and the share of predictions within 0.5 and 1.0 grade (Cortez et al. 2009)."""
    error = np.abs(y_pred - y_true)
    metrics = {
        "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)),
    }
    for tolerance, key in TOLERANCES.items():
        metrics[key] = float(np.mean(error <= tolerance))
    return metrics


@dataclass
class Split:
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def split(X: np.ndarray, y: np.ndarray, seed: int) -> Split:
    parts = train_test_split(X, y, test_size=TEST_SIZE, random_state=seed)
    return Split(*parts)


def cv_folds(split_: Split, config: TrainConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """The K folds of the training part (the same for every candidate)."""
    folds = KFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    return list(folds.split(split_.X_train))


def evaluate(
    name: str, split_: Split, config: TrainConfig, progress: Progress, protocol: str
) -> tuple[dict[str, Any], Pipeline, np.ndarray]:
    """CV metrics on the training part, then the model refitted on it and scored on the test.

    Also returns the out-of-fold prediction of every training row (the intervals' calibration).
    """
    fold_scores = []
    out_of_fold = np.empty(len(split_.y_train))
    started = time.perf_counter()
    for number, (fit_rows, score_rows) in enumerate(cv_folds(split_, config), start=1):
        progress(f"{protocol}: {name} fold {number}/{config.folds}")
        model = CANDIDATES[name](config.seed, config.jobs)
        model.fit(split_.X_train[fit_rows], split_.y_train[fit_rows])
        predicted = model.predict(split_.X_train[score_rows])
        out_of_fold[score_rows] = predicted
        fold_scores.append(score(split_.y_train[score_rows], predicted))
    progress(f"{protocol}: {name} fit on the training part")
    model = CANDIDATES[name](config.seed, config.jobs)
    model.fit(split_.X_train, split_.y_train)
    result = {
        "cv": {key: float(np.mean([s[key] for s in fold_scores])) for key in fold_scores[0]},
        "cv_std": {key: float(np.std([s[key] for s in fold_scores])) for key in fold_scores[0]},
        "test": score(split_.y_test, model.predict(split_.X_test)),
    }
    progress(f"{protocol}: {name} done in {time.perf_counter() - started:.1f} s")
    return result, model, out_of_fold


def gate(candidates: dict[str, Any], promoted: str) -> dict[str, Any]:
    """Promoted vs baseline on the leakage-free held-out part; lower RMSE and lower MAE needed.

    A difference within floating-point noise (GATE_MARGIN) is not a win.
    """
    ours, theirs = candidates[promoted]["test"], candidates[BASELINE]["test"]
    failures = [
        f"test {key.upper()} {ours[key]:.4f} is not below the baseline's {theirs[key]:.4f}"
        for key in ("rmse", "mae")
        if not ours[key] < theirs[key] - GATE_MARGIN
    ]
    return {
        "passed": not failures,
        "rule": f"held-out RMSE and MAE below those of {BASELINE}, leakage-free protocol",
        "promoted": {k: ours[k] for k in ("rmse", "mae")},
        "baseline": {k: theirs[k] for k in ("rmse", "mae")},
        "failures": failures,
    }


def feature_stats(X: np.ndarray) -> list[dict[str, Any]]:
    stats = []
    for index, feature in enumerate(FEATURES):
        column = X[:, index]
        stats.append(
            {
                "name": feature.name,
                "key": feature.key,
                "unit": feature.unit,
                "minimum": feature.minimum,
                "maximum": feature.maximum,
                "train_min": float(column.min()),
                "train_max": float(column.max()),
                "quantiles": {q: float(np.quantile(column, float(q))) for q in QUANTILES},
                "mean": float(column.mean()),
            }
        )
    return stats


def target_stats(y: np.ndarray) -> dict[str, Any]:
    values, counts = np.unique(y, return_counts=True)
    return {
        "name": "quality",
        "mean": float(y.mean()),
        "std": float(y.std()),
        "min": float(y.min()),
        "max": float(y.max()),
        "counts": {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)},
    }


def reference_inputs(X_train: np.ndarray, X_test: np.ndarray) -> np.ndarray:
    """Median, minimum and maximum training rows plus the first few held-out rows."""
    summary = [np.median(X_train, axis=0), X_train.min(axis=0), X_train.max(axis=0)]
    return np.vstack([*summary, X_test[:REFERENCE_TEST_ROWS]])


def git_commit() -> str | None:
    """The commit of the source tree this package runs from, when it is a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def onnx_runtime(
    estimator: Pipeline, X_all: np.ndarray, progress: Progress
) -> tuple[bytes | None, dict[str, Any]]:
    """Export to ONNX and check it against scikit-learn on every row of the training file."""
    from wine_quality.core import runtime

    progress(f"exporting {type(estimator[-1]).__name__} to ONNX")
    try:
        onnx_bytes = runtime.export_onnx(estimator)
    except runtime.RuntimeExportError as error:
        return None, {"onnx": None, "reason": f"export failed: {error}"}
    try:
        fast = runtime.OnnxPredictor(onnx_bytes).predict(X_all)
    except Exception as error:  # an export onnxruntime cannot run is never shipped
        return None, {"onnx": None, "reason": f"onnxruntime cannot run the export: {error}"}
    reference = runtime.SklearnPredictor(estimator).predict(X_all)
    max_abs_error = float(np.max(np.abs(fast - reference)))
    if not max_abs_error <= runtime.ONNX_TOLERANCE:
        reason = (
            f"ONNX predictions differ from scikit-learn by up to {max_abs_error:.3g} "
            f"(tolerance {runtime.ONNX_TOLERANCE:g}) on the training file"
        )
        return None, {"onnx": None, "reason": reason}
    return onnx_bytes, {
        "onnx": {
            "file": artifact.ONNX_FILE,
            "tolerance": runtime.ONNX_TOLERANCE,
            "max_abs_error": max_abs_error,
            "checked_rows": len(X_all),
        }
    }


def first_servable(
    ranked: list[str], fitted: dict[str, Pipeline], X_all: np.ndarray, progress: Progress
) -> tuple[str, bytes, dict[str, Any]]:
    """The best-ranked candidate with an exact ONNX export, the export and its runtimes entry.

    The service runs only the ONNX export (it never unpickles a model: docs/security.md), so a
    candidate without an exact one cannot be promoted; those passed over are recorded with the
    reason. Raises QualityGateError when no candidate exports.
    """
    passed_over: dict[str, str] = {}
    for name in ranked:
        onnx_bytes, runtimes = onnx_runtime(fitted[name], X_all, progress)
        if onnx_bytes is not None:
            if passed_over:
                runtimes["passed_over"] = passed_over
            return name, onnx_bytes, runtimes
        passed_over[name] = runtimes["reason"]
        progress(f"{name} cannot be served: {runtimes['reason']}")
    reasons = "; ".join(f"{name}: {reason}" for name, reason in passed_over.items())
    raise QualityGateError(
        f"no candidate can be promoted: none has an exact ONNX export ({reasons}). "
        "No artifact was written.",
        reasons,
    )


def importance(model: Pipeline, data: Split, seed: int) -> list[dict[str, Any]]:
    """Permutation importance (RMSE increase) on the held-out part."""
    result = permutation_importance(
        model,
        data.X_test,
        data.y_test,
        scoring="neg_root_mean_squared_error",
        n_repeats=5,
        random_state=seed,
        n_jobs=1,
    )
    return [
        {"name": f.name, "key": f.key, "mean": float(m), "std": float(s)}
        for f, m, s in zip(FEATURES, result.importances_mean, result.importances_std, strict=True)
    ]


def train(config: TrainConfig) -> dict[str, Any]:
    """Run the whole pipeline; return the metadata of the written artifact.

    Raises DataError (bad data), QualityGateError (nothing written) or ArtifactError.
    """
    unknown = [name for name in config.candidates if name not in CANDIDATES]
    if unknown or not config.candidates:
        raise ValueError(f"unknown candidate(s) {unknown}; choose from {', '.join(CANDIDATES)}")
    if config.folds < 2:
        raise ValueError(f"--folds must be at least 2, got {config.folds}")
    if config.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {config.jobs}")
    if not 0 < config.interval_level < 1:
        raise ValueError(f"--interval-level must be between 0 and 1, got {config.interval_level}")
    if not promotable(config.candidates):
        raise ValueError(
            f"none of {', '.join(config.candidates)} can be promoted: a promoted model must have "
            f"an exact explanation; add one of {', '.join(promotable(tuple(CANDIDATES)))}"
        )
    progress = Progress(config.progress)
    # OpenMP (histogram boosting) spinning on more threads than --jobs slows a shared machine down.
    with threadpool_limits(limits=config.jobs):
        return _train(config, progress)


def _train(config: TrainConfig, progress: Progress) -> dict[str, Any]:
    dataset = load_dataset(config.data_file)
    progress(f"{dataset.path}: {dataset.rows} rows, {dataset.duplicates} exact duplicates")
    keep = dataset.first_occurrences()
    splits = {
        "leakage_free": split(dataset.X[keep], dataset.y[keep], config.seed),
        "paper": split(dataset.X, dataset.y, config.seed),
    }
    evaluations, seconds, fitted, out_of_fold = evaluate_all(splits, config, progress)
    leakage_free = evaluations["leakage_free"]
    ranked = sorted(
        promotable(config.candidates), key=lambda name: (leakage_free[name]["cv"]["rmse"], name)
    )
    promoted, onnx_bytes, runtimes = first_servable(ranked, fitted, dataset.X, progress)
    verdict = gate(leakage_free, promoted)
    progress(f"promoted {promoted}: gate {'passed' if verdict['passed'] else 'FAILED'}")
    if not verdict["passed"]:
        raise QualityGateError(
            f"quality gate failed: the promoted model {promoted} does not beat the {BASELINE} "
            f"baseline on the held-out test part: {'; '.join(verdict['failures'])}. "
            f"No artifact was written to {config.output}.",
            candidates_table(_protocol_blocks(evaluations, splits, config)),
        )

    model, data = fitted[promoted], splits["leakage_free"]
    progress("permutation importance on the held-out part")
    metadata = describe(config, dataset, splits, evaluations, promoted, model, verdict)
    metadata["runtimes"] = runtimes
    test_pred = model.predict(data.X_test)
    metadata["intervals"], held_out_bounds = intervals.calibrate(
        data.X_train,
        data.y_train,
        out_of_fold[promoted],
        cv_folds(data, config),
        data.X_test,
        data.y_test,
        test_pred,
        config.interval_level,
    )
    explainer = explain.build(model, data.X_train)
    explainer_bytes = explain.to_bytes(explainer)
    metadata["explainer"] = {
        "file": explain.EXPLAINER_FILE,
        "sha256": artifact.sha256_bytes(explainer_bytes),
        "method": explainer.method,
        "description": explain.METHODS[explainer.method],
    }
    metadata["timing"] = {
        "training_seconds": round(progress.elapsed(), 3),
        "machine": f"{platform.machine()}, {_cpus()} CPU(s)",
        "jobs": config.jobs,
        "candidates_seconds": seconds,
    }
    progress("writing the artifact, model card and plots")
    plots = {"y_true": data.y_test, "y_pred": test_pred, "bounds": held_out_bounds}
    written = artifact.save_artifact(
        config.output,
        model,
        metadata,
        onnx_bytes=onnx_bytes,
        files={explain.EXPLAINER_FILE: explainer_bytes},
        write_docs=lambda directory, meta: _write_card(directory, meta, plots),
    )
    progress(f"done: {config.output} ({written['version']})")
    return written


def evaluate_all(
    splits: dict[str, Split], config: TrainConfig, progress: Progress
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Pipeline], dict[str, np.ndarray]]:
    """Every candidate (and the baseline) under every protocol.

    Returns the results, the seconds each took, and the models fitted on the leakage-free
    training part (the promoted one is shipped) with their out-of-fold predictions.
    """
    names = list(dict.fromkeys([BASELINE, *config.candidates]))
    evaluations: dict[str, dict[str, Any]] = {protocol: {} for protocol in splits}
    seconds: dict[str, dict[str, float]] = {protocol: {} for protocol in splits}
    fitted: dict[str, Pipeline] = {}
    out_of_fold: dict[str, np.ndarray] = {}
    for protocol, data in splits.items():
        for name in names:
            started = time.perf_counter()
            evaluations[protocol][name], model, oof = evaluate(
                name, data, config, progress, protocol
            )
            seconds[protocol][name] = round(time.perf_counter() - started, 3)
            if protocol == "leakage_free":
                fitted[name], out_of_fold[name] = model, oof
    return evaluations, seconds, fitted, out_of_fold


def promotable(candidates: tuple[str, ...]) -> list[str]:
    """The candidates that may be promoted: those with an exact explanation (not SVR)."""
    return [name for name in candidates if explain.supports(CANDIDATES[name](0, 1))]


def describe(
    config: TrainConfig,
    dataset: Dataset,
    splits: dict[str, Split],
    evaluations: dict[str, Any],
    promoted: str,
    model: Pipeline,
    verdict: dict[str, Any],
) -> dict[str, Any]:
    """The metadata of the promoted model (save_artifact adds checksums, version, versions)."""
    data, leakage_free = splits["leakage_free"], evaluations["leakage_free"]
    inputs = reference_inputs(data.X_train, data.X_test)
    return {
        "name": MODEL_NAME,
        "git_commit": git_commit(),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "algorithm": promoted,
        "estimator": type(model[-1]).__name__,
        "params": _jsonable(model.get_params(deep=True)),
        "wine": config.wine,
        "seed": config.seed,
        "data": {
            "file": dataset.path.name,
            "sha256": dataset.sha256,
            "published_uci_file": dataset.is_published,
            "rows": dataset.rows,
            "duplicates": dataset.duplicates,
            "rows_without_duplicates": int(dataset.first_occurrences().sum()),
            "train_rows": len(data.y_train),
            "test_rows": len(data.y_test),
        },
        "metrics": {
            "selection": {
                "protocol": "leakage_free",
                "criterion": f"lowest mean {config.folds}-fold CV RMSE among the candidates "
                "with an exact explanation and an exact ONNX export",
                "baseline": BASELINE,
                "promoted": promoted,
                "candidates": list(config.candidates),
                "promotable": promotable(config.candidates),
            },
            # The promoted model's leakage-free numbers, flat for dashboards and release checks.
            "test": leakage_free[promoted]["test"],
            "cv": leakage_free[promoted]["cv"],
            "baseline": {key: leakage_free[BASELINE][key] for key in ("cv", "test")},
            "gate": verdict,
            "protocols": _protocol_blocks(evaluations, splits, config),
        },
        "importance": importance(model, data, config.seed),
        "features": feature_stats(data.X_train),
        "target": target_stats(data.y_train),
        "reference": {
            "inputs": inputs.tolist(),
            "outputs": model.predict(inputs).tolist(),
            "tolerance": REFERENCE_TOLERANCE,
        },
    }


def _protocol_blocks(
    evaluations: dict[str, Any], splits: dict[str, Split], config: TrainConfig
) -> dict[str, Any]:
    return {
        protocol: {
            "description": PROTOCOLS[protocol],
            "folds": config.folds,
            "test_size": TEST_SIZE,
            "train_rows": len(splits[protocol].y_train),
            "test_rows": len(splits[protocol].y_test),
            "candidates": evaluations[protocol],
        }
        for protocol in splits
    }


def _write_card(directory: Path, metadata: dict[str, Any], plots: dict[str, Any]) -> None:
    from wine_quality.training import card

    card.write_model_card(directory, metadata, plots["y_true"], plots["y_pred"], plots["bounds"])


def _cpus() -> int:
    import os

    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _jsonable(value: Any) -> Any:
    """Estimator parameters as JSON: nested estimators become their class names."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    return type(value).__name__


def candidates_table(protocols: dict[str, Any]) -> str:
    """Every candidate under both protocols, as plain text."""
    lines = []
    header = (
        f"{'candidate':<24}{'CV RMSE':>9}{'test RMSE':>10}{'test MAE':>9}{'R2':>7}"
        f"{'±0.5':>8}{'±1.0':>8}"
    )
    for protocol, block in protocols.items():
        lines.append(f"{protocol} ({block['description']})")
        lines.append(header)
        for name, result in block["candidates"].items():
            test = result["test"]
            lines.append(
                f"{name:<24}{result['cv']['rmse']:>9.4f}{test['rmse']:>10.4f}{test['mae']:>9.4f}"
                f"{test['r2']:>7.3f}{test['within_0_5']:>8.3f}{test['within_1']:>8.3f}"
            )
        lines.append("")
    return "\n".join(lines)


def summary(metadata: dict[str, Any]) -> str:
    """A short plain-text report: every candidate under both protocols, the gate, the artifact."""
    lines = [candidates_table(metadata["metrics"]["protocols"])]
    gate_ = metadata["metrics"]["gate"]
    lines.append(
        f"promoted {metadata['algorithm']} (test RMSE {gate_['promoted']['rmse']:.4f}, "
        f"MAE {gate_['promoted']['mae']:.4f}) beats {BASELINE} "
        f"(RMSE {gate_['baseline']['rmse']:.4f}, MAE {gate_['baseline']['mae']:.4f}); "
        f"version {metadata['version']}; "
        f"{metadata['timing']['training_seconds']:.1f} s"
    )
    return "\n".join(lines)
