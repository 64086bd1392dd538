"""The serving app, started as gunicorn starts it, loads no training code and none of the
training-only libraries (the image does not install them). pandas is not among those checked:
scikit-learn imports it whenever it is installed, as it is in the development venv."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, os, sys

class FirstImport:
    # whether gunicorn_conf had exported the metrics directory when prometheus_client was first
    # imported (the client picks its multiprocess mode from it then)
    exported = None

    def find_spec(self, name, path=None, target=None):
        if name == "prometheus_client" and FirstImport.exported is None:
            conf = sys.modules.get("wine_quality.app.gunicorn_conf")
            FirstImport.exported = hasattr(conf, "METRICS_DIR") and os.environ.get(
                "PROMETHEUS_MULTIPROC_DIR"
            ) == str(conf.METRICS_DIR)
        return None

sys.meta_path.insert(0, FirstImport())
from wine_quality.app import gunicorn_conf  # what gunicorn imports first
assert FirstImport.exported, "prometheus_client imported before PROMETHEUS_MULTIPROC_DIR is set"
from wine_quality.app import create_app
from wine_quality.app.settings import Settings
app = create_app(Settings.from_env({"WINE_QUALITY_MODEL_DIR": sys.argv[1]}))
assert app.test_client().get("/readyz").status_code == 200
files = os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])
assert f"counter_{os.getpid()}.db" in files, files  # the app's metrics are the workers' shared ones
print(json.dumps(sorted(sys.modules)))
"""


def test_the_serving_app_loads_no_training_module(small_model_dir: Path, tmp_path: Path):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(small_model_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert "wine_quality.app.web.views" in modules and "wine_quality.core.facts" in modules
    loaded = {m for m in modules if m.startswith("wine_quality.training")}
    assert not loaded
    assert not {"matplotlib", "skl2onnx", "onnx"} & {m.split(".")[0] for m in modules}
