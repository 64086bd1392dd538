"""The bare stack: Flask answering POST /v1/predict with a constant single-row JSON answer, under
gunicorn with the service's workers. Nothing is read, validated, predicted, logged or counted:
its throughput is the ceiling any Flask service on this machine can reach, and the service's
single-row throughput is reported as a share of it."""

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
