"""Every setting of the service, read once from the environment.

`SETTINGS` is the single list: `Settings.from_env()` reads it, `wine-quality serve --help` and the
README's configuration table are generated from it, and the chart passes the same names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wine_quality.core.runtime import RUNTIMES

PREDICTION_LOG_MODES = ("off", "stdout")


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


@dataclass(frozen=True)
class Setting:
    env: str
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "WINE_QUALITY_MODEL_DIR",
        "artifacts/model",
        "Directory (or link to one) of the model artifact (metadata.json, model.onnx), loaded "
        "and verified once at start.",
    ),
    Setting(
        "WINE_QUALITY_RUNTIME",
        "auto",
        "Inference runtime: auto or onnx (the verified ONNX export; the pickled model is never "
        "loaded), or sklearn (unpickles model.joblib: needs scikit-learn, which the image does "
        "not install, and trusts whoever can write the model directory).",
    ),
    Setting(
        "WINE_QUALITY_MAX_BODY_BYTES",
        "8388608",
        "Largest request body accepted, in bytes; larger bodies get 413.",
    ),
    Setting(
        "WINE_QUALITY_MAX_BATCH_ROWS",
        "10000",
        "Most rows in one batch (JSON instances, CSV rows or v2 shape[0]); more get 413.",
    ),
    Setting(
        "WINE_QUALITY_LOG_LEVEL",
        "info",
        "Log level of the application and gunicorn: debug, info, warning, error.",
    ),
    Setting(
        "WINE_QUALITY_SECRET_KEY",
        "",
        "Key that signs the web page's CSRF tokens; empty makes a random one at start, so "
        "forms validate only within that server: set it when running several replicas.",
    ),
    Setting(
        "WINE_QUALITY_SHADOW_MODEL_DIR",
        "",
        "Directory of a second artifact that scores every predicted row beside the served "
        "model (verified the same way); its agreement is in the metrics and the prediction log, "
        "answers never change. Empty: no shadow.",
    ),
    Setting(
        "WINE_QUALITY_PREDICTION_LOG",
        "off",
        "off, or stdout: one JSON line per predicted row (request id, inputs, prediction, the "
        "shadow's), the format in docs/monitoring.md.",
    ),
    Setting(
        "WINE_QUALITY_PREDICTION_LOG_SAMPLE",
        "1",
        "Share of predicted rows the prediction log writes, from 0 to 1.",
    ),
    Setting(
        "BIND_ADDRESS",
        "0.0.0.0",  # noqa: S104 - a pod must listen on its own interface
        "Address gunicorn listens on: 0.0.0.0 (all IPv4 interfaces, as a pod needs), :: (all "
        "interfaces), 127.0.0.1 (this machine only) or one interface's address.",
    ),
    Setting("PORT", "8080", "TCP port gunicorn listens on."),
    Setting(
        "FORWARDED_ALLOW_IPS",
        "127.0.0.1,::1",
        "Addresses or CIDR networks (comma-separated, * = any) of the proxies whose "
        "X-Forwarded-Proto gunicorn trusts. Behind a TLS-terminating ingress, list the "
        "ingress's pod network here, or HSTS and the Secure cookie flag stay off.",
    ),
    Setting("GUNICORN_WORKERS", "2", "gunicorn worker processes (sized for a 2-core pod)."),
    Setting(
        "GUNICORN_WORKER_CLASS",
        "gthread",
        "gthread: threads per worker and a read timeout per request, so slow clients cost an idle "
        "thread each, never a whole worker (wine_quality.app.worker); sync: one request per "
        "worker at a time, for a pod behind a buffering proxy only.",
    ),
    Setting(
        "GUNICORN_THREADS",
        "16",
        "Threads per gthread worker: the requests that wait for their client (bodies over 16 KiB, "
        "chunked or compressed, answers not taken at once) one worker serves at once; requests "
        "that arrive whole are served by its main thread, and idle keep-alive connections take "
        "no thread. Memory grows with them: each thread holds "
        "at most one body (up to WINE_QUALITY_MAX_BODY_BYTES, its own size) while it arrives, "
        "and a worker parses at most 2 received bodies over 64 KiB at a time (others wait up to "
        "5 s, then get 503 with Retry-After); so a worker holds at most GUNICORN_THREADS bodies "
        "plus 2 parses (about 20 MiB each): 16 x 8 MiB + 40 MiB with the defaults.",
    ),
    Setting(
        "GUNICORN_READ_TIMEOUT",
        "10",
        "Seconds a client gets to send a request's line, headers and body, from its first byte "
        "on (gthread); slower requests get 408 and the connection is closed.",
    ),
    Setting(
        "GUNICORN_WRITE_TIMEOUT",
        "10",
        "Seconds a client gets to take an answer from its first byte on (gthread); a client "
        "that reads slower, or not at all, is disconnected and its thread freed.",
    ),
    Setting(
        "GUNICORN_TIMEOUT",
        "30",
        "Seconds a worker may spend on one request before it is restarted.",
    ),
    Setting(
        "GUNICORN_GRACEFUL_TIMEOUT", "20", "Seconds in-flight requests get to finish after SIGTERM."
    ),
    Setting(
        "GUNICORN_SHUTDOWN_DELAY",
        "2",
        "Seconds between SIGTERM (readiness turns 503) and the workers no longer accepting "
        "connections.",
    ),
    # /tmp is the pod's emptyDir; stale metric files there are removed at start.
    Setting(
        "PROMETHEUS_MULTIPROC_DIR",
        "/tmp/wine-quality-metrics",  # noqa: S108
        "Scratch directory for the workers' shared Prometheus metrics (its *.db files are "
        "removed at start).",
    ),
)

_DEFAULTS = {s.env: s.default for s in SETTINGS}


def raw(env: str, environ: dict[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get(env, _DEFAULTS[env])


def integer(env: str, environ: dict[str, str] | None = None, minimum: int = 1) -> int:
    """The whole-number setting `env` (at least `minimum`), or SettingsError naming it."""
    text = raw(env, environ)
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{env}={text!r} is not a whole number") from None
    if value < minimum:
        raise SettingsError(f"{env}={value} must be at least {minimum}")
    return value


WORKER_CLASSES = ("gthread", "sync")


# glibc's malloc: every block of 128 KiB or more mapped on its own and unmapped when freed. By
# default glibc raises that threshold to the size of each large block freed (up to 32 MiB), after
# which large request buffers come from the heap, where growing one copies it and freed space
# stays resident: a refused 8 MiB body then peaked at up to 4 times its size in a worker instead
# of 1.3. A tunable is read when a process starts, so it is set in the environment of gunicorn's
# master (`wine-quality serve`, the image's ENV, the tests' server) and holds in every worker.
MALLOC_TUNABLE = "glibc.malloc.mmap_threshold"
MALLOC_MMAP_THRESHOLD = 128 * 1024


def with_malloc_tunable(environ: dict[str, str]) -> dict[str, str]:
    """`environ` with MALLOC_TUNABLE in GLIBC_TUNABLES, unless the operator set it already."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if f"{MALLOC_TUNABLE}=" in tunables:
        return environ
    ours = f"{MALLOC_TUNABLE}={MALLOC_MMAP_THRESHOLD}"
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{ours}" if tunables else ours}


def gunicorn_worker_class(name: str) -> str:
    """gunicorn's worker class for a GUNICORN_WORKER_CLASS value: `gthread` is the service's
    thread worker (app/worker.py: gthread with a read timeout per request), `sync` gunicorn's."""
    return "wine_quality.app.worker.ServiceWorker" if name == "gthread" else name


def choice(env: str, choices: tuple[str, ...], environ: dict[str, str] | None = None) -> str:
    """The setting `env`, one of `choices`, or SettingsError naming them."""
    value = raw(env, environ)
    if value not in choices:
        raise SettingsError(f"{env}={value!r} is not one of {', '.join(choices)}")
    return value


def fraction(env: str, environ: dict[str, str] | None = None) -> float:
    """The setting `env`, a number from 0 to 1, or SettingsError naming it."""
    text = raw(env, environ)
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{env}={text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise SettingsError(f"{env}={text} must be from 0 to 1")
    return value


@dataclass(frozen=True)
class Settings:
    model_dir: Path
    runtime: str
    max_body_bytes: int
    max_batch_rows: int
    log_level: str
    secret_key: str
    shadow_model_dir: Path | None = None
    prediction_log: str = "off"
    prediction_log_sample: float = 1.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        level = raw("WINE_QUALITY_LOG_LEVEL", environ).lower()
        if level not in ("debug", "info", "warning", "error"):
            raise SettingsError(
                f"WINE_QUALITY_LOG_LEVEL={level!r} is not one of debug, info, warning, error"
            )
        shadow = raw("WINE_QUALITY_SHADOW_MODEL_DIR", environ)
        return cls(
            model_dir=Path(raw("WINE_QUALITY_MODEL_DIR", environ)),
            runtime=choice("WINE_QUALITY_RUNTIME", RUNTIMES, environ),
            max_body_bytes=integer("WINE_QUALITY_MAX_BODY_BYTES", environ),
            max_batch_rows=integer("WINE_QUALITY_MAX_BATCH_ROWS", environ),
            log_level=level,
            secret_key=raw("WINE_QUALITY_SECRET_KEY", environ),
            shadow_model_dir=Path(shadow) if shadow else None,
            prediction_log=choice("WINE_QUALITY_PREDICTION_LOG", PREDICTION_LOG_MODES, environ),
            prediction_log_sample=fraction("WINE_QUALITY_PREDICTION_LOG_SAMPLE", environ),
        )


def markdown_table() -> str:
    """The README's configuration table."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{s.env}` | `{s.default}` | {s.help} |" for s in SETTINGS]
    return "\n".join(lines)
