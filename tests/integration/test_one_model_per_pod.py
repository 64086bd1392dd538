"""One model version per pod: the real gunicorn server, its model directory changed on disk after
start, one worker SIGKILLed. The replacement worker serves the model the master verified at
start, so every /readyz answer agrees (20 of 20) and names the same version.

Two changes on disk: the files damaged (a worker that reloaded them would refuse them and answer
503), and the directory switched to another valid artifact (a worker that reloaded would serve
another version). Both runtimes: the master pins the ONNX graph's bytes, or the pickle's for the
explicit sklearn fallback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from gunicorn_server import GunicornServer

pytestmark = pytest.mark.slow

ANSWERS = 20


def worker_pids(server: GunicornServer) -> set[int]:
    master = server.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


def replace_a_worker(server: GunicornServer) -> int:
    """SIGKILL one worker; the pid of the one gunicorn starts instead, once it has booted."""
    before = worker_pids(server)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = worker_pids(server) - before
        if new and f"worker {next(iter(new))}: booted" in server.stderr.read_text():
            return next(iter(new))
        time.sleep(0.1)
    pytest.fail(f"no replacement worker booted:\n{server.logs()}")


def readyz(server: GunicornServer) -> tuple[int, str]:
    # A new connection each time, so the workers take turns accepting.
    answer = requests.get(f"{server.url}/readyz", timeout=10, headers={"Connection": "close"})
    return answer.status_code, answer.json().get("model_version", answer.text)


def damage_files(directory: Path) -> None:
    (directory / "model.onnx").write_bytes(b"not a model any more")
    (directory / "model.joblib").write_bytes(b"not a model any more")
    (directory / "metadata.json").write_text('{"truncated": ')


def switch_to_another_artifact(directory: Path) -> None:
    """Another complete, valid artifact under the same path: a retrained model in effect."""
    other = directory.with_name("other")
    shutil.copytree(directory, other)
    path = other / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["version"] = metadata["version"] + ".other"
    path.write_text(json.dumps(metadata))
    shutil.rmtree(directory)
    other.rename(directory)


@pytest.mark.parametrize("runtime", ["onnx", "sklearn"])
@pytest.mark.parametrize("change", [damage_files, switch_to_another_artifact])
def test_every_worker_serves_the_model_verified_at_start(
    change: Callable[[Path], None], runtime: str, small_model_dir: Path, tmp_path: Path
):
    model = tmp_path / "model"
    shutil.copytree(small_model_dir, model)
    logs = tmp_path / "server"
    logs.mkdir()
    server = GunicornServer.start(model, logs, GUNICORN_WORKERS="2", WINE_QUALITY_RUNTIME=runtime)
    try:
        status, started_with = readyz(server)
        assert status == 200
        change(model)
        replacement = replace_a_worker(server)

        seen_pids: set[int] = set()
        with ThreadPoolExecutor(max_workers=ANSWERS) as pool:
            for _ in range(10):  # until the replacement has answered some of them
                first_line = len(server.access_log())
                answers = list(pool.map(lambda _: readyz(server), range(ANSWERS)))
                assert answers == [(200, started_with)] * ANSWERS
                time.sleep(0.2)  # the access log is written after the response
                seen_pids |= {line["pid"] for line in server.access_log()[first_line:]}
                if replacement in seen_pids:
                    break
        assert replacement in seen_pids, "the replacement worker never answered"
        assert len(seen_pids) == 2
        assert server.process.poll() is None
    finally:
        server.stop()
