"""The servers of the benchmark: started on free loopback ports, ready when every worker is."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import peer_mlflow
from scenarios import Scenario

from wine_quality.app.settings import gunicorn_worker_class, raw, with_malloc_tunable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV_BIN = Path(sys.executable).parent


WORKERS = 2

READY_TIMEOUT = 120.0

STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    content_type: str = "application/json",
    timeout: float = 30.0,
) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": content_type} if body else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@dataclass
class Server:
    name: str  # e.g. "service-promoted-onnx"
    kind: str  # service | seed | mlflow
    model: str  # promoted | linear
    runtime: str  # onnx | sklearn | the peer's / seed's own
    command: list[str]
    env: dict[str, str]
    port: int
    ready: Callable[[Server], bool]
    log: Path
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    served_runtime: str | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            # Own session: stop() signals the whole group (gunicorn's or uvicorn's workers too).
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n"
                    f"{self.log.read_text(errors='replace')[-3000:]}"
                )
            with contextlib.suppress(OSError):
                if self.ready(self):
                    return
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT)


def _all_workers_said(server: Server, line: str) -> bool:
    """Every worker has logged `line`: one ready worker alone would halve the capacity measured."""
    return server.log.read_text(errors="replace").count(line) >= WORKERS


def _service_ready(server: Server) -> bool:
    status, body = http("GET", f"{server.base}/readyz", timeout=2)
    if status == 503:  # a worker answers but could not load the model: waiting will not help
        raise RuntimeError(f"{server.name}: /readyz 503: {body[:500]!r}")
    if status != 200:
        return False
    server.served_runtime = json.loads(body).get("runtime")
    # wine_quality.app.gunicorn_conf logs this from post_worker_init, after the model is loaded
    return _all_workers_said(server, ": booted")


def _seed_ready(server: Server) -> bool:
    scenario = server.scenarios["single"]
    if http("POST", server.base + scenario.path, scenario.body, timeout=5)[0] != 200:
        return False
    return _all_workers_said(server, "Booting worker")


def _mlflow_ready(server: Server) -> bool:
    if http("GET", f"{server.base}/ping", timeout=2)[0] != 200:
        return False
    return _all_workers_said(server, "Application startup complete")


def service_server(
    model: str, model_dir: Path, runtime: str, work: Path, shadow_dir: Path | None = None
) -> Server:
    """The service as the image runs it; with `shadow_dir`, a second model scores every row too."""
    port = free_port()
    name = f"service-{model}-{runtime}" + ("+shadow" if shadow_dir else "")
    env = {
        **os.environ,
        "WINE_QUALITY_MODEL_DIR": str(model_dir),
        "WINE_QUALITY_RUNTIME": runtime,
        "PORT": str(port),
        "GUNICORN_WORKERS": str(WORKERS),
        "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics" / name),
        # Only shortens the teardown between runs; nothing on the request path.
        "GUNICORN_SHUTDOWN_DELAY": "0",
    }
    if shadow_dir is not None:
        env["WINE_QUALITY_SHADOW_MODEL_DIR"] = str(shadow_dir)
    env = with_malloc_tunable(env)  # the image's ENV
    command = [
        str(VENV_BIN / "gunicorn"),
        "-c",
        "python:wine_quality.app.gunicorn_conf",
        "--bind",
        f"127.0.0.1:{port}",
        "wine_quality.app:create_app()",
    ]
    return Server(
        name,
        "service",
        model,
        runtime,
        command,
        env,
        port,
        _service_ready,
        work / "logs" / f"{name}.log",
    )


def seed_server(model: str, model_dir: Path, work: Path) -> Server:
    port = free_port()
    env = {**os.environ, "SEED_MODEL_PATH": str((model_dir / "model.joblib").resolve())}
    command = [
        str(VENV_BIN / "gunicorn"),
        "--workers",
        str(WORKERS),
        "--bind",
        f"127.0.0.1:{port}",
        "--chdir",
        str(HERE / "seed_baseline"),
        "--no-control-socket",  # the service disables it too; it would write under $HOME
        "app:app",
    ]
    return Server(
        f"seed-{model}",
        "seed",
        model,
        "sklearn (pickle loaded per request)",
        command,
        env,
        port,
        _seed_ready,
        work / "logs" / f"seed-{model}.log",
    )


def _floor_ready(server: Server) -> bool:
    scenario = server.scenarios["single"]
    if http("POST", server.base + scenario.path, scenario.body, timeout=5)[0] != 200:
        return False
    return _all_workers_said(server, "Booting worker")


# The bare stack, Flask's constant answer (floor_app.py) with the service's worker count and
# threads, under gunicorn's own workers and, for reference, under the service's worker class.
STOCK_FLOORS = ("floor-sync", "floor-gthread")
OWN_FLOOR = "floor-service-worker"
FLOOR_WORKERS = {
    "floor-sync": "sync",
    "floor-gthread": "gthread",
    OWN_FLOOR: gunicorn_worker_class("gthread"),
}


def floor_server(work: Path, name: str) -> Server:
    """Flask returning a constant JSON (floor_app.py) under gunicorn with the service's worker
    count and threads (their defaults in wine_quality.app.settings) and the worker class that
    FLOOR_WORKERS names for `name`. A sync worker gets one thread, as it has: gunicorn runs
    `sync` with more threads as `gthread`."""
    port = free_port()
    worker_class = FLOOR_WORKERS[name]
    command = [
        str(VENV_BIN / "gunicorn"),
        "--workers",
        str(WORKERS),
        "--worker-class",
        worker_class,
        "--threads",
        "1" if worker_class == "sync" else raw("GUNICORN_THREADS"),
        "--bind",
        f"127.0.0.1:{port}",
        "--chdir",
        str(HERE),
        "--no-control-socket",
        "floor_app:app",
    ]
    return Server(
        name,
        "floor",
        "none",
        "constant answer",
        command,
        dict(os.environ),
        port,
        _floor_ready,
        work / "logs" / f"{name}.log",
    )


def mlflow_server(model: str, model_dir: Path, venv_dir: Path, rows: list, work: Path) -> Server:
    port = free_port()
    exported = peer_mlflow.export_model(
        venv_dir, model_dir / "model.joblib", work / "mlflow-models" / model, rows
    )
    return Server(
        f"mlflow-{model}",
        "mlflow",
        model,
        "sklearn (mlflow pyfunc)",
        peer_mlflow.serve_command(venv_dir, exported, port, WORKERS),
        peer_mlflow.serve_env(venv_dir, dict(os.environ)),
        port,
        _mlflow_ready,
        work / "logs" / f"mlflow-{model}.log",
    )


def has_onnx(model_dir: Path) -> bool:
    runtimes = json.loads((model_dir / "metadata.json").read_text()).get("runtimes") or {}
    return bool(runtimes.get("onnx"))


def verify(server: Server, scenario: Scenario) -> None:
    """One request first: a benchmark of error responses would be worthless."""
    status, body = http(
        "POST", server.base + scenario.path, scenario.body, scenario.content_type, timeout=120
    )
    if status != 200:
        raise RuntimeError(f"{server.name} {scenario.key}: HTTP {status}: {body[:500]!r}")
    count = scenario.expected_count(body)
    if count != scenario.rows:
        raise RuntimeError(
            f"{server.name} {scenario.key}: {count} predictions for {scenario.rows} rows"
        )
