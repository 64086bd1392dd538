"""The Flask application factory.

    gunicorn -c python:wine_quality.gunicorn_conf 'wine_quality.app:create_app()'

`create_app()` reads the settings once, loads the model once for this process (through the
verified loader; a failure keeps the app up with /readyz at 503 and the reason), and registers
one blueprint per API surface: `api_v1` (/healthz, /readyz, /v1/*, /predict), `api_v2` (Open
Inference Protocol, /v2/*), `docs` (/openapi.json, /docs) and `web` (the page at /), plus
/metrics. Without WINE_QUALITY_SECRET_KEY (gunicorn's master sets one for its workers) the app
signs its forms with a random key of its own.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from typing import Any

from flask import Flask, Response, g, request

from wine_quality import web
from wine_quality.app import api_v1, api_v2, docs
from wine_quality.app.errors import register_error_handlers
from wine_quality.app.metrics import init_metrics
from wine_quality.app.state import EXTENSION, ServiceState
from wine_quality.model_holder import ModelHolder
from wine_quality.settings import Settings
from wine_quality.web.security import EPHEMERAL_KEY_WARNING, new_signing_key

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


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


def _assign_request_id() -> None:
    """Take the caller's X-Request-ID when it is a sane token, else make one."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def _return_request_id(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id") or uuid.uuid4().hex
    return response


def create_app(settings: Settings | None = None, model: Any = None) -> Flask:
    """Build the app. `model` (a LoadedModel) skips loading from `settings.model_dir`."""
    settings = settings or Settings.from_env()
    _configure_logging(settings.log_level)
    if not settings.secret_key:
        logging.getLogger(__name__).warning("%s", EPHEMERAL_KEY_WARNING)
        settings = settings.replace(secret_key=new_signing_key())
    if model is not None:
        holder = ModelHolder(model=model)
    else:
        holder = ModelHolder.load(settings.model_dir, settings.runtime)

    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, DEBUG=False, TESTING=False)
    app.json.sort_keys = False
    app.before_request(_assign_request_id)
    app.after_request(_return_request_id)
    register_error_handlers(app)
    metrics = init_metrics(app, holder)
    app.extensions[EXTENSION] = ServiceState(settings=settings, holder=holder, metrics=metrics)

    app.register_blueprint(api_v1.bp)
    app.register_blueprint(api_v2.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(web.bp)  # also sets the security headers of every response
    return app
