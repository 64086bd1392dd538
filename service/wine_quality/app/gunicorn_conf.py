"""gunicorn configuration of the service, every value from the environment (app/settings.py).

    gunicorn -c python:wine_quality.app.gunicorn_conf 'wine_quality.app:create_app()'

- Listens on $BIND_ADDRESS:$PORT with $GUNICORN_WORKERS workers of $GUNICORN_THREADS threads each
  (the service's gthread worker: a client slow to send or to read costs one idle thread, at most
  $GUNICORN_READ_TIMEOUT or $GUNICORN_WRITE_TIMEOUT seconds; wine_quality.app.worker).
- Trusts X-Forwarded-Proto (the request is HTTPS) only from $FORWARDED_ALLOW_IPS.
- Without $WINE_QUALITY_SECRET_KEY the master makes a random one at start, shared by its workers.
- One model per pod: the master loads and verifies the model once before it forks; every worker,
  including one that replaces a dead worker, serves that model (wine_quality.app.holder.preload).
- Prometheus multiprocess mode: PROMETHEUS_MULTIPROC_DIR is exported here, before any worker imports
  prometheus_client, and cleared of metric files when the server starts; a dead worker's live
  gauges are removed. Metric writes identify their process without a system call
  (wine_quality.app.process).
- Access log: one JSON object per line on stdout, with the request id the app returns
  (wine_quality.app.accesslog).
- Graceful shutdown: on SIGTERM each worker turns /readyz to 503 at once, keeps serving for
  $GUNICORN_SHUTDOWN_DELAY seconds (so Kubernetes can take the pod out of its endpoints), then stops
  accepting and finishes the requests in flight; the arbiter waits up to $GUNICORN_GRACEFUL_TIMEOUT.
- Writes nothing outside /dev/shm and the metrics directory, so a read-only root file system works.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from wine_quality.app.process import use_for_metrics
from wine_quality.app.settings import (
    MALLOC_TUNABLE,
    WORKER_CLASSES,
    Settings,
    choice,
    gunicorn_worker_class,
    integer,
    raw,
)

_settings = Settings.from_env()  # fails fast, naming the variable, on a bad value

_address = raw("BIND_ADDRESS")
bind = f"[{_address}]:{integer('PORT')}" if ":" in _address else f"{_address}:{integer('PORT')}"
workers = integer("GUNICORN_WORKERS")
# a class path, imported by gunicorn in the workers, not here: this module must not import
# prometheus_client before it set its directory
worker_class = gunicorn_worker_class(choice("GUNICORN_WORKER_CLASS", WORKER_CLASSES))
threads = integer("GUNICORN_THREADS")
integer("GUNICORN_READ_TIMEOUT")  # fail fast on a bad value; the workers read them
integer("GUNICORN_WRITE_TIMEOUT")
# Proxies whose X-Forwarded-Proto makes a request HTTPS (HSTS, the Secure cookie flag).
forwarded_allow_ips = raw("FORWARDED_ALLOW_IPS")
timeout = integer("GUNICORN_TIMEOUT")
graceful_timeout = integer("GUNICORN_GRACEFUL_TIMEOUT")
shutdown_delay = integer("GUNICORN_SHUTDOWN_DELAY", minimum=0)
loglevel = _settings.log_level
accesslog = "-"  # stdout
errorlog = "-"
logger_class = "wine_quality.app.accesslog.JsonAccessLogger"
reload = False
# Each worker builds the Flask app after the fork; the model it serves was loaded and verified
# once, before the first fork, in when_ready.
preload_app = False
control_socket_disable = True  # it would need a writable $HOME or $XDG_RUNTIME_DIR
# Heartbeat files: a tmpfs avoids fchmod stalls on disk-backed /tmp (gunicorn's advice).
_SHM = "/dev/shm"  # noqa: S108 - a tmpfs, used for gunicorn's heartbeat files only
worker_tmp_dir = _SHM if os.access(_SHM, os.W_OK) else None

METRICS_DIR = Path(raw("PROMETHEUS_MULTIPROC_DIR"))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)
use_for_metrics()  # here, before the master or any worker creates a metric

if graceful_timeout <= shutdown_delay:
    raise ValueError(
        f"GUNICORN_GRACEFUL_TIMEOUT={graceful_timeout} must be larger than "
        f"GUNICORN_SHUTDOWN_DELAY={shutdown_delay}"
    )


def on_starting(server: Any) -> None:
    """Start without metric files of a previous run, which would be summed in. Only
    prometheus_client's own `*.db` files go: the directory is a setting and may hold others.
    Without WINE_QUALITY_SECRET_KEY, make a random one here: the workers fork later and inherit
    it, so a form served by one worker validates in every other. Warn when malloc's mmap
    threshold is not fixed in the environment (settings.MALLOC_TUNABLE): the workers' memory
    bound does not hold without it."""
    if f"{MALLOC_TUNABLE}=" not in os.environ.get("GLIBC_TUNABLES", ""):
        server.log.warning(
            "GLIBC_TUNABLES lacks %s: large request buffers may stay resident in the workers "
            "(wine-quality serve and the image set it)",
            MALLOC_TUNABLE,
        )
    if not os.environ.get("WINE_QUALITY_SECRET_KEY"):
        from wine_quality.app.web.csrf import EPHEMERAL_KEY_WARNING, new_signing_key

        os.environ["WINE_QUALITY_SECRET_KEY"] = new_signing_key()
        server.log.warning("%s", EPHEMERAL_KEY_WARNING)
    METRICS_DIR.mkdir(parents=True, exist_ok=True)
    for stale in METRICS_DIR.glob("*.db"):
        stale.unlink()


def when_ready(server: Any) -> None:
    """Read and check the artifact in the master, after it listens and before it forks the first
    worker: every worker opens these very bytes (or reports this failure), whatever the files
    hold when a worker is started later. The shadow model is pinned the same way."""
    from wine_quality.app.holder import preload

    pinned = [("model", _settings.model_dir)]
    if _settings.shadow_model_dir is not None:
        pinned.append(("shadow model", _settings.shadow_model_dir))
    for what, directory in pinned:
        read = preload(directory, _settings.runtime)
        if isinstance(read, str):
            server.log.error("%s: %s; every worker reports it", what, read)
        else:
            server.log.info(
                "%s %s (%s) checked in %.3f s; every worker opens these files",
                what,
                read.facts.version,
                read.facts.algorithm,
                time.perf_counter() - read.started,
            )


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker: Any) -> None:
    """Replace the worker's SIGTERM handler: readiness off now, stop accepting after the delay.
    gunicorn loads the app (`worker.wsgi`, the Flask app) in init_process before this hook."""
    from wine_quality.app.state import EXTENSION

    holder = worker.wsgi.extensions[EXTENSION].holder
    stopping = threading.Event()

    def stop_accepting() -> None:
        worker.log.info("worker %s: shutdown delay over, finishing requests in flight", worker.pid)
        worker.handle_exit(signal.SIGTERM, None)  # gunicorn's own: exit after this request
        os.write(worker.PIPE[1], b"1")  # wake the worker's select() so it notices at once

    def on_sigterm(signum: int, frame: Any) -> None:
        if stopping.is_set():
            return
        stopping.set()
        holder.begin_shutdown()
        worker.log.info(
            "worker %s: SIGTERM, readiness is 503; serving %s s more", worker.pid, shutdown_delay
        )
        timer = threading.Timer(shutdown_delay, stop_accepting)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)
    worker.log.info("worker %s: booted", worker.pid)
