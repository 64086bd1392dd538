"""The bare stack: Flask answering POST /v1/predict with a constant single-row JSON answer.
Nothing is read, validated, predicted, logged or counted. `make bench` serves it with the
service's worker count under gunicorn's own sync worker (one thread) and gthread worker (the
service's threads); their best round is the floor the service's single-row throughput is a
share of. It also serves it under the service's worker class (what that worker alone is worth;
servers.FLOOR_WORKERS)."""

from __future__ import annotations

from flask import Flask, jsonify

app = Flask(__name__)


@app.post("/v1/predict")
def predict():
    return jsonify(
        model_version="floor",
        quality=5.5,
        grade=6,
        interval={"level": 0.8, "low": 5.0, "high": 6.0},
        warnings=[],
    )
