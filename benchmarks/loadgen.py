"""Two small HTTP load generators of the benchmark (wrk does the saturation runs).

`fixed_rate`: open loop, requests leave at a fixed rate whatever the server does.

wrk is closed-loop (a connection sends its next request only after the previous answer), so it
measures saturation but not latency at a given arrival rate: a slow answer delays the requests
behind it and they are never counted as late ("coordinated omission"). wrk2 fixes that but is not
packaged for Debian, and locust's constant pacing is closed-loop per user too. This client
schedules request i at start + i / rate and measures each latency from that *intended* time, so
queueing inside the server (or a client thread that was still busy) shows up in the percentiles.

Each thread keeps one HTTP/1.1 keep-alive connection (http.client, standard library); a few
threads cover rate x latency. At the moderate rates it is meant for (tens to a few hundred
requests per second) it costs a few percent of one core.

`sequential`: one connection sending the same (batch) request again as soon as the answer is read,
so rows per second is what one client gets end to end; the client is idle while the server works
and never competes with it for a core. wrk cannot do this for big batches: it counts only requests
that finish inside its duration.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Schedule:
    rate: float
    duration: float
    start: float
    next_index: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> tuple[int, float] | None:
        """The next request's number and intended send time, or None when the run is over."""
        with self.lock:
            index = self.next_index
            intended = self.start + index / self.rate
            if intended >= self.start + self.duration:
                return None
            self.next_index += 1
            return index, intended


def fixed_rate(
    host: str,
    port: int,
    path: str,
    bodies: tuple[bytes, ...],
    content_type: str,
    rate: float,
    duration: float,
    threads: int = 16,
    timeout: float = 10.0,
) -> dict:
    """Send `rate` POST requests per second for `duration` seconds, the bodies in turn;
    latencies in microseconds."""
    schedule = _Schedule(rate=rate, duration=duration, start=time.perf_counter() + 0.05)
    latencies: list[float] = []
    errors = {"status": 0, "connection": 0}
    results_lock = threading.Lock()
    headers = {"Content-Type": content_type, "Connection": "keep-alive"}

    def worker() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            while (taken := schedule.take()) is not None:
                index, intended = taken
                body = bodies[index % len(bodies)]
                delay = intended - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                try:
                    connection.request("POST", path, body=body, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    ok = 200 <= response.status < 300
                except (OSError, http.client.HTTPException):
                    connection.close()
                    connection = http.client.HTTPConnection(host, port, timeout=timeout)
                    with results_lock:
                        errors["connection"] += 1
                    continue
                finished = time.perf_counter()
                with results_lock:
                    latencies.append((finished - intended) * 1e6)
                    if not ok:
                        errors["status"] += 1
        finally:
            connection.close()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    deadline = time.perf_counter() + duration + timeout + 5
    for thread in pool:
        thread.join(max(0.0, deadline - time.perf_counter()))
    elapsed = time.perf_counter() - schedule.start
    return {"target_rate": rate, **_summary(latencies, elapsed, errors)}


def sequential(
    host: str,
    port: int,
    path: str,
    body: bytes,
    content_type: str,
    duration: float,
    minimum: int = 3,
    timeout: float = 60.0,
) -> dict:
    """Send the request back to back on one connection for `duration` seconds (and at least
    `minimum` times, within 10 x `duration` at most); latencies in microseconds."""
    headers = {"Content-Type": content_type, "Connection": "keep-alive"}
    latencies: list[float] = []
    errors = {"status": 0, "connection": 0}
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    start = time.perf_counter()
    try:
        while True:
            elapsed = time.perf_counter() - start
            if (elapsed >= duration and len(latencies) >= minimum) or elapsed >= 10 * duration:
                break
            sent = time.perf_counter()
            try:
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                errors["connection"] += 1
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
                continue
            latencies.append((time.perf_counter() - sent) * 1e6)
            if not 200 <= response.status < 300:
                errors["status"] += 1
    finally:
        connection.close()
    return _summary(latencies, time.perf_counter() - start, errors)


def _summary(latencies: list[float], elapsed: float, errors: dict[str, int]) -> dict:
    values = np.asarray(latencies) if latencies else np.asarray([np.nan])
    return {
        "requests": len(latencies),
        "requests_per_second": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "latency_us": {
            "p50": float(np.percentile(values, 50)),
            "p90": float(np.percentile(values, 90)),
            "p99": float(np.percentile(values, 99)),
            "max": float(np.max(values)),
        },
    }
