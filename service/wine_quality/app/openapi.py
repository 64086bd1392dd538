"""The OpenAPI 3 description of the service (/openapi.json) and a readable page of it (/docs).

The feature schemas are generated from `features.py` (names, units, physical bounds) and the
limits from the settings, so the spec cannot drift from what the service enforces. The /docs
page is rendered on the server from the same spec: no JavaScript, no CDN, no inline styles.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, render_template
from markupsafe import Markup, escape

from wine_quality import MODEL_NAME, __version__
from wine_quality.app.settings import Settings
from wine_quality.app.state import state
from wine_quality.core.features import FEATURE_NAMES, FEATURES, TARGET_MAXIMUM, TARGET_MINIMUM

# The stylesheet is served from static/ at /docs/docs.css.
bp = Blueprint(
    "docs", __name__, template_folder="templates", static_folder="static", static_url_path="/docs"
)

_REF = "#/components/schemas/"


def _feature_schemas(key_attr: str) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [getattr(f, key_attr) for f in FEATURES],
        "properties": {
            getattr(f, key_attr): {
                "type": "number",
                "minimum": f.minimum,
                "maximum": f.maximum,
                "description": f"{f.description} Unit: {f.unit}.",
            }
            for f in FEATURES
        },
    }


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "code", "message"],
                "properties": {
                    "status": {"type": "integer"},
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "row": {
                                    "type": ["integer", "null"],
                                    "description": "0-based row (JSON) or file line (CSV).",
                                },
                                "field": {"type": ["string", "null"]},
                                "problem": {"type": "string"},
                            },
                        },
                    },
                },
            }
        },
    }


def _schemas(settings: Settings) -> dict[str, Any]:
    scale = f"{TARGET_MINIMUM}-{TARGET_MAXIMUM}"
    prediction = {
        "type": "object",
        "required": ["quality", "grade", "warnings"],
        "properties": {
            "quality": {"type": "number", "description": f"Predicted quality ({scale} scale)."},
            "grade": {
                "type": "integer",
                "minimum": TARGET_MINIMUM,
                "maximum": TARGET_MAXIMUM,
                "description": f"Quality rounded half up, clipped to {scale}.",
            },
            "warnings": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Inputs outside the training range (still served).",
            },
        },
    }
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string"},
            "data": {"type": "array"},
            "parameters": {"type": "object"},
        },
    }
    return {
        "Wine": _feature_schemas("name"),
        "WineSnakeCase": _feature_schemas("key"),
        "WineInput": {
            "oneOf": [{"$ref": _REF + "Wine"}, {"$ref": _REF + "WineSnakeCase"}],
            "description": "The 11 features, named as in the data set or in snake_case.",
        },
        "Batch": {
            "type": "object",
            "required": ["instances"],
            "additionalProperties": False,
            "properties": {
                "instances": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": settings.max_batch_rows,
                    "items": {"$ref": _REF + "WineInput"},
                }
            },
        },
        "Prediction": prediction,
        "SinglePrediction": {
            "allOf": [
                {"$ref": _REF + "Prediction"},
                {
                    "type": "object",
                    "required": ["model_version"],
                    "properties": {"model_version": {"type": "string"}},
                },
            ]
        },
        "BatchPrediction": {
            "type": "object",
            "required": ["model_version", "count", "predictions"],
            "properties": {
                "model_version": {"type": "string"},
                "count": {"type": "integer"},
                "predictions": {"type": "array", "items": {"$ref": _REF + "Prediction"}},
            },
        },
        "Error": _error_schema(),
        "V2Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "InferenceTensor": tensor,
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "inputs": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"$ref": _REF + "InferenceTensor"},
                },
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string", "enum": ["quality", "grade"]}},
                    },
                },
                "parameters": {"type": "object"},
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "outputs": {"type": "array", "items": {"$ref": _REF + "InferenceTensor"}},
            },
        },
    }


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF + schema}}}


def _errors(*statuses: int, v2: bool = False) -> dict[str, Any]:
    text = {
        400: "Malformed body.",
        404: "Unknown model or version.",
        413: "Body or batch too large.",
        415: "Unsupported Content-Type.",
        422: "Invalid input; every problem listed.",
        503: "Model not loaded, or shutting down.",
    }
    return {
        str(s): {"description": text[s], "content": _json("V2Error" if v2 else "Error")}
        for s in statuses
    }


def _v1_paths(settings: Settings) -> dict[str, Any]:
    csv_help = (
        f"Header row of feature names (either spelling, any order; a `quality` column is "
        f"ignored), ',' or ';' separated, at most {settings.max_batch_rows} rows."
    )
    predict = {
        "summary": "Predict the quality of one wine, a JSON batch or a CSV batch",
        "description": (
            'A JSON object with the 11 features gives one prediction; `{"instances": [...]}` '
            "gives one per row, in order; a `text/csv` body gives one per row, as CSV when the "
            "`Accept` header prefers `text/csv`. Values outside the physical bounds are rejected "
            "(422); values outside the training range are served with a warning. Batches above "
            f"{settings.max_batch_rows} rows get 413; bodies above {settings.max_body_bytes} "
            "bytes get 413."
        ),
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [{"$ref": _REF + "WineInput"}, {"$ref": _REF + "Batch"}]}
                },
                "text/csv": {"schema": {"type": "string", "description": csv_help}},
            },
        },
        "responses": {
            "200": {
                "description": "Predictions.",
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": _REF + "SinglePrediction"},
                                {"$ref": _REF + "BatchPrediction"},
                            ]
                        }
                    },
                    "text/csv": {
                        "schema": {
                            "type": "string",
                            "description": "quality,grade,model_version,warnings",
                        }
                    },
                },
            },
            **_errors(400, 413, 415, 422, 503),
        },
    }
    status = {"type": "object", "properties": {"status": {"type": "string"}}}
    return {
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "responses": {
                    "200": {
                        "description": "The process serves HTTP.",
                        "content": {"application/json": {"schema": status}},
                    }
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness",
                "description": (
                    "200 once the verified model is loaded; 503 with the reason otherwise "
                    "and from the moment shutdown begins."
                ),
                "responses": {
                    "200": {
                        "description": "Ready.",
                        "content": {"application/json": {"schema": status}},
                    },
                    **_errors(503),
                },
            }
        },
        "/v1/model": {
            "get": {
                "summary": "Model metadata",
                "description": (
                    "Name, version, algorithm, training time, data hash, metrics and the "
                    "feature schema with units, physical bounds and training ranges."
                ),
                "responses": {
                    "200": {
                        "description": "Metadata.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors(503),
                },
            }
        },
        "/v1/predict": {"post": {**predict, "operationId": "predict"}},
        "/predict": {
            "post": {
                **predict,
                "operationId": "predictLegacy",
                "description": "Same as /v1/predict (the seed paper's URL).",
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


_MODEL_NAME_PARAMETER = {
    "name": "model_name",
    "in": "path",
    "required": True,
    "description": f"The served model: `{MODEL_NAME}`; any other name gets 404.",
    "schema": {"type": "string", "minLength": 1, "examples": [MODEL_NAME]},
}
_MODEL_VERSION_PARAMETER = {
    "name": "model_version",
    "in": "path",
    "required": True,
    "description": "The served model's version (from the model metadata); any other gets 404.",
    "schema": {"type": "string", "minLength": 1},
}


def _v2_model_paths(
    prefix: str, parameters: list[dict[str, Any]], infer_help: str
) -> dict[str, Any]:
    """The model routes under `prefix` (by name, or by name and version): all may answer 404."""
    ok = {
        "200": {
            "description": "OK.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    }
    return {
        prefix: {
            "parameters": parameters,
            "get": {
                "summary": "Model metadata (OIP v2)",
                "responses": {**ok, **_errors(404, 503, v2=True)},
            },
        },
        f"{prefix}/ready": {
            "parameters": parameters,
            "get": {
                "summary": "Model ready (OIP v2)",
                "responses": {**ok, **_errors(404, 503, v2=True)},
            },
        },
        f"{prefix}/infer": {
            "parameters": parameters,
            "post": {
                "summary": "Inference (OIP v2)",
                "description": infer_help,
                "requestBody": {"required": True, "content": _json("InferenceRequest")},
                "responses": {
                    "200": {"description": "Predictions.", "content": _json("InferenceResponse")},
                    "400": {
                        "description": "Bad request (any invalid input).",
                        "content": _json("V2Error"),
                    },
                    **_errors(404, 413, 415, 503, v2=True),
                },
            },
        },
    }


def _v2_paths() -> dict[str, Any]:
    ok = {
        "200": {
            "description": "OK.",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    }
    infer_help = (
        f"Open Inference Protocol v2. Either one FP32/FP64 input of shape [N, {len(FEATURES)}] "
        f"whose columns are, in order: {', '.join(FEATURE_NAMES)}; or {len(FEATURES)} inputs of "
        "shape [N] named after the features (either spelling). Outputs: `quality` (FP64) and "
        f"`grade` (INT64), shape [N]. The model name is `{MODEL_NAME}`; its version is in the "
        "model metadata."
    )
    model = "/v2/models/{model_name}"
    return {
        "/v2": {"get": {"summary": "Server metadata (OIP v2)", "responses": ok}},
        "/v2/health/live": {"get": {"summary": "Server live (OIP v2)", "responses": ok}},
        "/v2/health/ready": {
            "get": {
                "summary": "Server ready (OIP v2)",
                "responses": {**ok, **_errors(503, v2=True)},
            }
        },
        **_v2_model_paths(model, [_MODEL_NAME_PARAMETER], infer_help),
        **_v2_model_paths(
            f"{model}/versions/{{model_version}}",
            [_MODEL_NAME_PARAMETER, _MODEL_VERSION_PARAMETER],
            infer_help,
        ),
    }


def _description(wine: str | None) -> str:
    """What the service predicts: the wine comes from the loaded model's metadata."""
    what = f"{wine} wine" if wine else "wine"
    return (
        f"Predicts the quality of {what} ({TARGET_MINIMUM}-{TARGET_MAXIMUM}) from "
        f"{len(FEATURES)} physico-chemical measurements."
    )


def openapi_spec(settings: Settings, wine: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route, generated from features.py, the settings and the
    model's `wine` (None while no model is loaded)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": MODEL_NAME,
            "version": __version__,
            "description": _description(wine),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": {**_v1_paths(settings), **_v2_paths()},
        "components": {"schemas": _schemas(settings)},
    }


def _served_spec() -> dict[str, Any]:
    current = state()
    model = current.holder.model
    return openapi_spec(current.settings, model.facts.wine if model else None)


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(_served_spec())


@bp.get("/docs")
def docs_page() -> str:
    return render_template("docs/page.html", spec=_served_spec(), features=FEATURES)


@bp.app_template_filter("code_spans")
def code_spans(text: str) -> Markup:
    """The spec's `backtick` spans as <code>; everything else escaped."""
    parts = escape(text).split("`")
    return Markup("").join(
        Markup("<code>{}</code>").format(part) if i % 2 else part for i, part in enumerate(parts)
    )
