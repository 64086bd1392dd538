"""The benchmark (benchmarks/run.py, `make bench`) still runs: a tiny load, real servers.

Asserts only that it runs end to end and writes well-formed results; the numbers themselves belong
to `make bench`, never to a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO, require_tool

pytestmark = pytest.mark.slow

SCENARIOS = ("single", "rate", "batch_100", "v2_single")


def test_benchmark_runs_and_writes_results(
    model_dir: Path, data_source: Path, tmp_path: Path
) -> None:
    require_tool("wrk")
    output = tmp_path / "results"
    command = [
        sys.executable,
        str(REPO / "benchmarks/run.py"),
        "--model-dir",
        str(model_dir),
        "--data-dir",
        str(data_source),
        "--no-linear",
        "--peer",
        "none",
        "--no-sklearn-runtime",
        "--scenarios",
        ",".join(SCENARIOS),
        "--duration",
        "1",
        "--repeats",
        "1",
        "--rate",
        "20",
        "--rate-duration",
        "1",
        "--warmup",
        "0",
        "--batch-rows",
        "100",
        "--inprocess-budget",
        "0.1",
        "--work-dir",
        str(tmp_path / "work"),
        "--output",
        str(output),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-4000:]

    results = json.loads((output / "latest.json").read_text())
    assert {
        "date",
        "machine",
        "settings",
        "models",
        "in_process",
        "measurements",
        "goals",
        "ratios",
    } <= results.keys()
    assert results["machine"]["cores"] >= 1 and results["machine"]["python"]
    measured = {(m["server"], m["scenario"]): m for m in results["measurements"]}
    expected = {("service-promoted-onnx", s) for s in SCENARIOS} | {
        ("seed-promoted", "single"),
        ("floor-sync", "single"),
        ("floor-gthread", "single"),
        ("floor-service-worker", "single"),
        ("service-promoted-onnx+shadow", "single"),
    }
    assert set(measured) == expected
    logs = tmp_path / "work" / "logs"
    for floor, worker in (("floor-sync", "sync"), ("floor-gthread", "gthread")):
        assert f"Using worker: {worker}\n" in (logs / f"{floor}.log").read_text()
    for key, m in measured.items():
        summary = m["summary"]
        assert summary["requests"] > 0, key
        assert summary["errors"] == 0, key
        assert 0 < summary["p50_ms"] <= summary["p99_ms"], key
    assert {r["runtime"] for r in results["in_process"]} == {"sklearn", "onnx", "explain"}
    verdicts = [g["passed"] for g in results["goals"]]
    # no linear server and no 10,000-row batch in this run: those two goals are not measured
    assert verdicts[0] is None and verdicts[3] is None
    assert verdicts[1] in (True, False) and verdicts[2] in (True, False)
    assert verdicts[4] in (True, False)  # vs the bare stack
    assert verdicts[5] in (True, False)  # p99 with a shadow vs without
    assert verdicts[6] in (True, False)  # one row explained in process
    assert {r["body"] for r in results["memory"]} and all(
        r["status"] in (200, 400, 413, 422) and r["peak_above_idle_kib"] >= 0
        for r in results["memory"]
    )
    assert any(r.get("vs_seed") for r in results["ratios"])
    (reference,) = results["references"]  # vs the constant answer under the service's worker
    assert reference["value"] > 0

    table = (output / "latest.md").read_text()
    assert "| way of serving | LinearRegression |" in table
    assert_goal_rows_match_their_measurements(table, results["goals"])
    assert f"For reference, {reference['name']}: {reference['value']:.2f}" in table


def expected_verdict(goal: dict) -> str:
    if goal["value"] is None:
        return "not measured"
    below = goal["comparison"] == "<"
    passed = goal["value"] < goal["threshold"] if below else goal["value"] >= goal["threshold"]
    return "PASS" if passed else "FAIL"


def assert_goal_rows_match_their_measurements(table: str, goals: list[dict]) -> None:
    """One row per goal in the goals table, each with the goal's measured value and exactly one
    verdict: the one its value earns against its threshold (and the one latest.json records)."""
    section = table.split("Fast-inference goals:", 1)[1].strip().split("\n\n", 1)[0]
    rows = [line for line in section.splitlines()[2:] if line.startswith("|")]
    assert len(rows) == len(goals), section
    for goal, row in zip(goals, rows, strict=True):
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        assert cells[0].startswith(goal["goal"]), (cells, goal)
        verdict = expected_verdict(goal)
        assert cells[-1] == verdict, (row, goal)
        assert {True: "PASS", False: "FAIL", None: "not measured"}[goal["passed"]] == verdict
        verdicts = [word for word in ("PASS", "FAIL", "not measured") if word in row]
        assert verdicts == [verdict], row
        if goal["value"] is not None:
            assert cells[1].startswith(f"{goal['value']:.2f}"), (row, goal)
        assert cells[2] == f"{goal['comparison']} {goal['threshold']:g}", row
