"""The OpenAPI 3 description of the service (/openapi.json) and a readable page of it (/docs).

Generated here: the feature schemas from `features.py` (names, units, physical bounds), the
limits from the settings (max rows, max body bytes), the target scale, MODEL_NAME, the v2 output
names, and the descriptions that embed them, so the spec cannot drift from what the service
enforces. Fixed, in `openapi_data/fixed.json` (read once): every schema and path item that
depends on nothing, and the description of each error status. In that file a null path item is
one generated here, and a response written as a schema name (`"503": "Error"`) is an error with
that body and its status's description. The /docs page is rendered on the server from the same
spec: no JavaScript, no CDN, no inline styles.
"""

from __future__ import annotations

import json
from copy import deepcopy
from functools import cache
from importlib.resources import files
from typing import Any

from flask import Blueprint, Response, jsonify, render_template
from markupsafe import Markup, escape

from wine_quality import MODEL_NAME, __version__
from wine_quality.app.api_v2 import OUTPUTS
from wine_quality.app.settings import Settings
from wine_quality.app.state import state
from wine_quality.core.features import (
    FEATURE_KEYS,
    FEATURE_NAMES,
    FEATURES,
    TARGET_MAXIMUM,
    TARGET_MINIMUM,
)

# The stylesheet is served from static/ at /docs/docs.css.
bp = Blueprint(
    "docs", __name__, template_folder="templates", static_folder="static", static_url_path="/docs"
)

_REF = "#/components/schemas/"
_SCALE = f"{TARGET_MINIMUM}-{TARGET_MAXIMUM}"


@cache
def _fixed_file() -> dict[str, Any]:
    return json.loads(files(__package__).joinpath("openapi_data/fixed.json").read_text("utf-8"))


def _fixed() -> dict[str, Any]:
    """A copy of fixed.json (read once), for the caller to fill in."""
    return deepcopy(_fixed_file())


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF + schema}}}


def _errors(schema: str, *statuses: int) -> dict[str, str]:
    """Error responses, as fixed.json writes them: spelled out by `_spell_out_errors`."""
    return {str(status): schema for status in statuses}


def _spell_out_errors(paths: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    """`paths` with each error response written as a schema name spelled out, in place."""
    for item in paths.values():
        for op in (value for key, value in item.items() if key != "parameters"):
            responses = op["responses"]
            for status, given in responses.items():
                if isinstance(given, str):
                    responses[status] = {"description": errors[status], "content": _json(given)}
    return paths


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


_INTERVAL_SCHEMA = {
    "type": "object",
    "required": ["level", "low", "high"],
    "description": "Conformal prediction interval: the true grade of a wine like this one lies "
    "in [low, high] for a share `level` of wines (calibrated at training time on out-of-fold "
    "errors, measured on held-out wines; GET /v1/model `intervals`).",
    "properties": {
        "level": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "low": {"type": "number", "minimum": TARGET_MINIMUM, "maximum": TARGET_MAXIMUM},
        "high": {"type": "number", "minimum": TARGET_MINIMUM, "maximum": TARGET_MAXIMUM},
    },
}
_EXPLAIN_PARAMETER = {
    "name": "explain",
    "in": "query",
    "required": False,
    "description": "`1` or `true` adds each prediction's `base_value` and `contributions` "
    "(JSON; CSV answers gain base_value and contribution_<key> columns); `0`, `false` or "
    "absent: none. Any other value gets 422.",
    "schema": {"type": "string", "enum": ["1", "true", "0", "false"]},
}


def _schemas(settings: Settings, fixed: dict[str, Any]) -> dict[str, Any]:
    prediction = {
        "type": "object",
        "required": ["quality", "grade", "interval", "warnings"],
        "properties": {
            "quality": {"type": "number", "description": f"Predicted quality ({_SCALE} scale)."},
            "grade": {
                "type": "integer",
                "minimum": TARGET_MINIMUM,
                "maximum": TARGET_MAXIMUM,
                "description": f"Quality rounded half up, clipped to {_SCALE}.",
            },
            "interval": _INTERVAL_SCHEMA,
            "base_value": {
                "type": "number",
                "description": "With `explain=1`: the model's prediction before any feature "
                "contributes (its mean over the training data for the tree ensembles, the "
                "prediction at the training means for linear models).",
            },
            "contributions": {
                "type": "object",
                "description": "With `explain=1`: how much each feature moved this prediction "
                "away from `base_value`, in grades; `base_value` plus their sum is `quality` "
                "(within 1e-6). docs/explanations.md describes the method.",
                "required": list(FEATURE_KEYS),
                "additionalProperties": False,
                "properties": {key: {"type": "number"} for key in FEATURE_KEYS},
            },
            "warnings": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Inputs outside the training range (still served).",
            },
        },
    }
    output = fixed["InferenceRequest"]["properties"]["outputs"]["items"]["properties"]["name"]
    output["enum"] = list(OUTPUTS)
    return {
        "Wine": _feature_schemas("name"),
        "WineSnakeCase": _feature_schemas("key"),
        "WineInput": {
            "oneOf": [{"$ref": _REF + "Wine"}, {"$ref": _REF + "WineSnakeCase"}],
            "description": (
                f"The {len(FEATURES)} features, named as in the data set or in snake_case."
            ),
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
        **fixed,
    }


def _predict_paths(settings: Settings) -> dict[str, Any]:
    csv_help = (
        f"Header row of feature names (either spelling, any order; a `quality` column is "
        f"ignored), ',' or ';' separated, at most {settings.max_batch_rows} rows. A cell is a "
        "plain decimal number (ASCII digits, optional sign, decimal point and exponent, spaces "
        "or tabs around); anything else, such as `3_4`, full-width digits or non-breaking "
        "spaces, is a 422 naming its line and column."
    )
    predict = {
        "summary": "Predict the quality of one wine, a JSON batch or a CSV batch",
        "description": (
            f"A JSON object with the {len(FEATURES)} features gives one prediction; "
            '`{"instances": [...]}` gives one per row, in order; a `text/csv` body gives one per '
            "row, as CSV when the `Accept` header prefers `text/csv`. Values outside the physical "
            "bounds are rejected (422); values outside the training range are served with a "
            f"warning. Batches above {settings.max_batch_rows} rows get 413; bodies above "
            f"{settings.max_body_bytes} bytes get 413, chunked ones too. A key given twice in "
            "one JSON object is a 400 naming it. Every prediction carries its interval; "
            "`explain=1` adds the reasons behind it."
        ),
        "parameters": [_EXPLAIN_PARAMETER],
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
                            "description": "quality,grade,quality_low,quality_high,"
                            "model_version,warnings (with explain=1 then base_value and "
                            "contribution_<key> per feature)",
                        }
                    },
                },
            },
            **_errors("Error", 400, 408, 411, 413, 415, 422, 503),
        },
    }
    return {
        "/v1/predict": {"post": {**predict, "operationId": "predict"}},
        "/predict": {
            "post": {
                **predict,
                "operationId": "predictLegacy",
                "description": "Same as /v1/predict (the seed paper's URL).",
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
_INFER_HELP = (
    f"Open Inference Protocol v2. Either one FP32/FP64 input of shape [N, {len(FEATURES)}] "
    f"whose columns are, in order: {', '.join(FEATURE_NAMES)}; or {len(FEATURES)} inputs of "
    "shape [N] named after the features (either spelling). A tensor's `data` is row-major: flat "
    "(as many numbers as the shape holds) or nested exactly as the shape says (one array level "
    "per dimension, each of that dimension's length); any other nesting is a 400 naming the "
    "input. Outputs: `quality` (FP64), `grade` (INT64) and the prediction interval's bounds "
    "`quality_low` and `quality_high` (FP64, its level in the tensors' `parameters.level`), "
    "shape [N]; `outputs` selects some. An input name or an output given twice is a 400 naming "
    f"it. The model name is `{MODEL_NAME}`; its version is in the "
    "model metadata. Content-Type: JSON, or none (read as JSON, as tritonclient sends none); "
    "the binary tensor data extension (Inference-Header-Content-Length) is supported for inputs "
    "and, with `parameters.binary_data`, for outputs."
)


def _v2_model_paths(
    template: dict[str, Any], prefix: str, parameters: list[dict[str, Any]]
) -> dict[str, Any]:
    """The model routes under `prefix` (by name, or by name and version), from fixed.json."""
    paths = {
        prefix + suffix: {"parameters": parameters, **item} for suffix, item in template.items()
    }
    infer = paths[f"{prefix}/infer"]
    post = infer["post"]
    infer["post"] = {"summary": post["summary"], "description": _INFER_HELP, **post}  # in order
    return paths


def _paths(settings: Settings, fixed: dict[str, Any]) -> dict[str, Any]:
    """fixed.json's path items in its order, its null ones generated."""
    model = "/v2/models/{model_name}"
    template = fixed["v2_model_paths"]
    generated = {
        **_predict_paths(settings),
        **_v2_model_paths(template, model, [_MODEL_NAME_PARAMETER]),
        **_v2_model_paths(
            template,
            f"{model}/versions/{{model_version}}",
            [_MODEL_NAME_PARAMETER, _MODEL_VERSION_PARAMETER],
        ),
    }
    slots = fixed["paths"]
    if {path for path, item in slots.items() if item is None} != generated.keys():
        raise RuntimeError("the null path items of fixed.json are not the generated ones")
    paths = {path: item or generated[path] for path, item in slots.items()}
    return _spell_out_errors(paths, fixed["errors"])


def _description(wine: str | None) -> str:
    """What the service predicts: the wine comes from the loaded model's metadata."""
    what = f"{wine} wine" if wine else "wine"
    return (
        f"Predicts the quality of {what} ({_SCALE}) from {len(FEATURES)} physico-chemical "
        "measurements."
    )


def openapi_spec(settings: Settings, wine: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route: fixed.json filled in from features.py, the
    settings and the model's `wine` (None while no model is loaded)."""
    fixed = _fixed()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": MODEL_NAME,
            "version": __version__,
            "description": _description(wine),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": _paths(settings, fixed),
        "components": {"schemas": _schemas(settings, fixed["schemas"])},
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
