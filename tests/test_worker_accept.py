"""The service's gunicorn worker leaves a new connection to an idle worker first: a worker holding
connections waits before it accepts, longer the more it holds (not counting those that have sent
nothing yet or only part of a request), never more than 1.6 ms. The real
listening socket and gthread's own accept; only the worker's other state is left out."""

from __future__ import annotations

import socket
import time
from collections import deque
from types import SimpleNamespace

import pytest

from wine_quality.app import worker
from wine_quality.app.worker import ServiceWorker


class Accepting(ServiceWorker):
    """A ServiceWorker without gunicorn's arbiter: just what accept() uses."""

    def __init__(
        self, connections: int, silent: int = 0, arriving: int = 0, fresh: int = 0
    ) -> None:
        self.nr_conns = connections
        self._read_timeout = 10
        # connections that have sent nothing yet, accepted a second ago, then `fresh` just now
        # (in the order gthread keeps them: their deadlines rising)
        now = time.monotonic()
        self.pending_conns = deque(
            [SimpleNamespace(timeout=now + self._read_timeout - 1)] * silent
            + [SimpleNamespace(timeout=now + self._read_timeout)] * fresh
        )
        self._arriving = deque(range(arriving))  # requests the poller is still collecting
        self.cfg = None
        self.enqueued: list[object] = []

    def enqueue_req(self, conn: object) -> None:
        self.enqueued.append(conn)


@pytest.fixture
def listener():
    with socket.create_server(("127.0.0.1", 0)) as sock:
        sock.setblocking(False)
        yield sock


@pytest.mark.parametrize(("held", "wait"), [(0, 0.0), (1, 0.0002), (3, 0.0006), (20, 0.0016)])
def test_a_worker_waits_in_proportion_to_the_connections_it_holds(
    listener, monkeypatch, held: int, wait: float
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(worker.time, "sleep", waits.append)
    accepting = Accepting(held)
    with socket.create_connection(listener.getsockname()):
        accepting.accept(listener)
    assert sum(waits) == pytest.approx(wait)
    assert len(accepting.enqueued) == 1 and accepting.nr_conns == held + 1
    accepting.enqueued[0].sock.close()


def test_a_connection_another_worker_took_meanwhile_is_no_error(listener, monkeypatch) -> None:
    monkeypatch.setattr(worker.time, "sleep", lambda _: None)
    accepting = Accepting(4)
    accepting.accept(listener)  # nothing pending any more: EAGAIN, as gthread handles it
    assert accepting.enqueued == [] and accepting.nr_conns == 4


@pytest.mark.parametrize("kind", ["silent", "arriving"])
def test_connections_that_hold_no_thread_do_not_count(listener, monkeypatch, kind: str) -> None:
    waits: list[float] = []
    monkeypatch.setattr(worker.time, "sleep", waits.append)
    accepting = Accepting(connections=203, **{kind: 200})  # a flood of them, 3 others
    with socket.create_connection(listener.getsockname()):
        accepting.accept(listener)
    assert sum(waits) == pytest.approx(0.0006)
    accepting.enqueued[0].sock.close()


def test_connections_just_accepted_count_before_they_send(listener, monkeypatch) -> None:
    """A client opening its connections at once: none has sent anything when the next is
    accepted, and without counting them one worker would take them all."""
    waits: list[float] = []
    monkeypatch.setattr(worker.time, "sleep", waits.append)
    accepting = Accepting(connections=4, silent=1, fresh=3)
    with socket.create_connection(listener.getsockname()):
        accepting.accept(listener)
    assert sum(waits) == pytest.approx(3 * worker.ACCEPT_BACKOFF_SECONDS)
    accepting.enqueued[0].sock.close()
