"""The benchmark's memory bound (benchmarks/memory.py) is read from fresh workers that have loaded
the model: one still loading it when its idle memory is read would count the model (ONNX Runtime
and its session) against the next body. The master never maps ONNX Runtime; a worker does once it
opens the model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from gunicorn_server import GunicornServer
from support import REPO


def _bench_memory():
    spec = importlib.util.spec_from_file_location("bench_memory", REPO / "benchmarks/memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _maps_onnxruntime(pid: int) -> bool:
    return "onnxruntime" in Path(f"/proc/{pid}/maps").read_text()


def test_fresh_workers_are_returned_once_each_has_loaded_the_model(
    small_model_server: GunicornServer,
) -> None:
    memory = _bench_memory()
    master = small_model_server.process.pid
    assert not _maps_onnxruntime(master)
    before = memory._workers(master)
    for _ in range(3):
        workers = memory._fresh_workers(master, small_model_server.port, small_model_server.stderr)
        assert len(workers) == len(before) and not set(workers) & set(before)
        assert all(_maps_onnxruntime(pid) for pid in workers), workers
        log = small_model_server.stderr.read_text()
        assert all(f"worker {pid}: booted" in log for pid in workers)
        before = workers
