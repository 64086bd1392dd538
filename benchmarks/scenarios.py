"""Request bodies and scenarios of the benchmark, from real rows of the UCI data."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from wine_quality import MODEL_NAME
from wine_quality.core.features import FEATURE_KEYS, FEATURE_NAMES

DISTINCT_ROWS = 1000
"""Single-row scenarios cycle through this many different rows: one row sent again and again
would keep the same tree paths in the CPU caches and flatter tree ensembles."""


def single_json(rows: np.ndarray) -> bytes:
    return json.dumps(dict(zip(FEATURE_KEYS, rows[0].tolist(), strict=True))).encode()


def instances_json(rows: np.ndarray) -> bytes:
    records = [dict(zip(FEATURE_KEYS, row, strict=True)) for row in rows.tolist()]
    return json.dumps({"instances": records}).encode()


def csv_text(rows: np.ndarray) -> bytes:
    lines = [",".join(FEATURE_NAMES)] + [",".join(map(repr, row)) for row in rows.tolist()]
    return ("\n".join(lines) + "\n").encode()


def v2_json(rows: np.ndarray) -> bytes:
    tensor = {
        "name": "input-0",
        "shape": list(rows.shape),
        "datatype": "FP64",
        "data": rows.reshape(-1).tolist(),
    }
    return json.dumps({"inputs": [tensor]}).encode()


def mlflow_json(rows: np.ndarray) -> bytes:
    return json.dumps({"inputs": rows.tolist()}).encode()


@dataclass
class Bodies:
    rows: np.ndarray

    def each_row(self, encode: Callable[[np.ndarray], bytes]) -> tuple[bytes, ...]:
        """One single-row body per distinct row (no newline inside: post.lua splits on lines)."""
        return tuple(
            encode(self.rows[i : i + 1]) for i in range(min(DISTINCT_ROWS, len(self.rows)))
        )

    def batch(self, encode: Callable[[np.ndarray], bytes], n: int) -> tuple[bytes, ...]:
        return (encode(self.rows[:n]),)


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    path: str
    bodies: tuple[bytes, ...]  # sent in turn
    rows: int
    connections: int
    content_type: str = "application/json"
    fixed_rate: bool = False

    @property
    def body(self) -> bytes:
        return self.bodies[0]

    @property
    def sequential(self) -> bool:
        return self.connections == 1 and not self.fixed_rate

    def expected_count(self, response: bytes) -> int:
        """Predictions in a response (JSON of the service, the seed, MLflow or v2)."""
        data = json.loads(response)
        if "outputs" in data:
            return data["outputs"][0]["shape"][0]
        if "predictions" in data:
            return len(data["predictions"])
        return 1 if "quality" in data else 0


SCENARIO_KEYS = ("single", "rate", "batch_100", "batch_10000", "csv_10000", "v2_single", "v2_10000")


def scenarios_for(kind: str, bodies: Bodies, args: argparse.Namespace) -> dict[str, Scenario]:
    c, big = args.connections, args.batch_rows
    single = Scenario(
        "single", f"1 row JSON, wrk {c} conn", "/v1/predict", bodies.each_row(single_json), 1, c
    )
    if kind == "floor":  # the bare stack: the single-row scenario only, the service's own bodies
        return {"single": single}
    if kind == "service":
        v2 = f"/v2/models/{MODEL_NAME}/infer"
        return {
            "single": single,
            "rate": Scenario(
                "rate",
                f"1 row JSON, open loop {args.rate:g}/s",
                "/v1/predict",
                bodies.each_row(single_json),
                1,
                0,
                fixed_rate=True,
            ),
            "batch_100": Scenario(
                "batch_100",
                "100 rows JSON, 1 client",
                "/v1/predict",
                bodies.batch(instances_json, 100),
                100,
                1,
            ),
            "batch_10000": Scenario(
                "batch_10000",
                f"{big} rows JSON, 1 client",
                "/v1/predict",
                bodies.batch(instances_json, big),
                big,
                1,
            ),
            "csv_10000": Scenario(
                "csv_10000",
                f"{big} rows CSV, 1 client",
                "/v1/predict",
                bodies.batch(csv_text, big),
                big,
                1,
                content_type="text/csv",
            ),
            "v2_single": Scenario(
                "v2_single", f"v2 infer 1 row, wrk {c} conn", v2, bodies.each_row(v2_json), 1, c
            ),
            "v2_10000": Scenario(
                "v2_10000", f"v2 infer {big} rows, 1 client", v2, bodies.batch(v2_json, big), big, 1
            ),
        }
    if kind == "seed":
        return {
            "single": Scenario(
                "single",
                f"1 row JSON, wrk {c} conn",
                "/predict",
                bodies.each_row(single_json),
                1,
                c,
            )
        }
    if kind == "mlflow":
        return {
            "single": Scenario(
                "single",
                f"1 row JSON, wrk {c} conn",
                "/invocations",
                bodies.each_row(mlflow_json),
                1,
                c,
            ),
            "batch_10000": Scenario(
                "batch_10000",
                f"{big} rows JSON, 1 client",
                "/invocations",
                bodies.batch(mlflow_json, big),
                big,
                1,
            ),
        }
    raise ValueError(kind)
