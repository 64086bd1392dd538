"""The access log (app/accesslog.py): with gunicorn's own stdout handler a line
goes straight to the file descriptor in one piece; with any other logging setup, or when that
write fails, it goes through logging. Real gunicorn configs, real pipes and files."""

from __future__ import annotations

import datetime
import io
import itertools
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from wine_quality.app import accesslog
from wine_quality.app.accesslog import JsonAccessLogger

REQUEST = SimpleNamespace(status="200 OK", sent=123)


def environ(path: str = "/v1/predict", user_agent: str = "curl/8") -> dict[str, str]:
    return {
        "REMOTE_ADDR": "10.0.0.7",
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "HTTP_USER_AGENT": user_agent,
        "wine_quality.request_id": "trace-1",
    }


def access_logger(**settings: str) -> JsonAccessLogger:
    cfg = Config()
    cfg.set("accesslog", "-")
    for name, value in settings.items():
        cfg.set(name, value)
    logger = JsonAccessLogger(cfg)
    # set up again on a logger new to this test: pytest's log capture adds its handlers to
    # "gunicorn.access" (as to every logger that does not propagate when a test starts)
    logger.access_log = logging.getLogger(f"gunicorn.access.test{next(_LOGGERS)}")
    logger.access_log.propagate = False  # as gunicorn makes its own
    logger.setup(cfg)
    return logger


_LOGGERS = itertools.count()


def log_one(logger: JsonAccessLogger, path: str = "/v1/predict", user_agent: str = "x") -> None:
    logger.access(REQUEST, None, environ(path, user_agent), datetime.timedelta(milliseconds=2))


@pytest.fixture
def real_stdout(monkeypatch) -> Iterator[Callable[[], int]]:
    """Call it in the test: sys.stdout becomes a text file on a pipe (pytest's capture replaces
    sys.stdout again between a fixture's setup and the test); returns the pipe's read end."""
    read_end, write_end = os.pipe()

    def install() -> int:
        stream = open(write_end, "w", closefd=False)  # noqa: SIM115 - closed with the pipe
        monkeypatch.setattr(sys, "stdout", stream)
        return read_end

    yield install
    os.close(read_end)
    os.close(write_end)


def test_gunicorns_own_stdout_handler_is_written_directly(real_stdout) -> None:
    read_end = real_stdout()
    logger = access_logger()
    assert logger._stdout_fd == sys.stdout.fileno()
    log_one(logger)
    line = json.loads(os.read(read_end, 65536))
    assert line["path"] == "/v1/predict" and line["request_id"] == "trace-1"
    assert line["status"] == 200 and line["bytes"] == 123 and line["duration_ms"] == 2.0


@pytest.mark.parametrize(
    "change",
    [
        "a formatter that adds a time",
        "a filter",
        "a second handler",
        "a level above info",
        "a handler of another class",
    ],
)
def test_any_other_logging_setup_goes_through_logging(real_stdout, change) -> None:
    real_stdout()
    logger = access_logger()
    assert accesslog._plain_stdout_fd(logger.access_log) is not None
    log = logger.access_log
    handler = log.handlers[0]
    if change == "a formatter that adds a time":
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    elif change == "a filter":
        log.addFilter(lambda record: True)
    elif change == "a second handler":
        log.addHandler(logging.StreamHandler(io.StringIO()))
    elif change == "a level above info":
        log.setLevel(logging.WARNING)
    else:
        log.handlers = [logging.FileHandler(os.devnull)]
    assert accesslog._plain_stdout_fd(log) is None


def test_an_access_log_file_gets_the_lines_through_logging(tmp_path: Path) -> None:
    logger = access_logger(accesslog=str(tmp_path / "access.log"))
    assert logger._stdout_fd is None
    log_one(logger, path="/healthz")
    for handler in logger.access_log.handlers:
        handler.flush()
    (line,) = (tmp_path / "access.log").read_text().splitlines()
    assert json.loads(line)["path"] == "/healthz"


def test_a_failed_write_goes_through_logging_which_reports_it(real_stdout) -> None:
    real_stdout()
    logger = access_logger()
    received = io.StringIO()
    logger.access_log.handlers = [logging.StreamHandler(received)]
    read_end, write_end = os.pipe()
    os.close(read_end)  # writing to it now fails with EPIPE
    logger._stdout_fd = write_end
    try:
        log_one(logger, path="/readyz")
    finally:
        os.close(write_end)
    assert json.loads(received.getvalue())["path"] == "/readyz"


def test_long_lines_from_many_threads_arrive_whole(real_stdout) -> None:
    """Lines longer than a pipe's atomic write (user agents of 6,000 bytes) from 8 threads at
    once: each line is whole, none mixed into another."""
    read_end = real_stdout()
    logger = access_logger()
    threads, per_thread = 8, 25
    agents = [chr(ord("a") + t) * 6000 for t in range(threads)]
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter_pipe(read_end)), daemon=True)
    reader.start()

    def send(agent: str) -> None:
        for _ in range(per_thread):
            log_one(logger, user_agent=agent)

    workers = [threading.Thread(target=send, args=(agent,)) for agent in agents]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    os.write(logger._stdout_fd, b"END\n")
    reader.join(timeout=30)
    lines = b"".join(chunks).splitlines()
    assert lines[-1] == b"END"
    parsed = [json.loads(line) for line in lines[:-1]]
    assert len(parsed) == threads * per_thread
    assert {line["user_agent"] for line in parsed} == set(agents)


def iter_pipe(fd: int):
    while chunk := os.read(fd, 65536):
        yield chunk
        if chunk.endswith(b"END\n"):
            return
