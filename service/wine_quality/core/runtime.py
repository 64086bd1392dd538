"""Inference runtimes: the scikit-learn estimator itself, and its ONNX export under onnxruntime.

scikit-learn pays a fixed cost of milliseconds per `predict` call on a 100-tree forest (it
dispatches every tree through joblib), which would dominate a single-row request. onnxruntime
walks the same trees in tens of microseconds. The export is checked against the estimator on real
rows before it is used, so the two runtimes agree to `ONNX_TOLERANCE`.

Exactness of tree ensembles: scikit-learn compares `float32(x)` with a float64 threshold and sums
the trees' leaf values in float64. skl2onnx's default export stores thresholds and leaf values as
float32 and sums in float32, which drifts by up to ~3e-5 over hundreds of trees.
`_exact_tree_ensembles` rewrites each tree-ensemble node to take double input rounded through
float32 (as scikit-learn does), with float64 thresholds and leaf weights, so the sum is computed in
float64 as well; the only remaining rounding is onnxruntime's float32 output (~2e-7 for a grade
near 6).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from wine_quality.core.features import FEATURES

RUNTIMES: tuple[str, ...] = ("auto", "onnx", "sklearn")
"""Inference runtimes: auto (the artifact's fast runtime when it verifies, else scikit-learn)."""
ONNX_TOLERANCE = 1e-5
ONNX_INPUT = "input"
_ML_DOMAIN = "ai.onnx.ml"
_TREE_OP = "TreeEnsembleRegressor"


class RuntimeExportError(Exception):
    """The estimator cannot be exported to an ONNX graph that onnxruntime can run."""


class Predictor(Protocol):
    name: str

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Predicted quality of float64 rows [n, 11], as float64 [n]."""
        ...


class SklearnPredictor:
    """The scikit-learn estimator, the reference every other runtime is checked against."""

    name = "sklearn"

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def predict(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(rows), dtype=np.float64).ravel()


class OnnxPredictor:
    """An ONNX graph under onnxruntime, one thread per process (workers share the cores).

    A session belongs to the process that opened it: ONNX Runtime's threads do not survive a
    fork (a child that inherits a session aborts at exit), so gunicorn's master verifies the
    graph's bytes and each worker opens its own session from them (app/holder.py)."""

    name = "onnx"

    def __init__(self, onnx_bytes: bytes) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            onnx_bytes, options, providers=["CPUExecutionProvider"]
        )
        self._output = self._session.get_outputs()[0].name

    def predict(self, rows: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=np.float64)
        (result,) = self._session.run([self._output], {ONNX_INPUT: rows})
        return np.asarray(result, dtype=np.float64).ravel()


def export_onnx(estimator: Any) -> bytes:
    """The estimator (a fitted scikit-learn pipeline) as an ONNX graph taking float64 [N, 11].

    Raises RuntimeExportError when skl2onnx cannot convert it or onnxruntime cannot run the result.
    """
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import DoubleTensorType

        model = convert_sklearn(
            estimator,
            initial_types=[(ONNX_INPUT, DoubleTensorType([None, len(FEATURES)]))],
            target_opset={"": 18, _ML_DOMAIN: 3},
            name="wine_quality",  # a fixed graph name keeps the export byte-for-byte reproducible
        )
        _exact_tree_ensembles(model, estimator)
        onnx_bytes = model.SerializeToString()
        OnnxPredictor(onnx_bytes)  # onnxruntime must accept it
    except RuntimeExportError:
        raise
    except Exception as error:  # skl2onnx and onnxruntime raise many unrelated types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise RuntimeExportError(
            f"cannot export {type(_final_step(estimator)).__name__} to ONNX: "
            f"{type(error).__name__}: {first_line[:300]}"
        ) from error
    return onnx_bytes


def _final_step(estimator: Any) -> Any:
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator


def _exact_tree_ensembles(model: Any, estimator: Any) -> None:
    """Give every tree-ensemble node float64 thresholds and weights (see the module docstring)."""
    tree_nodes = [node for node in model.graph.node if node.op_type == _TREE_OP]
    if not tree_nodes:
        return
    forest = _final_step(estimator)
    trees = [tree.tree_ for tree in getattr(forest, "estimators_", [])]
    if len(tree_nodes) != 1 or not trees:
        raise RuntimeExportError(
            f"no exact ONNX export for {type(forest).__name__}: only random forests and "
            "extra trees are supported"
        )
    _rewrite_tree_node(model, tree_nodes[0], trees)
    for opset in model.opset_import:
        if opset.domain == _ML_DOMAIN:
            opset.version = 3


def _rewrite_tree_node(model: Any, node: Any, trees: list[Any]) -> None:
    from onnx import TensorProto, helper, numpy_helper
    from skl2onnx.common.tree_ensemble import sklearn_threshold

    attributes = {attribute.name: attribute for attribute in node.attribute}
    modes = [mode.decode() for mode in attributes["nodes_modes"].strings]
    thresholds = [
        0.0
        if mode == "LEAF"
        else float(sklearn_threshold(trees[tree_id].threshold[node_id], np.float32, mode))
        for tree_id, node_id, mode in zip(
            attributes["nodes_treeids"].ints, attributes["nodes_nodeids"].ints, modes, strict=True
        )
    ]
    weights = [
        trees[tree_id].value[node_id, 0, 0] / len(trees)
        for tree_id, node_id in zip(
            attributes["target_treeids"].ints, attributes["target_nodeids"].ints, strict=True
        )
    ]
    for name in ("nodes_values", "target_weights"):
        node.attribute.remove(attributes[name])
    node.attribute.extend(
        [
            helper.make_attribute(
                "nodes_values_as_tensor",
                numpy_helper.from_array(np.array(thresholds, dtype=np.float64)),
            ),
            helper.make_attribute(
                "target_weights_as_tensor",
                numpy_helper.from_array(np.array(weights, dtype=np.float64)),
            ),
        ]
    )

    # Round the input through float32 as scikit-learn's trees do; onnxruntime's tree-ensemble
    # output is float32, cast back to the graph's double output.
    source, result = node.input[0], node.output[0]
    node.input[0], node.output[0] = f"{source}_f32_f64", f"{result}_f32"
    position = list(model.graph.node).index(node)
    model.graph.node.insert(
        position,
        helper.make_node("Cast", [f"{source}_f32"], [f"{source}_f32_f64"], to=TensorProto.DOUBLE),
    )
    model.graph.node.insert(
        position, helper.make_node("Cast", [source], [f"{source}_f32"], to=TensorProto.FLOAT)
    )
    model.graph.node.insert(
        position + 3, helper.make_node("Cast", [f"{result}_f32"], [result], to=TensorProto.DOUBLE)
    )
