"""BASELINE FOR THE BENCHMARK ONLY: the seed paper's way of serving, not the project's service.

Written from the paper's description to measure what the project improved on: a minimal Flask app
whose POST /predict loads the pickled model from disk on every request and builds the feature row
from the JSON values in the order the client happened to send the keys (no names, no validation,
no error handling). Never deploy this: benchmarks/run.py serves it under gunicorn with the same
worker count as the service, pointed at the same model file (env SEED_MODEL_PATH).

The paper pickled the model; the project's artifact is a joblib file, so it is read with
joblib.load, which unpickles it exactly like pickle.load would (same per-request cost).
"""

import os

import joblib
from flask import Flask, jsonify, request

app = Flask(__name__)
MODEL_PATH = os.environ.get("SEED_MODEL_PATH", "model.joblib")


@app.route("/predict", methods=["POST"])
def predict():
    model = joblib.load(MODEL_PATH)  # the seed's choice: read the model for every request
    data = request.get_json()
    features = [list(data.values())]  # key order of the request, whatever the client sent
    prediction = model.predict(features)
    return jsonify({"quality": float(prediction[0])})
