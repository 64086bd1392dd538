"""Latency and throughput of the service, side by side with the seed paper's server and a peer.

    .venv/bin/python benchmarks/run.py [--model-dir artifacts/model] [--update-docs]

Starts every server of the comparison on a free 127.0.0.1 port, all at once (idle servers cost
nothing), then runs rounds: each round times the in-process predict, then runs each scenario on
every server in turn, so the numbers compared with each other are taken close together and a
burst of background load on a shared machine hits both sides alike. Each number is the median of
the rounds with their spread (min-max); goal ratios are paired round by round.

Servers (all with 2 workers, the same model files):
- service: `gunicorn -c python:wine_quality.app.gunicorn_conf 'wine_quality.app:create_app()'`
  exactly as the container runs it (env WINE_QUALITY_MODEL_DIR, WINE_QUALITY_RUNTIME, PORT,
  GUNICORN_WORKERS, PROMETHEUS_MULTIPROC_DIR), with the promoted model and with the linear
  baseline, in each runtime (onnx, sklearn);
- seed: benchmarks/seed_baseline/app.py, the seed paper's way of serving, under gunicorn;
- mlflow: `mlflow models serve --env-manager local` from its own venv (benchmarks/peer_mlflow.py).

Scenarios: single-row JSON at saturation (wrk, 8 connections) and at a fixed rate (the open-loop
client of benchmarks/loadgen.py); JSON batches of 100 and 10,000 rows, a 10,000-row CSV batch and
Open Inference Protocol v2 requests (1 and 10,000 rows), each batch sent back to back by one
client (loadgen.sequential: rows per second end to end); plus the in-process cost of `predict`
for 1 and 10,000 rows. Writes results/latest.json and latest.md and
prints the fast-inference goals with PASS/FAIL.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import loadgen
import memory
import numpy as np
import peer_mlflow
import report
import scenarios
from scenarios import Bodies, Scenario
from servers import (
    FLOOR_WORKERS,
    OWN_FLOOR,
    STOCK_FLOORS,
    Server,
    floor_server,
    has_onnx,
    mlflow_server,
    seed_server,
    service_server,
    verify,
)

from wine_quality.app.requestbody import LARGE_BODY_SLOTS
from wine_quality.app.settings import integer
from wine_quality.core.artifact import (
    ArtifactError,
    load_artifact,
    package_versions,
    read_artifact,
    read_metadata,
)
from wine_quality.core.facts import ModelFacts
from wine_quality.core.features import FEATURE_KEYS

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


PACKAGES = (
    "flask",
    "gunicorn",
    "werkzeug",
    "numpy",
    "scikit-learn",
    "onnxruntime",
    "skl2onnx",
    "pandas",
    "joblib",
    "prometheus-flask-exporter",
    "prometheus-client",
)

PEER_WHY = (
    "MLflow's `models serve` is the zero-code way to serve a scikit-learn model that "
    "most teams already have (the sklearn flavour, a pickle, one command); it installs "
    "from PyPI in under a minute as mlflow-skinny, while BentoML needs a service class "
    "written for it, so it would measure our glue code rather than the product."
)


def find_data_dir(given: Path | None) -> Path:
    candidates = [given] if given else []
    env = os.environ.get("WINE_QUALITY_DATA_SOURCE")
    if env and "://" not in env:
        candidates.append(Path(env))
    candidates += [REPO / "data/wine-quality", REPO.parent / "shared/data/wine-quality"]
    for folder in candidates:
        if folder and (folder / "winequality-red.csv").is_file():
            return folder
    raise SystemExit(
        f"no winequality-red.csv in any of {[str(c) for c in candidates]}; "
        "run `make data` or pass --data-dir"
    )


def load_rows(data_dir: Path, wine: str, count: int) -> np.ndarray:
    """`count` real rows of the wine the model was trained on, repeated when the file is shorter."""
    table = np.loadtxt(data_dir / f"winequality-{wine}.csv", delimiter=";", skiprows=1)
    rows = table[:, : len(FEATURE_KEYS)]
    return rows[np.arange(count) % len(rows)]


def run_wrk(server: Server, scenario: Scenario, seconds: int, body_file: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "BENCH_BODY_FILE": str(body_file),
        "BENCH_CONTENT_TYPE": scenario.content_type,
    }
    command = [
        "wrk",
        "-t1",
        f"-c{scenario.connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "post.lua"),
        server.base + scenario.path,
    ]
    logged = server.log.stat().st_size if server.log.exists() else 0
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed ({done.returncode}): {done.stdout[-1000:]} {done.stderr[-1000:]}"
        )
    result = json.loads(line.removeprefix("BENCH_JSON "))
    rps = result["requests"] / (result["duration_us"] / 1e6)
    return {
        "requests": result["requests"],
        "requests_per_second": rps,
        "errors": sum(result["errors"].values()),
        "error_kinds": result["errors"],
        "latency_us": result["latency_us"],
        "worker_shares": worker_shares(server.log, logged),
    }


def worker_shares(log: Path, offset: int) -> list[float] | None:
    """Each gunicorn worker's share of the requests answered after byte `offset` of the server's
    log, largest first, from the service's JSON access lines (None for other servers): an
    uneven split of wrk's keep-alive connections shows here."""
    with log.open("rb") as lines:
        lines.seek(offset)
        pids = Counter(
            json.loads(line).get("pid")
            for line in lines
            if line.startswith(b"{") and b'"type":"access"' in line
        )
    total = sum(pids.values())
    return sorted((count / total for count in pids.values()), reverse=True) if total else None


def run_fixed_rate(
    server: Server, scenario: Scenario, rate: float, seconds: float
) -> dict[str, Any]:
    return loadgen.fixed_rate(
        "127.0.0.1",
        server.port,
        scenario.path,
        scenario.bodies,
        scenario.content_type,
        rate,
        seconds,
    )


def run_sequential(server: Server, scenario: Scenario, seconds: float) -> dict[str, Any]:
    return loadgen.sequential(
        "127.0.0.1", server.port, scenario.path, scenario.body, scenario.content_type, seconds
    )


def loadavg() -> float:
    return os.getloadavg()[0]


def time_calls(
    function: Callable[[], Any], budget: float, minimum: int, maximum: int
) -> list[float]:
    times: list[float] = []
    deadline = time.perf_counter() + budget
    while len(times) < maximum and (len(times) < minimum or time.perf_counter() < deadline):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def load_runtimes(models: dict[str, Path]) -> dict[tuple[str, str], Any]:
    """Each model in each runtime, loaded once (an error message when a runtime is unavailable)."""
    loaded: dict[tuple[str, str], Any] = {}
    for model, model_dir in models.items():
        for runtime in ("sklearn", "onnx"):
            try:
                loaded[(model, runtime)] = load_artifact(model_dir, runtime)
            except Exception as error:  # an artifact without ONNX: recorded, not fatal
                loaded[(model, runtime)] = str(error)
    return loaded


def _in_turn(predictor: Any, singles: list[np.ndarray]) -> Callable[[], Any]:
    turn = itertools.cycle(singles)
    return lambda: predictor.predict(next(turn))


@dataclasses.dataclass
class _Explaining:
    """An artifact's explainer timed like a predictor (explain.SumPredictor computes every
    contribution, then sums them)."""

    algorithm: str
    predictor: Any

    def predict(self, rows: np.ndarray) -> Any:
        return self.predictor.predict(rows)


def _explainers(loaded: dict[tuple[str, str], Any]) -> dict[tuple[str, str], Any]:
    from wine_quality.core.explain import SumPredictor

    return {
        (model, "explain"): _Explaining(m.algorithm, SumPredictor(m.explainer))
        for (model, runtime), m in loaded.items()
        if runtime == "onnx" and not isinstance(m, str) and m.explainer is not None
    }


def in_process(
    loaded: dict[tuple[str, str], Any], rows: np.ndarray, budget: float
) -> list[dict[str, Any]]:
    """Median wall time of LoadedModel.predict for one row and for all `rows`, per runtime;
    and of explaining them (`?explain=1`: base value and contributions), as runtime `explain`."""
    results = []
    loaded = {**loaded, **_explainers(loaded)}
    # different rows in turn, as a server gets them (one row again and again stays in the caches)
    singles = [rows[i : i + 1].copy() for i in range(min(scenarios.DISTINCT_ROWS, len(rows)))]
    for (model, runtime), predictor in loaded.items():
        if isinstance(predictor, str):
            results.append({"model": model, "runtime": runtime, "error": predictor})
            continue
        predictor.predict(singles[0])
        single = time_calls(_in_turn(predictor, singles), budget, 5, 5000)
        batch = time_calls(lambda m=predictor: m.predict(rows), budget, 3, 50)
        results.append(
            {
                "model": model,
                "runtime": runtime,
                "algorithm": predictor.algorithm,
                "single_row_us": statistics.median(single) * 1e6,
                "single_row_calls": len(single),
                "batch_rows": len(rows),
                "batch_seconds": statistics.median(batch),
                "batch_rows_per_second": len(rows) / statistics.median(batch),
                "batch_calls": len(batch),
            }
        )
    return results


def machine_facts() -> dict[str, Any]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = package_versions(PACKAGES)
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    cores = os.cpu_count()
    return {
        "cpu": cpu,
        "cores": cores,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else None,
        "summary": f"{cores} cores ({cpu}), Python {platform.python_version()}, "
        f"scikit-learn {versions['scikit-learn']}, onnxruntime {versions['onnxruntime']}, "
        f"gunicorn {versions['gunicorn']}, Flask {versions['flask']}",
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=REPO / "artifacts/model",
        help="the promoted artifact (default: artifacts/model)",
    )
    parser.add_argument(
        "--linear-model-dir",
        type=Path,
        default=None,
        help="an artifact of the linear baseline; default: trained into "
        "WORK_DIR/linear-model by benchmarks/linear_artifact.py",
    )
    parser.add_argument("--no-linear", action="store_true", help="skip the linear-baseline servers")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder with the UCI CSV files (default: $WINE_QUALITY_DATA_SOURCE, "
        "data/wine-quality, ../shared/data/wine-quality)",
    )
    parser.add_argument("--peer", choices=("mlflow", "none"), default="mlflow")
    parser.add_argument(
        "--peer-dir",
        type=Path,
        default=REPO / ".cache/bench/peer-mlflow",
        help="virtual environment of the peer server (created when missing)",
    )
    parser.add_argument(
        "--sklearn-runtime",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also serve with WINE_QUALITY_RUNTIME=sklearn (default: yes)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(scenarios.SCENARIO_KEYS),
        help=f"comma-separated subset of {', '.join(scenarios.SCENARIO_KEYS)}",
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument(
        "--rate",
        type=float,
        default=50.0,
        help="requests/s of the fixed-rate scenario (default 50)",
    )
    parser.add_argument(
        "--rate-duration", type=float, default=6.0, help="seconds per fixed-rate run (default 6)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds of every scenario (default 3)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="seconds of wrk warm-up per server")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--batch-rows", type=int, default=10_000, help="rows of the big batches")
    parser.add_argument(
        "--inprocess-budget",
        type=float,
        default=2.0,
        help="seconds per in-process timing (default 2)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=REPO / "build/bench",
        help="logs, request bodies, the linear artifact (default build/bench)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=HERE / "results",
        help="folder for latest.json and latest.md (default benchmarks/results)",
    )
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help=f"rewrite the results block of {', '.join(report.DOCS_WITH_RESULTS)}",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="measure nothing: write the Markdown (and the docs with --update-docs) from a "
        "results JSON of an earlier run",
    )
    args = parser.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(scenarios.SCENARIO_KEYS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}")
    return args


def _reusable(output: Path, promoted: dict) -> bool:
    """An earlier run's linear artifact: same packages and data as the promoted model's, and
    still accepted by today's loader (the metadata it requires grows with the project)."""
    try:
        meta = read_artifact(output).metadata
    except ArtifactError:
        return False
    same_data = meta.get("data", {}).get("sha256") == promoted.get("data", {}).get("sha256")
    return meta.get("versions") == promoted.get("versions") and same_data


def linear_artifact(args: argparse.Namespace, data_dir: Path, promoted: dict) -> Path:
    if args.linear_model_dir:
        return args.linear_model_dir
    output = args.work_dir / "linear-model"
    if _reusable(output, promoted):
        return output
    print(f"training the linear baseline artifact into {output}", file=sys.stderr)
    subprocess.run(
        [
            sys.executable,
            str(HERE / "linear_artifact.py"),
            "--data-dir",
            str(data_dir),
            "--output",
            str(output),
            "--wine",
            promoted.get("wine", "red"),
            "--seed",
            str(promoted.get("seed", 0)),
        ],
        check=True,
        timeout=600,
    )
    return output


def build_servers(
    args: argparse.Namespace, models: dict[str, Path], bodies: Bodies, peer_dir: Path | None
) -> list[Server]:
    servers = []
    for model, path in models.items():
        runtimes = ["onnx"] if has_onnx(path) else []
        if args.sklearn_runtime or not runtimes:
            runtimes.append("sklearn")
        servers += [service_server(model, path, runtime, args.work_dir) for runtime in runtimes]
    serving = serving_runtime(models["promoted"])
    # The promoted model again, scoring every row a second time as its own shadow: what a
    # challenger as costly as the champion (a retrained forest) adds to a single-row request.
    shadow = models["promoted"]
    servers.append(
        service_server("promoted", models["promoted"], serving, args.work_dir, shadow_dir=shadow)
    )
    servers += [seed_server(model, path, args.work_dir) for model, path in models.items()]
    servers += [floor_server(args.work_dir, name) for name in FLOOR_WORKERS]
    if peer_dir is not None:
        sample = bodies.rows[:5].tolist()
        servers += [
            mlflow_server(model, path, peer_dir, sample, args.work_dir)
            for model, path in models.items()
        ]
    wanted = args.scenarios.split(",")
    for server in servers:
        available = scenarios.scenarios_for(server.kind, bodies, args)
        if server.name.endswith("+shadow"):
            available = {k: v for k, v in available.items() if k == "single"}
        elif server.kind == "service" and server.name != f"service-promoted-{serving}":
            # the full set on the main configuration; the others get what the tables compare
            keep = (
                ("single", "rate", "batch_100", "batch_10000")
                if server.runtime == "onnx" or server.model == "promoted"
                else ("single",)
            )
            available = {k: v for k, v in available.items() if k in keep}
        server.scenarios = {k: v for k, v in available.items() if k in wanted}
    return [s for s in servers if s.scenarios]


def prepare(args: argparse.Namespace, servers: list[Server]) -> dict[tuple[str, str], Path]:
    """Write the request bodies, check one answer of every scenario, warm every server up."""
    bodies_dir = args.work_dir / "bodies"
    bodies_dir.mkdir(parents=True, exist_ok=True)
    body_files: dict[tuple[str, str], Path] = {}
    for server in servers:
        for key, scenario in server.scenarios.items():
            path = bodies_dir / f"{server.kind}-{key}.body"
            path.write_bytes(b"\n".join(scenario.bodies))
            body_files[(server.name, key)] = path
            verify(server, scenario)
        wrk_scenarios = [
            s for s in server.scenarios.values() if not s.fixed_rate and not s.sequential
        ]
        if args.warmup and wrk_scenarios:
            first = wrk_scenarios[0]
            run_wrk(server, first, args.warmup, body_files[(server.name, first.key)])
    return body_files


def run_once(
    args: argparse.Namespace, server: Server, scenario: Scenario, body_file: Path
) -> dict[str, Any]:
    if scenario.fixed_rate:
        result = run_fixed_rate(server, scenario, args.rate, args.rate_duration)
    elif scenario.sequential:
        result = run_sequential(server, scenario, args.duration)
    else:
        result = run_wrk(server, scenario, args.duration, body_file)
    result["loadavg"] = loadavg()
    shares = result.get("worker_shares")
    split = " / ".join(f"{share:.0%}" for share in shares) if shares else "-"
    print(
        f"  {server.name:26} {scenario.key:12} {result['requests_per_second']:9.1f} req/s "
        f"p99 {result['latency_us']['p99'] / 1000:8.2f} ms  errors {result['errors']}  "
        f"workers {split}",
        file=sys.stderr,
        flush=True,
    )
    return result


def measure(
    args: argparse.Namespace, servers: list[Server], loaded: dict, rows: np.ndarray
) -> tuple[list[dict], list[list[dict]], list[float]]:
    """Every round: the in-process timings, then each scenario on every server in turn, so the
    numbers compared with each other (same scenario, other servers) are taken minutes apart at most.
    """
    body_files = prepare(args, servers)
    runs: dict[tuple[str, str], list[dict]] = {}
    inproc_rounds: list[list[dict]] = []
    loads = [loadavg()]
    serving = serving_runtime(Path(servers[0].env["WINE_QUALITY_MODEL_DIR"]))
    for round_ in range(args.repeats):
        print(f"round {round_ + 1}/{args.repeats}", file=sys.stderr, flush=True)
        inproc_rounds.append(in_process(loaded, rows, args.inprocess_budget))
        for key in scenarios.SCENARIO_KEYS:
            for server in servers:
                if key in server.scenarios:
                    result = run_once(
                        args, server, server.scenarios[key], body_files.get((server.name, key))
                    )
                    loads.append(result["loadavg"])
                    runs.setdefault((server.name, key), []).append(result)
        print_floor_ratio(runs, serving)
    measurements = [
        {
            "server": server.name,
            "kind": server.kind,
            "model": server.model,
            "runtime": server.served_runtime or server.runtime,
            "scenario": key,
            "label": scenario.label,
            "path": scenario.path,
            "rows_per_request": scenario.rows,
            "connections": scenario.connections,
            "target_rate": args.rate if scenario.fixed_rate else None,
            "runs": runs[(server.name, key)],
            "summary": report.summarise(runs[(server.name, key)], scenario.rows),
        }
        for server in servers
        for key, scenario in server.scenarios.items()
    ]
    return measurements, inproc_rounds, loads


def print_floor_ratio(runs: dict[tuple[str, str], list[dict]], serving: str) -> None:
    """The service's single-row throughput as a share of the bare stack's, this round: under
    gunicorn's own workers (the faster) and under the service's worker."""
    ours = runs.get((f"service-promoted-{serving}", "single"))
    stock = [runs[(name, "single")][-1] for name in STOCK_FLOORS if (name, "single") in runs]
    own = runs.get((OWN_FLOOR, "single"))
    if not ours or not stock:
        return
    a = ours[-1]["requests_per_second"]
    b = max(run["requests_per_second"] for run in stock)
    line = f"  single-row vs the bare stack: {a:.0f} / {b:.0f} req/s = {a / b:.2f}"
    if own:
        c = own[-1]["requests_per_second"]
        line += f"; under the service's worker: {a:.0f} / {c:.0f} req/s = {a / c:.2f}"
    print(line, file=sys.stderr, flush=True)


def print_memory(results: list[dict]) -> None:
    for r in results:
        print(
            f"  memory: {r['body']:26} {r['bytes'] / 2**20:5.1f} MiB -> HTTP {r['status']}, "
            f"worker peak {r['peak_above_idle_kib'] / 1024:6.1f} MiB above idle "
            f"({r['ratio']:.2f} x the body)",
            file=sys.stderr,
            flush=True,
        )


def print_memory_bound(bound: dict) -> None:
    workers = integer("GUNICORN_WORKERS")
    worker = bound["peak_above_idle_kib"] / 1024
    print(
        f"  memory bound above idle: {worker:.0f} MiB per worker with {bound['requests']} "
        f"10,000-row batches at once (HTTP {bound['statuses']}; {LARGE_BODY_SLOTS} "
        f"large bodies parsed per worker at a time), about {workers * worker:.0f} MiB for "
        f"{workers} workers",
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:  # render again, measure nothing
        write_results(args, json.loads(args.from_json.read_text()))
        return 0
    started = time.monotonic()
    args.work_dir = args.work_dir.resolve()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    data_dir = find_data_dir(args.data_dir)
    promoted_meta = json.loads((args.model_dir / "metadata.json").read_text())
    rows = load_rows(data_dir, promoted_meta.get("wine", "red"), args.batch_rows)
    bodies = Bodies(rows)
    models = {"promoted": args.model_dir.resolve()}
    if not args.no_linear:
        models["linear"] = linear_artifact(args, data_dir, promoted_meta).resolve()
    facts = machine_facts()
    peer = None
    peer_dir = None
    if args.peer == "mlflow":
        peer_dir = peer_mlflow.ensure_venv(args.peer_dir, args.work_dir / "peer-install.log")
        peer = {
            "name": "mlflow",
            "version": peer_mlflow.version(peer_dir),
            "command": "mlflow models serve --env-manager local -w 2",
            "why": PEER_WHY,
        }

    loaded = load_runtimes(models)
    phase("starting the servers", started)
    servers = build_servers(args, models, bodies, peer_dir)
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        phase(f"{len(servers)} servers ready; measuring", started)
        measurements, inproc_rounds, loads = measure(args, servers, loaded, rows)
        service = next(s for s in servers if s.kind == "service")
        memory_bound = memory.measure(service.process.pid, service.port, service.log)
        print_memory(memory_bound)
        concurrent = memory.concurrent_peak_kib(
            service.process.pid, service.port, service.log, integer("GUNICORN_THREADS")
        )
        print_memory_bound(concurrent)
    finally:
        for server in servers:
            server.stop()

    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_seconds": None,
        "machine": {**facts, "loadavg_range": f"{min(loads):.2f}-{max(loads):.2f}"},
        "settings": {k: _shown(v) for k, v in vars(args).items()},
        "models": {
            name: {"dir": _shown(path), **_model_facts(path)} for name, path in models.items()
        },
        "peer": peer,
        "in_process": report.summarise_in_process(inproc_rounds),
        "in_process_rounds": inproc_rounds,
        "measurements": measurements,
        "memory": memory_bound,
        "memory_concurrent": concurrent,
    }
    results["serving_runtime"] = serving_runtime(models["promoted"])
    results["goals"] = report.compute_goals(measurements, inproc_rounds, results["serving_runtime"])
    results["references"] = report.compute_references(measurements, results["serving_runtime"])
    results["ratios"] = report.ratios(measurements)
    results["notes"] = report.notes(results)
    results["duration_seconds"] = round(time.monotonic() - started, 1)
    write_results(args, results)
    return 0


def write_results(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """latest.json and latest.md, the goals on stdout, the docs' results blocks when asked."""
    table = report.markdown(results)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.output / "latest.md").write_text("# Benchmark results\n\n" + table)
    print(table)
    for g in results["goals"]:
        verdict = {True: "PASS", False: "FAIL", None: "NOT MEASURED"}[g["passed"]]
        value = "-" if g["value"] is None else f"{g['value']:.3f}"
        print(
            f"{verdict:12} {g['goal']}: {value} (needs {g['comparison']} "
            f"{g['threshold']:g}); {g['detail']}"
        )
    for r in results["references"]:
        if r["value"] is not None:
            print(f"{'REFERENCE':12} {r['name']}: {r['value']:.3f}; {r['detail']}")
    if args.update_docs:
        rel = os.path.relpath(args.output / "latest.json", REPO)
        for name in report.update_docs(results, rel):
            print(f"updated the results block of {name}", file=sys.stderr)
    print(f"wrote {args.output / 'latest.md'} and latest.json", file=sys.stderr)


def _shown(value: Any) -> Any:
    """Paths relative to the repository when inside it, so results do not name the machine."""
    if not isinstance(value, Path):
        return value
    path = value.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def serving_runtime(model_dir: Path) -> str:
    """What the service serves the artifact with by default (WINE_QUALITY_RUNTIME=auto)."""
    return "onnx" if has_onnx(model_dir) else "sklearn"


def phase(message: str, started: float) -> None:
    print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)


def _model_facts(path: Path) -> dict[str, Any]:
    meta = read_metadata(path)
    facts = ModelFacts.from_metadata(meta)
    onnx = meta["runtimes"].get("onnx")
    return {
        "algorithm": facts.algorithm,
        "version": facts.version,
        "onnx_tolerance": onnx.get("tolerance") if onnx else None,
        "onnx_max_abs_error": onnx.get("max_abs_error") if onnx else None,
    }


if __name__ == "__main__":
    sys.exit(main())
