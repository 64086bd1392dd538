"""The real service under gunicorn on a free 127.0.0.1 port, for the tests that talk HTTP to it.

`GunicornServer.start` runs the service's own command and gunicorn config, waits until every
worker has booted and /readyz answers 200, and stops the server again if it never gets there.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from wine_quality.app.settings import with_malloc_tunable

GUNICORN = Path(sys.executable).with_name("gunicorn")
# The master loads and verifies the model before it forks the workers: up to ~25 s on a busy
# 2-core machine.
STARTUP_SECONDS = 180.0
STOP_SECONDS = 40.0


def module_server(name: str, **env: str) -> object:
    """A module-scoped `server` fixture: the service serving the small test model with `env`
    (no shutdown delay), stopped after the module's tests."""

    @pytest.fixture(scope="module")
    def server(small_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
        running = GunicornServer.start(
            small_model_dir, tmp_path_factory.mktemp(name), GUNICORN_SHUTDOWN_DELAY="0", **env
        )
        yield running
        running.stop()

    return server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout: float = STOP_SECONDS) -> int:
    """SIGTERM, up to `timeout` s to exit, then SIGKILL; returns the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


def _copy(pipe, path: Path) -> None:
    """Whatever the pipe delivers, in order, appended to `path` until the server closes it."""
    with pipe, path.open("ab", buffering=0) as out:
        while chunk := pipe.read1(65536):  # what is there now, not a full buffer
            out.write(chunk)


@dataclass
class GunicornServer:
    process: subprocess.Popen
    port: int
    stdout: Path  # the JSON access log
    stderr: Path  # gunicorn's and the service's log
    # /readyz answers (status -> count) received while waiting for readiness; the service
    # counts these requests in its metrics too.
    readiness_probes: Counter = field(default_factory=Counter)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls,
        model_dir: Path,
        folder: Path,
        timeout: float = STARTUP_SECONDS,
        ready: bool = True,
        stdout_pipe: bool = False,
        **env: str | None,
    ) -> GunicornServer:
        """The service serving `model_dir`, its logs and metrics in `folder`, ready (with
        `ready=False`: once every worker has booted, whatever /readyz answers).

        `env` overrides the environment (GUNICORN_WORKERS defaults to 2); None removes a variable.
        `stdout_pipe`: the server's standard output is a pipe, as under a container runtime, that
        a thread copies to the stdout file as it reads it (else the file itself).
        """
        port = free_port()
        environment = {
            **os.environ,
            "WINE_QUALITY_MODEL_DIR": str(model_dir),
            "PORT": str(port),
            "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
            "GUNICORN_WORKERS": "2",
            **env,
        }
        environment = {key: value for key, value in environment.items() if value is not None}
        environment = with_malloc_tunable(environment)  # as `wine-quality serve` and the image
        stdout, stderr = folder / "stdout.log", folder / "stderr.log"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            # The service's own command; --bind keeps it on 127.0.0.1 (the config binds 0.0.0.0).
            process = subprocess.Popen(
                [
                    str(GUNICORN),
                    "-c",
                    "python:wine_quality.app.gunicorn_conf",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "wine_quality.app:create_app()",
                ],
                env=environment,
                stdout=subprocess.PIPE if stdout_pipe else out,
                stderr=err,
                cwd=folder,
            )
        if stdout_pipe:
            threading.Thread(target=_copy, args=(process.stdout, stdout), daemon=True).start()
        server = cls(process, port, stdout, stderr)
        try:
            server.wait_ready(int(environment["GUNICORN_WORKERS"]), timeout, ready)
        except BaseException:  # pytest.fail included: never leave a server running
            server.stop()
            raise
        return server

    def wait_ready(self, workers: int, timeout: float, ready: bool = True) -> None:
        """Until every worker has logged ": booted" (model loaded) and /readyz answers 200, or
        only the former when `ready` is False."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{self.logs()}")
            booted = self.stderr.read_text().count(": booted") >= workers
            if booted and not ready:
                return
            if booted:
                try:
                    status = requests.get(f"{self.url}/readyz", timeout=10).status_code
                except requests.RequestException:  # accepted before a worker is up
                    status = None
                if status is not None:
                    self.readiness_probes[status] += 1
                if status == 200:
                    return
            time.sleep(0.3)
        pytest.fail(f"gunicorn not ready after {timeout} s:\n{self.logs()}")

    def stop(self, timeout: float = STOP_SECONDS) -> int:
        return stop_process(self.process, timeout)

    def access_log(self) -> list[dict]:
        lines = self.stdout.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def logs(self) -> str:
        return self.stderr.read_text(errors="replace")[-3000:]
