"""The memory bound of a serving worker: its peak RSS above idle for the worst bodies up to the
body limit, read from /proc/<worker>/status (VmHWM after resetting it through clear_refs).

Each body is measured in fresh workers (the old ones are stopped with SIGTERM and gunicorn forks
new ones): memory a previous body left in the allocator would otherwise hide the next one's cost.
A fresh worker counts as started once it has logged that it loaded the model: one still loading
it when its idle memory is read would add the model (about 25 MiB: the ONNX Runtime session and
its code) to whichever body comes next.
The worker's bound is measured with every thread busy at once (`concurrent_peak_kib`).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

from wine_quality.app.settings import integer
from wine_quality.core.features import FEATURE_NAMES


def concurrent_peak_kib(master_pid: int, port: int, log: Path, threads: int) -> dict:
    """Every thread of every worker busy with a 10,000-row batch at once (each thread holds its
    received body; LARGE_BODY_SLOTS of them per worker are parsed and predicted at a time, the
    rest wait): the largest worker peak above idle. This, not one parse's cost times the threads,
    is a worker's bound for such batches."""
    content_type, body = worst_bodies(integer("WINE_QUALITY_MAX_BODY_BYTES"))["CSV, 10,000 rows"]
    workers = _fresh_workers(master_pid, port, log)
    for _ in range(2 * len(workers)):
        _post(port, content_type, body)
    idle = {}
    for pid in workers:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        idle[pid] = _kib(pid, "VmRSS")
    statuses: list[int] = []
    clients = [
        threading.Thread(target=lambda: statuses.append(_post(port, content_type, body)))
        for _ in range(threads * len(workers))
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    return {
        "requests": len(clients),
        "statuses": sorted(set(statuses)),
        "peak_above_idle_kib": max(_kib(pid, "VmHWM") - idle[pid] for pid in workers),
    }


def worst_bodies(limit: int) -> dict[str, tuple[str, bytes]]:
    """Bodies of at most `limit` bytes that cost the most objects per byte to parse."""
    header = ",".join(FEATURE_NAMES).encode() + b"\n"
    row = b"7.4,0.7,0,1.9,0.076,11,34,0.9978,3.51,0.56,9.4\n"
    return {
        "CSV, 10,000 rows": ("text/csv", header + row * 10_000),
        "CSV of short lines": ("text/csv", header + b"a\n" * ((limit - len(header)) // 2)),
        "CSV of blank lines": ("text/csv", header + b"\n" * (limit - len(header))),
        "CSV, one line of commas": ("text/csv", header + b"," * (limit - len(header))),
        "JSON of empty objects": ("application/json", b"[" + b"{}," * (limit // 3 - 1) + b"{}]"),
        "JSON of numbers": ("application/json", b"[" + b"0," * ((limit - 3) // 2) + b"0]"),
    }


def _post(port: int, content_type: str, body: bytes) -> int:
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        try:
            sock.sendall(head + body)
            while piece := sock.recv(65536):
                answer += piece
        except OSError:  # answered (413) and closed before the whole body was sent
            answer = answer or sock.recv(65536)
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def _kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def _workers(master_pid: int) -> list[int]:
    return [
        int(p) for p in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    ]


def _fresh_workers(master_pid: int, port: int, log: Path, timeout: float = 120.0) -> list[int]:
    """Replace every worker by a new one and wait until each has loaded the model (it logs
    "worker <pid>: booted", as servers.py waits for at start); their pids."""
    old = _workers(master_pid)
    offset = log.stat().st_size
    for pid in old:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = _workers(master_pid)
        if len(workers) == len(old) and not set(workers) & set(old):
            break
        time.sleep(0.2)
    else:
        raise TimeoutError("gunicorn did not replace its workers")
    while not all(f"worker {pid}: booted".encode() in _since(log, offset) for pid in workers):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not every new worker booted: {workers}")
        time.sleep(0.2)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as answer:
        answer.read()
    return workers


def _since(log: Path, offset: int) -> bytes:
    with log.open("rb") as text:
        text.seek(offset)
        return text.read()


def measure(master_pid: int, port: int, log: Path) -> list[dict]:
    """For each worst body: its size, the status and the largest worker peak above idle."""
    limit = integer("WINE_QUALITY_MAX_BODY_BYTES")
    results = []
    for name, (content_type, body) in worst_bodies(limit).items():
        workers = _fresh_workers(master_pid, port, log)
        for _ in range(2 * len(workers)):  # each worker has taken this code path once
            _post(port, content_type, body[:20_000])
        idle = {}
        for pid in workers:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
            idle[pid] = _kib(pid, "VmRSS")
        status = _post(port, content_type, body)
        peak = max(_kib(pid, "VmHWM") - idle[pid] for pid in workers)
        results.append(
            {
                "body": name,
                "bytes": len(body),
                "status": status,
                "peak_above_idle_kib": peak,
                "ratio": round(peak * 1024 / len(body), 2),
            }
        )
    return results
