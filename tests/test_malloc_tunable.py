"""glibc's mmap threshold is fixed for gunicorn's master and so for every worker: the tunable is
added to GLIBC_TUNABLES without dropping the operator's own, never overriding their value, and
`wine-quality serve` starts gunicorn with it (the image sets it with ENV; a worker's memory for
the worst bodies is measured by tests/integration/test_hostile_clients.py and `make bench`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gunicorn_server import free_port
from wine_quality.app.settings import MALLOC_MMAP_THRESHOLD, MALLOC_TUNABLE, with_malloc_tunable

OURS = f"{MALLOC_TUNABLE}={MALLOC_MMAP_THRESHOLD}"


def test_the_tunable_is_added() -> None:
    assert with_malloc_tunable({"PATH": "/bin"}) == {"PATH": "/bin", "GLIBC_TUNABLES": OURS}


def test_other_tunables_are_kept() -> None:
    environ = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert with_malloc_tunable(environ)["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{OURS}"


def test_an_operators_own_threshold_is_left_alone() -> None:
    environ = {"GLIBC_TUNABLES": f"{MALLOC_TUNABLE}=65536"}
    assert with_malloc_tunable(environ) == environ


def _environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_wine_quality_serve_starts_gunicorn_with_the_tunable(tmp_path: Path) -> None:
    environ = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"} | {
        "PORT": str(free_port()),
        "BIND_ADDRESS": "127.0.0.1",
        "WINE_QUALITY_MODEL_DIR": str(tmp_path / "no-model"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "wine_quality.cli", "serve"],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while b"gunicorn" not in Path(f"/proc/{process.pid}/cmdline").read_bytes():
            assert process.poll() is None and time.monotonic() < deadline, "gunicorn never ran"
            time.sleep(0.05)
        assert _environ_of(process.pid)["GLIBC_TUNABLES"] == OURS
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("gunicorn did not stop on SIGTERM")
