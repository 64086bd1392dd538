"""Connections a client opens at once are shared by the pod's workers, against the real gunicorn
server with 2 workers: a connection pool or a load balancer opens its keep-alive connections in a
burst, before it sends anything on them, and one worker taking them all would serve them at half
the pod's speed while the other idles (wine_quality.app.worker, "Accepting")."""

from __future__ import annotations

import select
import socket
import time
from collections import Counter

import pytest

from gunicorn_server import GunicornServer

pytestmark = pytest.mark.slow

CONNECTIONS = 8
BURSTS = 20


def open_at_once(server: GunicornServer) -> list[socket.socket]:
    """Start every connection before any is established, as wrk and connection pools do."""
    socks = []
    for _ in range(CONNECTIONS):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", server.port))
        socks.append(sock)
    pending = list(socks)
    deadline = time.monotonic() + 10
    while pending and time.monotonic() < deadline:
        _, writable, _ = select.select([], pending, [], 1)
        pending = [sock for sock in pending if sock not in writable]
    assert not pending
    return socks


def request_ids_by_worker(server: GunicornServer, prefix: str) -> Counter:
    lines = [line for line in server.access_log() if line.get("type") == "access"]
    return Counter(line["pid"] for line in lines if line["request_id"].startswith(prefix))


def test_connections_opened_at_once_are_shared_by_the_workers(
    small_model_server: GunicornServer,
) -> None:
    splits = []
    for burst in range(BURSTS):
        socks = open_at_once(small_model_server)
        try:
            for index, sock in enumerate(socks):
                sock.setblocking(True)
                sock.settimeout(10)
                request_id = f"X-Request-ID: b{burst}.{index}"
                sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: x\r\n{request_id}\r\n\r\n".encode())
            for sock in socks:
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        finally:
            for sock in socks:
                sock.close()
        time.sleep(0.3)  # the access lines are written
        splits.append(sorted(request_ids_by_worker(small_model_server, f"b{burst}.").values()))
    print(f"{BURSTS} bursts of {CONNECTIONS} connections, per worker: {splits}")
    assert all(sum(split) == CONNECTIONS for split in splits), splits
    fewer = [split[0] if len(split) == 2 else 0 for split in splits]
    # Measured: 3 or 4 of 8 for the worker with fewer, 3.7 on average; when connections that had
    # sent nothing yet did not count, 1 to 4, 2.8 on average, and at times 0 (half the speed).
    assert min(fewer) >= 2, splits
    assert sum(fewer) / BURSTS >= 3.3, splits
