"""The Flask application factory: the serving layer's one entry point.

    gunicorn -c python:wine_quality.app.gunicorn_conf 'wine_quality.app:create_app()'

`create_app()` reads the settings once, loads the model once for this process (through the
verified loader; a failure keeps the app up with /readyz at 503 and the reason), wires the
app-wide hooks (request id, security headers, error handlers, metrics) and registers one
blueprint per surface: `api_v1` (/healthz, /readyz, /v1/*, /predict), `api_v2` (Open Inference
Protocol, /v2/*), `docs` (/openapi.json, /docs) and `web` (the page at /).

The modules are imported inside the factory, as in Flask's tutorial: importing this package
(gunicorn's config does, for the settings) must not import prometheus_client before gunicorn's
config has set PROMETHEUS_MULTIPROC_DIR.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import TYPE_CHECKING

from flask import Flask

if TYPE_CHECKING:
    from wine_quality.app.metrics import ServiceMetrics
    from wine_quality.app.prediction_log import PredictionLog
    from wine_quality.app.settings import Settings
    from wine_quality.app.shadow import Shadow
    from wine_quality.core.artifact import LoadedModel


def create_app(settings: Settings | None = None, model: LoadedModel | None = None) -> Flask:
    """Build the app. `model` (a LoadedModel) skips loading from `settings.model_dir`."""
    from wine_quality.app import api_v1, api_v2, hooks, openapi, web
    from wine_quality.app.errors import register_error_handlers
    from wine_quality.app.holder import ModelHolder
    from wine_quality.app.jsoncodec import JsonProvider
    from wine_quality.app.metrics import init_metrics
    from wine_quality.app.settings import Settings
    from wine_quality.app.state import EXTENSION, ServiceState
    from wine_quality.app.web.csrf import EPHEMERAL_KEY_WARNING, new_signing_key

    settings = settings or Settings.from_env()
    _configure_logging(settings.log_level)
    if not settings.secret_key:
        logging.getLogger(__name__).warning("%s", EPHEMERAL_KEY_WARNING)
        settings = dataclasses.replace(settings, secret_key=new_signing_key())
    if model is None:
        holder = ModelHolder.load(settings.model_dir, settings.runtime)
    else:
        holder = ModelHolder(model=model)

    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, DEBUG=False, TESTING=False)
    app.json = JsonProvider(app)
    hooks.register_hooks(app)
    register_error_handlers(app)
    metrics = init_metrics(app, holder)
    app.extensions[EXTENSION] = ServiceState(
        settings=settings,
        holder=holder,
        metrics=metrics,
        shadow=_shadow(settings, metrics),
        prediction_log=_prediction_log(settings, metrics),
    )
    for blueprint in (api_v1.bp, api_v2.bp, openapi.bp, web.bp):
        app.register_blueprint(blueprint)
    return app


def _shadow(settings: Settings, metrics: ServiceMetrics) -> Shadow | None:
    from wine_quality.app.shadow import Shadow, ShadowMetrics

    if settings.shadow_model_dir is None:
        return None
    return Shadow.load(
        settings.shadow_model_dir, settings.runtime, ShadowMetrics.create(metrics.registry)
    )


def _prediction_log(settings: Settings, metrics: ServiceMetrics) -> PredictionLog | None:
    from wine_quality.app.prediction_log import PredictionLog

    if settings.prediction_log == "off":
        return None
    return PredictionLog(settings.prediction_log_sample, metrics.registry)


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("wine_quality")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
        )
        logger.addHandler(handler)
        logger.propagate = False
