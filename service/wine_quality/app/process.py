"""This process's id, read from the kernel once per process instead of at every use.

os.getpid() is a system call (glibc no longer caches it), and a request used it nine times:
prometheus_client asks before each of its eight metric writes (to notice a fork, after which a
process writes its own files) and the access log names the worker. The id changes only in a
fork, so the child reads it again then (os.register_at_fork).
"""

from __future__ import annotations

import os

_pid = os.getpid()


def _read_again() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_read_again)


def process_id() -> int:
    """os.getpid(), without the system call."""
    return _pid


def use_for_metrics() -> None:
    """Make prometheus_client's multiprocess values identify their process by process_id().

    Call it after PROMETHEUS_MULTIPROC_DIR is set and before any metric is created: a value made
    by the client's own class and one made by this one would open the same file through two
    maps, each unaware of the other's entries. The class keeps the client's behaviour (files
    named after the process, reset after a fork); only the question it asks is cheaper.
    """
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue(process_id)
