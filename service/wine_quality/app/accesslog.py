"""The service's gunicorn access log: one JSON object per line on stdout, with the request id
the app returns (gunicorn_conf sets it as gunicorn's logger class)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

import orjson
from gunicorn.glogging import Logger

from wine_quality.app.hooks import REQUEST_ID_KEY
from wine_quality.app.process import process_id


class JsonAccessLogger(Logger):
    """gunicorn's logger, with access lines as JSON objects (one per line).

    With gunicorn's own access handler on stdout (this configuration's), a line goes straight to
    file descriptor 1 in one write, as the prediction log's do: logging's record, lock, formatter
    and text-layer flush were a twentieth of a single-row request's CPU under load. Any other
    setup (another access log file, a logging config, syslog) gets the lines through logging,
    and so does a line whose write fails, so logging reports the error."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        self._stdout_fd = _plain_stdout_fd(self.access_log)
        # a line longer than a pipe's atomic write stays whole among this worker's threads (another
        # process's lines can still fall inside it, as through logging)
        self._write_lock = threading.Lock()

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "type": "access",
            "request_id": environ.get(REQUEST_ID_KEY, "-"),  # set by app/hooks.py
            "remote": environ.get("REMOTE_ADDR", "-"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING") or None,
            "status": int(status) if str(status).isdigit() else status,
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "user_agent": environ.get("HTTP_USER_AGENT"),
            "pid": process_id(),
        }
        text = orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
        if self._stdout_fd is None or not self._write_line(text):
            self.access_log.info(text[:-1].decode())

    def _write_line(self, text: bytes) -> bool:
        """Write all of `text` to stdout; False when a write fails (nothing or part written)."""
        view = memoryview(text)
        with self._write_lock:
            try:
                while view:
                    view = view[os.write(self._stdout_fd, view) :]
            except OSError:
                return False
        return True


def _plain_stdout_fd(logger: logging.Logger) -> int | None:
    """stdout's file descriptor when `logger` only writes its messages, as they are, to stdout."""
    handlers = logger.handlers
    if not logger.isEnabledFor(logging.INFO) or logger.filters or len(handlers) != 1:
        return None
    if type(handlers[0]) is not logging.StreamHandler:
        return None
    handler = handlers[0]
    probe = logging.LogRecord(logger.name, logging.INFO, __file__, 0, "probe", None, None)
    if handler.filters or handler.stream is not sys.stdout or handler.format(probe) != "probe":
        return None
    try:
        return sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # stdout replaced by an object without a file
        return None
