"""Every setting of the service, read once from the environment.

`SETTINGS` is the single list: `Settings.from_env()` reads it, `wine-quality serve --help` and the
README's configuration table are generated from it, and the chart passes the same names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wine_quality.core.runtime import RUNTIMES


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
        "Directory of the model artifact (model.joblib, metadata.json).",
    ),
    Setting(
        "WINE_QUALITY_RUNTIME",
        "auto",
        "Inference runtime: auto (the artifact's fast runtime, else scikit-learn), "
        "onnx or sklearn.",
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
    Setting("PORT", "8080", "TCP port gunicorn listens on (all interfaces)."),
    Setting(
        "FORWARDED_ALLOW_IPS",
        "127.0.0.1,::1",
        "Addresses or CIDR networks (comma-separated, * = any) of the proxies whose "
        "X-Forwarded-Proto gunicorn trusts. Behind a TLS-terminating ingress, list the "
        "ingress's pod network here, or HSTS and the Secure cookie flag stay off.",
    ),
    Setting("GUNICORN_WORKERS", "2", "gunicorn worker processes (sized for a 2-core pod)."),
    Setting("GUNICORN_THREADS", "1", "Threads per worker (1 = sync worker)."),
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


@dataclass(frozen=True)
class Settings:
    model_dir: Path
    runtime: str
    max_body_bytes: int
    max_batch_rows: int
    log_level: str
    secret_key: str

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        runtime = raw("WINE_QUALITY_RUNTIME", environ)
        if runtime not in RUNTIMES:
            raise SettingsError(
                f"WINE_QUALITY_RUNTIME={runtime!r} is not one of {', '.join(RUNTIMES)}"
            )
        level = raw("WINE_QUALITY_LOG_LEVEL", environ).lower()
        if level not in ("debug", "info", "warning", "error"):
            raise SettingsError(
                f"WINE_QUALITY_LOG_LEVEL={level!r} is not one of debug, info, warning, error"
            )
        return cls(
            model_dir=Path(raw("WINE_QUALITY_MODEL_DIR", environ)),
            runtime=runtime,
            max_body_bytes=integer("WINE_QUALITY_MAX_BODY_BYTES", environ),
            max_batch_rows=integer("WINE_QUALITY_MAX_BATCH_ROWS", environ),
            log_level=level,
            secret_key=raw("WINE_QUALITY_SECRET_KEY", environ),
        )


def markdown_table() -> str:
    """The README's configuration table."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{s.env}` | `{s.default}` | {s.help} |" for s in SETTINGS]
    return "\n".join(lines)
