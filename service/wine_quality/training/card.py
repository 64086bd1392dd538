"""The model card (MODEL_CARD.md) and its plots, written from the artifact's metadata.

matplotlib is a training-only dependency (the `train` extra), so it is imported here, lazily, with
the non-interactive Agg backend; the service never imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

CARD_FILE = "MODEL_CARD.md"
PLOTS_DIR = "plots"
PLOTS = {
    "predicted_vs_true.png": "Predicted vs true grade (held-out part)",
    "residuals.png": "Residuals (predicted - true) against the predicted grade (held-out part)",
    "feature_importance.png": "Permutation importance: RMSE increase when a feature is permuted",
    "interval_coverage.png": "Prediction intervals: held-out coverage against the level, and the "
    "held-out wines with their intervals",
}


def write_model_card(
    directory: Path,
    metadata: dict[str, Any],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """`bounds`: the held-out wines' prediction intervals (low, high), for their plot."""
    plots_note = write_plots(directory / PLOTS_DIR, metadata, y_true, y_pred, bounds)
    (directory / CARD_FILE).write_text(render(metadata, plots_note), encoding="utf-8")


def write_plots(
    folder: Path,
    metadata: dict[str, Any],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> str | None:
    """Write the PNG plots; return a note instead when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return (
            "Plots were not drawn: matplotlib is not installed "
            "(`pip install 'wine-quality[train]'`)."
        )
    folder.mkdir(parents=True, exist_ok=True)
    title = f"{metadata['algorithm']} ({metadata['wine']} wine)"

    figure, axes = plt.subplots(figsize=(5.5, 5))
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(y_true))
    axes.scatter(y_true + jitter, y_pred, s=10, alpha=0.5)
    low = float(min(y_true.min(), y_pred.min())) - 0.5
    high = float(max(y_true.max(), y_pred.max())) + 0.5
    axes.plot([low, high], [low, high], color="grey", linewidth=1, label="perfect")
    axes.set(xlabel="true grade (jittered)", ylabel="predicted grade", title=title)
    axes.legend(loc="upper left")
    _save(figure, folder / "predicted_vs_true.png")

    figure, axes = plt.subplots(figsize=(6, 4))
    axes.scatter(y_pred, y_pred - y_true, s=10, alpha=0.5)
    axes.axhline(0, color="grey", linewidth=1)
    for band in (-0.5, 0.5):
        axes.axhline(band, color="grey", linewidth=0.5, linestyle="--")
    axes.set(xlabel="predicted grade", ylabel="residual (predicted - true)", title=title)
    _save(figure, folder / "residuals.png")

    importance = sorted(metadata["importance"], key=lambda item: item["mean"])
    figure, axes = plt.subplots(figsize=(6, 4.5))
    axes.barh(
        [item["name"] for item in importance],
        [item["mean"] for item in importance],
        xerr=[item["std"] for item in importance],
        color="tab:red",
    )
    axes.set(xlabel="increase of test RMSE when shuffled", title=f"Permutation importance, {title}")
    _save(figure, folder / "feature_importance.png")
    if bounds is not None:
        _interval_plot(folder / "interval_coverage.png", metadata, y_true, y_pred, bounds, title)
    return None


def _interval_plot(
    path: Path,
    metadata: dict[str, Any],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray],
    title: str,
) -> None:
    """Left: held-out coverage at each calibrated level (on the diagonal when calibrated).
    Right: every held-out wine's interval at the trained level, sorted by prediction."""
    import matplotlib.pyplot as plt

    intervals = metadata["intervals"]
    curve = intervals["curve"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    levels = [point["level"] for point in curve]
    left.plot([0.45, 1], [0.45, 1], color="grey", linewidth=1, label="coverage = level")
    left.fill_between([0.45, 1], [0.42, 0.97], [0.48, 1.03], color="grey", alpha=0.15)
    left.plot(levels, [p["coverage_test"] for p in curve], marker="o", label="held-out coverage")
    left.set(
        xlabel="level", ylabel="share of held-out grades inside", title="Calibration (±3 points)"
    )
    left.legend(loc="upper left")
    low, high = bounds
    order = np.argsort(y_pred)
    positions = np.arange(len(order))
    inside = (y_true >= low) & (y_true <= high)
    right.vlines(positions, low[order], high[order], color="tab:blue", alpha=0.35, linewidth=1)
    right.scatter(positions, y_pred[order], s=4, color="tab:blue", label="prediction")
    for covered, colour, text in (
        (True, "tab:green", "true grade inside"),
        (False, "tab:red", "outside"),
    ):
        chosen = inside[order] == covered
        right.scatter(positions[chosen], y_true[order][chosen], s=6, color=colour, label=text)
    right.set(
        xlabel="held-out wines, by prediction",
        ylabel="grade",
        title=f"{intervals['level']:.0%} intervals, {title}",
    )
    right.legend(loc="upper left", fontsize="small")
    _save(figure, path)


def _save(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    # Fixed metadata keeps the PNG bytes reproducible.
    figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)


def metrics_table(metadata: dict[str, Any]) -> str:
    """Every candidate under both protocols: CV and held-out metrics."""
    lines = [
        "| protocol | candidate | CV RMSE | test RMSE | test MAE | test R² | test within ±0.5 "
        "| test within ±1.0 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    promoted = metadata["algorithm"]
    for protocol, block in metadata["metrics"]["protocols"].items():
        for name, result in block["candidates"].items():
            test = result["test"]
            label = f"**{name}** (promoted)" if name == promoted else name
            if name == metadata["metrics"]["selection"]["baseline"]:
                label += " (baseline)"
            lines.append(
                f"| {protocol} | {label} | {result['cv']['rmse']:.3f} | {test['rmse']:.3f} "
                f"| {test['mae']:.3f} | {test['r2']:.3f} | {test['within_0_5']:.1%} "
                f"| {test['within_1']:.1%} |"
            )
    return "\n".join(lines)


def intervals_section(metadata: dict[str, Any]) -> str:
    """The prediction intervals: method, held-out coverage and width at each level."""
    block = metadata["intervals"]
    constant = block["constant_width"]
    rows = "\n".join(
        f"| {p['level']:.0%} | {p['coverage_test']:.1%} | {p['mean_width_test']:.2f} |"
        for p in block["curve"]
    )
    return f"""## Prediction intervals
Every prediction is served with an interval at level {block["level"]:.0%} (fixed at training).
Method: {block["method"]}; calibrated on {block["calibration_rows"]} out-of-fold predictions.

On the {block["test_rows"]} held-out wines the {block["level"]:.0%} intervals hold
**{block["coverage_test"]:.1%}** of the true grades, with a mean width of
**{block["mean_width_test"]:.2f}** grades (one constant width instead:
{constant["coverage_test"]:.1%}, width {constant["mean_width_test"]:.2f}).

| level | held-out coverage | mean width |
|---:|---:|---:|
{rows}"""


def render(metadata: dict[str, Any], plots_note: str | None = None) -> str:
    data, metrics, gate = metadata["data"], metadata["metrics"], metadata["metrics"]["gate"]
    protocols = metrics["protocols"]
    onnx = metadata["runtimes"].get("onnx")
    runtime_line = (
        f"`model.onnx` reproduces scikit-learn within {onnx['tolerance']:g} "
        f"(largest difference {onnx['max_abs_error']:.2g} over all {onnx['checked_rows']} rows)"
        if onnx
        else f"scikit-learn only ({metadata['runtimes'].get('reason', 'no ONNX export')})"
    )
    plots = plots_note or "\n\n".join(
        f"![{caption}]({PLOTS_DIR}/{name})" for name, caption in PLOTS.items()
    )
    importance = sorted(metadata["importance"], key=lambda item: -item["mean"])
    top = ", ".join(f"{item['name']} ({item['mean']:.3f})" for item in importance[:4])
    return f"""# Model card: {metadata["name"]} {metadata["version"]}

## Model
- Algorithm: `{metadata["algorithm"]}` ({metadata["estimator"]}, a scikit-learn pipeline);
  parameters in `metadata.json` (`params`).
- Predicts the sensory quality grade (0-10, a regression output) of a Portuguese
  *vinho verde* ({metadata["wine"]}) from 11 physicochemical measurements.
- Trained {metadata["trained_at"]} from commit `{metadata.get("git_commit") or "unknown"}`,
  seed {metadata["seed"]}, in {metadata["timing"]["training_seconds"]:.1f} s
  ({metadata["timing"]["machine"]}), scikit-learn {metadata["versions"]["scikit-learn"]}.
- Runtimes: {runtime_line}.

## Data
UCI Wine Quality (Cortez et al. 2009, CC BY 4.0), `{data["file"]}`, sha256 `{data["sha256"]}`
({"the published file" if data["published_uci_file"] else "NOT the published UCI file"}):
{data["rows"]} rows, of which {data["duplicates"]} exactly repeat an earlier row.

## Evaluation
Two protocols, same candidates, same seed:

- **leakage_free** (selection and quality gate): {protocols["leakage_free"]["description"]};
  {protocols["leakage_free"]["train_rows"]} training and
  {protocols["leakage_free"]["test_rows"]} test rows.
- **paper** (for comparison only): {protocols["paper"]["description"]};
  copies of the same wine fall on both sides of the split, so these numbers are optimistic.

Selection: {metrics["selection"]["criterion"]} under the leakage-free protocol.

Quality gate ({gate["rule"]}): passed, RMSE {gate["promoted"]["rmse"]:.3f} vs
{gate["baseline"]["rmse"]:.3f} and MAE {gate["promoted"]["mae"]:.3f} vs
{gate["baseline"]["mae"]:.3f} for the baseline.

{metrics_table(metadata)}

Most important inputs (permutation importance, RMSE increase): {top}.

{intervals_section(metadata)}

## Explanations
Each prediction can be split exactly into a base value plus one contribution per input
(`POST /v1/predict?explain=1`): {metadata["explainer"]["description"]}
(`{metadata["explainer"]["file"]}`, docs/explanations.md).

## Plots
{plots}

## Intended use and limitations
- For demonstrations of serving and operating a small model; a grade is a panel's subjective
  median score, not a property of the wine.
- Only wines like the training data: one region (vinho verde), one colour per model, inputs inside
  the training ranges in `metadata.json` (the service warns outside them, refuses outside the
  physical bounds).
- Grades 3-4 and 8-9 are rare in the data; the model regresses towards the middle grades and is
  least accurate for exceptional wines.

## Reproduce
```
wine-quality data --dest data/wine-quality
wine-quality train --data-dir data/wine-quality --output artifacts/model \\
    --wine {metadata["wine"]} --seed {metadata["seed"]}
```
The same data, seed and library versions give the same metrics and predictions.
"""
