"""No code runs from a model file, and a bad metadata field makes the server not ready, never
broken: each case against the real gunicorn server.

- A pickle that writes a marker file when unpickled, with its sha256 updated in metadata.json (as
  anyone who can write the model directory could): the server runs the ONNX export and never
  unpickles it, also when the metadata claims there is no ONNX model.
- Metadata that parses but is wrong (a field of the wrong type or shape): /readyz 503 naming the
  field, /healthz 200, every page answers (no 500), the process stays up.
- The serving app works with scikit-learn, SciPy and joblib impossible to import (the image has
  none of them).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from gunicorn_server import GunicornServer
from support import PAPER_ROW
from wine_quality.core.features import FEATURE_NAMES

pytestmark = pytest.mark.slow

WINE = dict(zip(FEATURE_NAMES, PAPER_ROW, strict=True))
PAGES = (
    "/",
    "/batch",
    "/docs",
    "/openapi.json",
    "/v1/model",
    "/metrics",
    "/healthz",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/wine-quality",
)


class ArmedPickle:
    """Unpickling this writes the marker file: what a malicious model.joblib would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def private_copy(model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)  # the files of the version the link names
    return copy


def edit_metadata(directory: Path, change: Callable[[dict], object]) -> None:
    path = directory / "metadata.json"
    metadata = json.loads(path.read_text())
    change(metadata)
    path.write_text(json.dumps(metadata))


def plant_armed_pickle(directory: Path, marker: Path) -> None:
    """Replace model.joblib with the armed pickle and record its real sha256."""
    data = pickle.dumps(ArmedPickle(marker))
    (directory / "model.joblib").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    edit_metadata(directory, lambda m: m["model_file"].update(sha256=digest))


def test_the_armed_pickle_is_armed(small_model_dir: Path, tmp_path: Path):
    """The explicit sklearn runtime does unpickle it, and the code runs: the other tests would
    notice if the server ever did the same."""
    model = private_copy(small_model_dir, tmp_path)
    marker = tmp_path / "marker"
    plant_armed_pickle(model, marker)
    probe = (
        "import sys; from wine_quality.core.artifact import load_artifact\n"
        "try: load_artifact(sys.argv[1], 'sklearn')\n"
        "except Exception as error: print(error)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(model)], capture_output=True, text=True, timeout=120
    )
    assert marker.read_text() == "code ran"
    assert "holds a NoneType, not a model" in result.stdout


@pytest.fixture
def pickle_server(small_model_dir: Path, tmp_path: Path, request):
    """The server on an artifact with the armed pickle; request.param edits the metadata too."""
    model = private_copy(small_model_dir, tmp_path)
    marker = tmp_path / "marker"
    plant_armed_pickle(model, marker)
    if request.param:
        edit_metadata(model, request.param)
    server = launch(model, tmp_path)
    yield server, marker
    server.stop()


def launch(directory: Path, tmp_path: Path, **env: str) -> GunicornServer:
    """gunicorn (one worker) on `directory`, up once its worker has booted, ready or not."""
    folder = tmp_path / "server"
    folder.mkdir()
    return GunicornServer.start(directory, folder, 120, ready=False, GUNICORN_WORKERS="1", **env)


@pytest.mark.parametrize("pickle_server", [None], indirect=True)
def test_server_never_unpickles_an_armed_pickle_with_a_matching_checksum(pickle_server):
    server, marker = pickle_server
    ready = requests.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["runtime"] == "onnx"
    answer = requests.post(f"{server.url}/predict", json=WINE, timeout=10)
    assert answer.status_code == 200 and 3 < answer.json()["quality"] < 8
    assert not marker.exists()


def claim_no_onnx(metadata: dict) -> None:
    metadata["runtimes"] = {"onnx": None, "reason": "export failed"}


@pytest.mark.parametrize("pickle_server", [claim_no_onnx], indirect=True)
def test_metadata_claiming_no_onnx_does_not_make_the_server_unpickle(pickle_server):
    server, marker = pickle_server
    ready = requests.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 503
    message = ready.json()["error"]["message"]
    assert "no ONNX model (export failed)" in message and "never unpickles model.joblib" in message
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert requests.post(f"{server.url}/predict", json=WINE, timeout=10).status_code == 503
    assert server.process.poll() is None
    assert not marker.exists()


def quantiles_as_a_list(metadata: dict) -> None:
    metadata["features"][3]["quantiles"] = [1.0, 2.0, 3.0]


def train_min_not_a_number(metadata: dict) -> None:
    metadata["features"][0]["train_min"] = "low"


def features_of_the_wrong_kind(metadata: dict) -> None:
    metadata["features"] = ["x", 1]


MALFORMED = {
    "target: 5.6": (lambda m: m.update(target=5.6), "target must be an object, got 5.6"),
    'features: ["x", 1]': (features_of_the_wrong_kind, "features[0] must be an object"),
    "train_min not a number": (train_min_not_a_number, "features[0].train_min must be a finite"),
    'data: "oops"': (lambda m: m.update(data="oops"), "data must be an object"),
    "quantiles as a list": (quantiles_as_a_list, "features[3].quantiles must be an object"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_metadata_is_not_ready_with_the_field_named_and_every_page_answers(
    case: str, small_model_dir: Path, tmp_path: Path
):
    change, reason = MALFORMED[case]
    model = private_copy(small_model_dir, tmp_path)
    edit_metadata(model, change)
    server = launch(model, tmp_path)
    try:
        ready = requests.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert reason in ready.json()["error"]["message"]
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
        for page in PAGES:
            answer = requests.get(f"{server.url}{page}", timeout=10)
            assert answer.status_code in (200, 503), (page, answer.status_code)
            assert answer.content, page
        index = requests.get(f"{server.url}/", timeout=10)
        assert "text/html" in index.headers["Content-Type"] and reason in index.text
        predicted = requests.post(
            f"{server.url}/v1/predict", json={"instances": [WINE]}, timeout=10
        )
        assert predicted.status_code == 503 and reason in predicted.json()["error"]["message"]
        tensor = {"name": "input-0", "shape": [1, 11], "datatype": "FP64", "data": list(PAPER_ROW)}
        inferred = requests.post(
            f"{server.url}/v2/models/wine-quality/infer", json={"inputs": [tensor]}, timeout=10
        )
        assert inferred.status_code == 503 and reason in inferred.json()["error"]
        for page in ("/", "/batch"):  # the page's posts: a readable page, not gunicorn's 500
            posted = requests.post(f"{server.url}{page}", data={"x": "1"}, timeout=10)
            assert posted.status_code == 503 and reason in posted.text, page
            assert "text/html" in posted.headers["Content-Type"]
        assert server.process.poll() is None
    finally:
        assert server.stop() == 0


SERVE_WITHOUT_SKLEARN = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"sklearn", "scipy", "joblib"}:
            raise ImportError(f"{name} is not installed in the image")
sys.meta_path.insert(0, Refuse())
from wine_quality.app import create_app
from wine_quality.app.settings import Settings
client = create_app(Settings.from_env({"WINE_QUALITY_MODEL_DIR": sys.argv[1]})).test_client()
ready = client.get("/readyz")
assert ready.status_code == 200, ready.get_json()
row = dict(zip(sys.argv[2].split("|"), map(float, sys.argv[3].split("|"))))
answer = client.post("/predict", json=row)
assert answer.status_code == 200, answer.get_json()
assert not {"sklearn", "scipy", "joblib"} & {m.split(".")[0] for m in sys.modules}
print(answer.get_json()["quality"])
"""


def test_serving_needs_no_scikit_learn_scipy_or_joblib(model_dir: Path, tmp_path: Path):
    model = private_copy(model_dir, tmp_path)
    (model / "model.joblib").unlink()  # as in the image
    (tmp_path / "metrics").mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVE_WITHOUT_SKLEARN,
            str(model),
            "|".join(FEATURE_NAMES),
            "|".join(map(str, PAPER_ROW)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert 3 < float(result.stdout.strip().splitlines()[-1]) < 8
