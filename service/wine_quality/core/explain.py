"""Why the model predicts what it does: an exact additive split of each prediction over the inputs.

For every row, `base_value + sum(contributions) == prediction` (up to float64 rounding, about
1e-12), with one contribution per feature:

* **Linear models** (linear regression, ridge; a StandardScaler before them is folded in):
  ``contribution_j = w_j * (x_j - mean_j)``, where ``w_j`` is the coefficient on the raw scale
  (the coefficient divided by the scaler's standard deviation) and ``mean_j`` the training mean;
  ``base_value`` is the prediction at the training means. The sum telescopes to ``b + w . x``.
* **Tree ensembles** (random forest, extra trees, histogram gradient boosting): the decision-path
  decomposition of Saabas. Every node of a tree has a value (the mean training target of the
  samples that reached it; for boosting, the count-weighted mean of its leaves). Walking a row from
  the root to its leaf, each split moves the value from the parent's to the child's; that change
  is credited to the feature the split tested. The changes along one path telescope to
  ``leaf - root``, so a tree's prediction is ``root + sum of its changes``; an ensemble is a
  weighted sum of trees (plus the boosting's constant), so ``base_value`` is the weighted sum of
  the root values and the contributions add up exactly.

The tree decomposition is not SHAP: it credits each split to the one feature tested there, in the
order the tree tests them, where TreeSHAP averages every feature's marginal effect over all the
orders in which features could enter. Both are exact (they sum to the prediction) and agree on
trees of depth one; on deeper trees Saabas favours features split near the leaves and can credit a
feature the row's value never "changed" the prediction for. It costs one walk per tree (a few
hundred microseconds for 100 trees), needs no background data, and is what a user can check by
hand: every number is a difference of two node values.

The explainer is built at training time from the fitted pipeline and shipped in the artifact as
plain arrays (`explainer.npz`, written deterministically, read with ``allow_pickle=False`` and
verified by its sha256 and by reproducing the reference predictions), so explaining needs neither
the pickled model nor the ONNX graph. Support vector regression has no exact decomposition of
this kind and cannot be promoted (`supports`).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from wine_quality.core.features import FEATURES

EXPLAINER_FILE = "explainer.npz"
FORMAT_VERSION = 1
LINEAR, TREE_PATH = "linear", "tree_path"
METHODS = {
    LINEAR: "coefficient x (value - training mean), through the scaler",
    TREE_PATH: "decision-path decomposition (Saabas): value changes along each tree's path",
}
LINEAR_ESTIMATORS = ("LinearRegression", "Ridge")
FOREST_ESTIMATORS = ("RandomForestRegressor", "ExtraTreesRegressor")
BOOSTING_ESTIMATORS = ("HistGradientBoostingRegressor",)
ROWS_PER_CHUNK = 256  # bounds the [rows, trees] walk arrays of a large batch (a few MB each)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same model gives the same bytes


class ExplainerError(ValueError):
    """The model cannot be explained, or an explainer file is malformed; the message says why."""


@dataclass(frozen=True)
class Explanation:
    """base_value [n] and contributions [n, 11] (FEATURES order); they sum to the prediction."""

    base_value: np.ndarray
    contributions: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.base_value + self.contributions.sum(axis=1)


class Explainer(Protocol):
    method: str

    def explain(self, rows: np.ndarray) -> Explanation: ...

    def arrays(self) -> dict[str, np.ndarray]: ...


class SumPredictor:
    """An explainer seen as a predictor (base + contributions), to check it like a runtime."""

    name = "explainer"

    def __init__(self, explainer: Explainer) -> None:
        self.explainer = explainer

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return self.explainer.explain(rows).total


# --------------------------------------------------------------------------- the two explainers


class LinearExplainer:
    method = LINEAR

    def __init__(self, weights: np.ndarray, center: np.ndarray, base: float) -> None:
        self.weights = weights
        self.center = center
        self.base = float(base)

    def explain(self, rows: np.ndarray) -> Explanation:
        contributions = self.weights * (np.asarray(rows, dtype=np.float64) - self.center)
        return Explanation(np.full(len(rows), self.base), contributions)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "center": self.center, "base": np.float64(self.base)}


class TreePathExplainer:
    """All trees flattened into one node table. Leaves point to themselves with an infinite
    threshold, so every row can take `depth` steps and a leaf adds nothing."""

    method = TREE_PATH

    def __init__(
        self,
        feature: np.ndarray,
        threshold: np.ndarray,
        left: np.ndarray,
        right: np.ndarray,
        value: np.ndarray,
        roots: np.ndarray,
        offset: float,
        depth: int,
        float32_inputs: bool,
    ) -> None:
        self.feature = feature
        self.threshold = threshold
        self.left = left
        self.right = right
        self.value = value
        self.roots = roots
        self.offset = float(offset)
        self.depth = int(depth)
        self.float32_inputs = bool(float32_inputs)
        self.base = self.offset + float(value[roots].sum())

    def explain(self, rows: np.ndarray) -> Explanation:
        rows = np.asarray(rows, dtype=np.float64)
        if self.float32_inputs:  # scikit-learn's trees compare float32(x) with the thresholds
            rows = rows.astype(np.float32).astype(np.float64)
        parts = [
            self._walk(rows[start : start + ROWS_PER_CHUNK])
            for start in range(0, len(rows), ROWS_PER_CHUNK)
        ]
        contributions = np.vstack(parts) if parts else np.zeros((0, len(FEATURES)))
        return Explanation(np.full(len(rows), self.base), contributions)

    def _walk(self, rows: np.ndarray) -> np.ndarray:
        count, width = len(rows), len(FEATURES)
        node = np.broadcast_to(self.roots, (count, len(self.roots)))
        cell = np.arange(count)[:, None] * width  # row offset into the flat [count, 11] result
        totals = np.zeros(count * width)
        for _ in range(self.depth):
            feature = self.feature[node]
            goes_left = np.take_along_axis(rows, feature, axis=1) <= self.threshold[node]
            child = np.where(goes_left, self.left[node], self.right[node])
            change = self.value[child] - self.value[node]
            totals += np.bincount(
                (cell + feature).ravel(), weights=change.ravel(), minlength=count * width
            )
            node = child
        return totals.reshape(count, width)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "feature": self.feature,
            "threshold": self.threshold,
            "left": self.left,
            "right": self.right,
            "value": self.value,
            "roots": self.roots,
            "offset": np.float64(self.offset),
            "depth": np.int64(self.depth),
            "float32_inputs": np.bool_(self.float32_inputs),
        }


# --------------------------------------------------------------------------- building (training)


def supports(pipeline: Any) -> bool:
    """Whether `pipeline` (fitted or not) is of a family this module explains exactly."""
    steps = _steps(pipeline)
    final = type(steps[-1]).__name__
    before = [type(step).__name__ for step in steps[:-1]]
    if final in LINEAR_ESTIMATORS:
        return before in ([], ["StandardScaler"])
    return final in FOREST_ESTIMATORS + BOOSTING_ESTIMATORS and not before


def build(pipeline: Any, X_train: np.ndarray) -> Explainer:
    """The explainer of a fitted pipeline; `X_train` is the data it was fitted on."""
    if not supports(pipeline):
        names = " -> ".join(type(step).__name__ for step in _steps(pipeline))
        raise ExplainerError(f"no exact additive explanation for {names}")
    steps = _steps(pipeline)
    final = steps[-1]
    if type(final).__name__ in LINEAR_ESTIMATORS:
        return _linear(steps, X_train)
    if type(final).__name__ in FOREST_ESTIMATORS:
        return _forest(final)
    return _boosting(final)


def _steps(pipeline: Any) -> list[Any]:
    steps = getattr(pipeline, "steps", None)
    return [step for _, step in steps] if steps else [pipeline]


def _linear(steps: list[Any], X_train: np.ndarray) -> LinearExplainer:
    model = steps[-1]
    coef = np.asarray(model.coef_, dtype=np.float64).ravel()
    intercept = float(np.ravel(model.intercept_)[0])
    mean, scale = np.zeros(len(FEATURES)), np.ones(len(FEATURES))
    if len(steps) == 2:
        mean, scale = steps[0].mean_, steps[0].scale_
    weights = coef / scale
    center = np.asarray(X_train, dtype=np.float64).mean(axis=0)
    base = intercept - float(weights @ mean) + float(weights @ center)
    return LinearExplainer(weights, center, base)


@dataclass
class _Tree:
    """One tree's nodes: children (-1 at leaves), tested feature, threshold, value."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray


def _forest(forest: Any) -> TreePathExplainer:
    weight = 1.0 / len(forest.estimators_)
    trees = []
    for estimator in forest.estimators_:
        tree = estimator.tree_
        trees.append(
            _Tree(
                tree.children_left,
                tree.children_right,
                tree.feature,
                tree.threshold,
                tree.value[:, 0, 0] * weight,
            )
        )
    return _flatten(trees, offset=0.0, float32_inputs=True)


def _boosting(model: Any) -> TreePathExplainer:
    trees = []
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        leaf = nodes["is_leaf"].astype(bool)
        left = np.where(leaf, -1, nodes["left"].astype(np.int64))
        right = np.where(leaf, -1, nodes["right"].astype(np.int64))
        value = _mean_of_leaves(left, right, nodes["value"], nodes["count"].astype(np.float64))
        trees.append(_Tree(left, right, nodes["feature_idx"], nodes["num_threshold"], value))
    offset = float(np.ravel(model._baseline_prediction)[0])
    return _flatten(trees, offset=offset, float32_inputs=False)


def _mean_of_leaves(
    left: np.ndarray, right: np.ndarray, value: np.ndarray, count: np.ndarray
) -> np.ndarray:
    """Leaf values as they are; each inner node the count-weighted mean of its children."""
    value = np.array(value, dtype=np.float64)
    order = [0]
    for node in order:  # breadth first: parents before children
        if left[node] >= 0:
            order += [left[node], right[node]]
    for node in reversed(order):
        if left[node] >= 0:
            a, b = left[node], right[node]
            value[node] = (count[a] * value[a] + count[b] * value[b]) / (count[a] + count[b])
    return value


def _flatten(trees: list[_Tree], offset: float, float32_inputs: bool) -> TreePathExplainer:
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("feature", "threshold", "left", "right")}
    values, roots, depth, start = [], [], 0, 0
    for tree in trees:
        size = len(tree.left)
        own = np.arange(start, start + size)
        leaf = np.asarray(tree.left) < 0
        parts["left"].append(np.where(leaf, own, np.asarray(tree.left) + start))
        parts["right"].append(np.where(leaf, own, np.asarray(tree.right) + start))
        parts["feature"].append(np.where(leaf, 0, tree.feature))
        parts["threshold"].append(np.where(leaf, np.inf, tree.threshold))
        values.append(np.asarray(tree.value, dtype=np.float64))
        roots.append(start)
        depth = max(depth, _depth(np.asarray(tree.left), np.asarray(tree.right)))
        start += size
    return TreePathExplainer(
        feature=np.concatenate(parts["feature"]).astype(np.int8),
        threshold=np.concatenate(parts["threshold"]).astype(np.float64),
        left=np.concatenate(parts["left"]).astype(np.int32),
        right=np.concatenate(parts["right"]).astype(np.int32),
        value=np.concatenate(values),
        roots=np.array(roots, dtype=np.int32),
        offset=offset,
        depth=depth,
        float32_inputs=float32_inputs,
    )


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    level, frontier = 0, np.array([0])
    while True:
        inner = frontier[left[frontier] >= 0]
        if not len(inner):
            return level
        frontier = np.concatenate([left[inner], right[inner]])
        level += 1


# --------------------------------------------------------------------------- the file


def to_bytes(explainer: Explainer) -> bytes:
    """The explainer as an .npz file (a zip of .npy arrays), byte-identical for the same model."""
    arrays = {
        "format": np.int64(FORMAT_VERSION),
        "method": np.str_(explainer.method),
        **explainer.arrays(),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            entry = io.BytesIO()
            np.save(entry, np.asarray(arrays[name]), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME), entry.getvalue())
    return buffer.getvalue()


def from_bytes(data: bytes) -> Explainer:
    """Read an explainer file, checking every array's kind, shape and index range."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ExplainerError(f"not a readable explainer file ({error})") from None
    fields = _Arrays(arrays)
    if fields.whole("format") != FORMAT_VERSION:
        raise ExplainerError(f"format {arrays['format']} is not {FORMAT_VERSION}")
    method = str(fields.get("method"))
    if method == LINEAR:
        return LinearExplainer(
            fields.vector("weights", len(FEATURES)),
            fields.vector("center", len(FEATURES)),
            fields.number("base"),
        )
    if method == TREE_PATH:
        return _tree_path(fields)
    raise ExplainerError(f"unknown method {method[:40]!r}; expected {LINEAR} or {TREE_PATH}")


def _tree_path(fields: _Arrays) -> TreePathExplainer:
    size = len(fields.get("value"))
    value = fields.vector("value", size)
    threshold = fields.get("threshold").astype(np.float64)
    if threshold.shape != (size,) or np.isnan(threshold).any():
        raise ExplainerError("threshold must hold one number per node")
    nodes = {name: fields.indices(name, size, size) for name in ("left", "right")}
    roots = fields.indices("roots", None, size)
    depth = fields.whole("depth")
    if not len(roots) or not 0 <= depth <= 1000:
        raise ExplainerError("an explainer needs at least one tree and a depth in 0..1000")
    return TreePathExplainer(
        feature=fields.indices("feature", size, len(FEATURES)),
        threshold=threshold,
        left=nodes["left"],
        right=nodes["right"],
        value=value,
        roots=roots,
        offset=fields.number("offset"),
        depth=depth,
        float32_inputs=bool(fields.get("float32_inputs")),
    )


class _Arrays:
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def get(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            raise ExplainerError(f"the array {name!r} is missing")
        return self.arrays[name]

    def vector(self, name: str, size: int) -> np.ndarray:
        array = self.get(name)
        if array.shape != (size,) or array.dtype.kind != "f" or not np.isfinite(array).all():
            raise ExplainerError(f"{name} must hold {size} finite numbers")
        return array.astype(np.float64)

    def number(self, name: str) -> float:
        array = self.get(name)
        if array.shape != () or array.dtype.kind != "f" or not np.isfinite(array):
            raise ExplainerError(f"{name} must be one finite number")
        return float(array)

    def whole(self, name: str) -> int:
        array = self.get(name)
        if array.shape != () or array.dtype.kind not in "iu":
            raise ExplainerError(f"{name} must be one whole number")
        return int(array)

    def indices(self, name: str, size: int | None, bound: int) -> np.ndarray:
        array = self.get(name)
        if array.ndim != 1 or (size is not None and len(array) != size):
            raise ExplainerError(f"{name} must hold one entry per node")
        if array.dtype.kind not in "iu" or (
            len(array) and not 0 <= array.min() <= array.max() < bound
        ):
            raise ExplainerError(f"{name} must hold whole numbers in 0..{bound - 1}")
        return array.astype(np.int32 if bound > 127 else np.int8)
