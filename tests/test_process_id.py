"""The process id read once per process (app/process.py): right again after a fork, and what
the metrics client names each process's files after under gunicorn (gunicorn_conf calls
use_for_metrics). The metric checks run in a fresh interpreter: the client's value class is
process-wide state that this test process's own apps must not inherit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from wine_quality.app.process import process_id


def test_the_id_is_this_process_s_and_the_child_s_after_a_fork() -> None:
    assert process_id() == os.getpid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        os.write(write, f"{process_id()} {os.getpid()}".encode())
        os._exit(0)
    os.close(write)
    seen, actual = map(int, os.read(read, 100).split())
    os.close(read)
    os.waitpid(child, 0)
    assert seen == actual == child != os.getpid()
    assert process_id() == os.getpid()


METRICS_ACROSS_A_FORK = textwrap.dedent(
    """
    import json, os, sys
    from wine_quality.app import process
    process.use_for_metrics()
    from prometheus_client import CollectorRegistry, Counter, multiprocess

    counter = Counter("served", "Requests served.")
    counter.inc(1)
    child = os.fork()
    if child == 0:
        counter.inc(2)
        os._exit(0)
    os.waitpid(child, 0)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    json.dump(
        {
            "parent": os.getpid(),
            "child": child,
            "files": sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])),
            "total": registry.get_sample_value("served_total"),
        },
        sys.stdout,
    )
    """
)


def run_python(code: str, metrics_dir: Path) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_each_process_writes_its_own_metric_file_and_the_scrape_sums_them(tmp_path: Path):
    result = json.loads(run_python(METRICS_ACROSS_A_FORK, tmp_path))
    assert result["files"] == sorted(
        [f"counter_{result['parent']}.db", f"counter_{result['child']}.db"]
    )
    assert result["total"] == 3.0


def test_metric_files_are_named_by_process_id_not_by_asking_the_kernel(tmp_path: Path):
    """The values ask process_id(): with its answer replaced, the file name follows it."""
    code = textwrap.dedent(
        """
        import os
        from wine_quality.app import process
        process.use_for_metrics()
        process._pid = 424242
        from prometheus_client import Counter
        Counter("served", "Requests served.").inc()
        print(sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])))
        """
    )
    assert run_python(code, tmp_path).strip() == "['counter_424242.db']"
