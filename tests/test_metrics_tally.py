"""The request path's counts go through a tally (app/metrics.py): written later, they leave the
metrics exactly as one call per increment or value would have; nothing is lost when threads add
counts while a flush runs; the process's writer thread writes them within a second, and a
process writes them when it exits."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from wine_quality.app import metrics
from wine_quality.app.metrics import Tally

BUCKETS = (3.0, 4.0, 5.5, 6.0, 9.0)


def samples(registry: CollectorRegistry) -> dict[tuple, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for m in registry.collect()
        for s in m.samples
        if not s.name.endswith("_created")
    }


def twin_metrics() -> tuple[CollectorRegistry, Counter, Counter, Histogram]:
    registry = CollectorRegistry()
    return (
        registry,
        Counter("rows", "rows", registry=registry),
        Counter("out", "out", ["feature"], registry=registry),
        Histogram("h", "h", buckets=BUCKETS, registry=registry),
    )


VALUES = [
    2.0,
    3.0,
    np.array([5.5]),
    np.array([3.2, 5.5, 5.50001, 6.0, 9.5, 11.0, 4.0]),
    np.array([], dtype=float),
    7,
]


def tallied_and_direct(values_in_turn: list) -> tuple[dict, dict]:
    """The samples after the same increments and observations, through a tally and directly."""
    direct, rows, out, histogram = twin_metrics()
    tallied, t_rows, t_out, t_histogram = twin_metrics()
    tally = Tally()
    for number, values in enumerate(values_in_turn):
        for value in np.ravel(values):
            histogram.observe(float(value))
        rows.inc(number)
        out.labels(feature=f"f{number % 3}").inc(2)
        if isinstance(values, np.ndarray):
            tally.observe_many(t_histogram, values)
        else:
            tally.observe(t_histogram, values)
        tally.inc(t_rows, number)
        tally.inc(t_out.labels(feature=f"f{number % 3}"), 2)
    tally.flush()
    return samples(tallied), samples(direct)


def test_a_tally_leaves_the_metrics_as_one_call_per_value_would() -> None:
    got, expected = tallied_and_direct(VALUES)
    assert got.pop(("h_sum", ())) == pytest.approx(expected.pop(("h_sum", ())))
    assert got == expected
    assert got[("h_count", ())] == 11 and got[("rows_total", ())] == 15


def test_a_nan_is_in_no_bucket_and_makes_the_sum_nan_as_with_observe() -> None:
    got, expected = tallied_and_direct([1.0, math.nan, np.array([math.nan, 6.5]), np.array([7.0])])
    assert math.isnan(got.pop(("h_sum", ()))) and math.isnan(expected.pop(("h_sum", ())))
    assert got == expected
    assert got[("h_count", ())] == 3


def test_nothing_is_written_before_a_flush_and_a_flush_writes_once() -> None:
    registry, rows, _, histogram = twin_metrics()
    tally = Tally()
    tally.inc(rows, 5)
    tally.observe(histogram, 4.5)
    assert samples(registry)[("rows_total", ())] == 0
    tally.flush()
    tally.flush()
    assert samples(registry)[("rows_total", ())] == 5
    assert samples(registry)[("h_count", ())] == 1


def test_counts_added_while_flushes_run_all_arrive() -> None:
    registry, rows, _, histogram = twin_metrics()
    tally = Tally()
    stop = threading.Event()

    def flush_all_the_time() -> None:
        while not stop.is_set():
            tally.flush()

    def add() -> None:
        for _ in range(2000):
            tally.inc(rows)
            tally.observe(histogram, 5.0)

    flusher = threading.Thread(target=flush_all_the_time)
    flusher.start()
    adders = [threading.Thread(target=add) for _ in range(8)]
    for thread in adders:
        thread.start()
    for thread in adders:
        thread.join()
    stop.set()
    flusher.join()
    tally.flush()
    assert samples(registry)[("rows_total", ())] == 16000
    assert samples(registry)[("h_bucket", (("le", "5.5"),))] == 16000


def test_the_writer_thread_writes_the_counts_within_a_second() -> None:
    registry, rows, _, _ = twin_metrics()
    tally = Tally()
    tally.inc(rows, 3)
    start = time.monotonic()
    while samples(registry)[("rows_total", ())] != 3 and time.monotonic() - start < 5:
        time.sleep(0.02)
    waited = time.monotonic() - start
    assert samples(registry)[("rows_total", ())] == 3
    assert waited <= metrics.FLUSH_SECONDS + 0.5


def rows_written_by(script: str, directory: Path) -> float:
    """rows_total as the multiprocess files hold it after `script` ran in a process of its own."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return samples(registry)[("rows_total", ())]


def test_a_process_writes_its_counts_when_it_exits(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        from prometheus_client import CollectorRegistry, Counter
        from wine_quality.app.metrics import Tally
        rows = Counter("rows", "rows", registry=CollectorRegistry())
        tally = Tally()
        tally.inc(rows, 42)
        """
    )
    assert rows_written_by(script, tmp_path) == 42


@pytest.mark.parametrize("values", [np.array([5.0]), np.array([2.0, 7.5, 7.5, 12.0])])
def test_bucket_counts_put_each_value_where_observe_does(values: np.ndarray) -> None:
    registry, _, _, histogram = twin_metrics()
    for value in values:
        histogram.observe(float(value))
    counts, total = metrics.bucket_counts(histogram._upper_bounds, values)
    buckets = samples(registry)
    cumulative = np.cumsum(counts).tolist()
    bounds = [*(str(b) for b in BUCKETS), "+Inf"]
    assert [buckets[("h_bucket", (("le", le),))] for le in bounds] == cumulative
    assert total == pytest.approx(float(values.sum()))


def test_a_forked_process_starts_its_own_writer(tmp_path: Path) -> None:
    """A worker forked from a process whose writer runs has no writer thread (fork copies only
    the calling thread); its counts must still reach the files without an exit to flush them."""
    script = textwrap.dedent(
        """
        import os, time
        from prometheus_client import CollectorRegistry, Counter
        from wine_quality.app.metrics import Tally
        registry = CollectorRegistry()
        tally = Tally()
        tally.inc(Counter("before", "before", registry=registry))  # this process's writer runs
        pid = os.fork()
        if pid == 0:
            tally.inc(Counter("rows", "rows", registry=registry), 7)
            time.sleep(2.5)
            os._exit(0)  # no exit handlers: only the child's writer thread can have written
        os.waitpid(pid, 0)
        """
    )
    assert rows_written_by(script, tmp_path) == 7
