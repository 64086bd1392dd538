"""The peer model server of the benchmark: MLflow's `mlflow models serve --env-manager local`.

MLflow is installed into its own virtual environment under .cache/bench/ (never a dependency of
the project), with the project's exact numpy / SciPy / scikit-learn / joblib versions so it
unpickles the very same model.joblib. `export_model` converts that file into an MLflow model
directory (sklearn flavour, pickle format, tensor signature) and `serve_command` starts MLflow's
scoring server (uvicorn) with as many workers as the service has.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from importlib import metadata as importlib_metadata
from pathlib import Path

MLFLOW_REQUIREMENT = "mlflow-skinny==3.17.2"
# Pinned to the project's installed versions, so the peer loads the identical pickled model.
SHARED_PACKAGES = ("numpy", "scipy", "scikit-learn", "joblib", "threadpoolctl", "pandas")
INSTALL_TIMEOUT = 600

_EXPORT = """
import sys
import joblib
import numpy as np
import mlflow.sklearn
from mlflow.models import infer_signature

model = joblib.load(sys.argv[1])
rows = np.asarray([[float(v) for v in row] for row in __import__("json").loads(sys.argv[3])])
mlflow.sklearn.save_model(model, sys.argv[2], serialization_format="pickle",
                          signature=infer_signature(rows, model.predict(rows)))
"""


def requirements() -> list[str]:
    pinned = [f"{name}=={importlib_metadata.version(name)}" for name in SHARED_PACKAGES]
    return [MLFLOW_REQUIREMENT, *pinned]


def ensure_venv(directory: Path, log: Path) -> Path:
    """The peer's virtual environment (created or updated when its requirements changed)."""
    wanted = requirements()
    marker = directory / "bench-requirements.json"
    python = directory / "bin" / "python"
    if python.exists() and marker.is_file() and json.loads(marker.read_text()) == wanted:
        return directory
    print(f"installing the peer server into {directory}: {' '.join(wanted)}", file=sys.stderr)
    venv.EnvBuilder(with_pip=True, clear=True).create(directory)
    with log.open("w") as out:
        subprocess.run(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", *wanted],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=INSTALL_TIMEOUT,
        )
    marker.write_text(json.dumps(wanted))
    return directory


def version(directory: Path) -> str:
    out = subprocess.run(
        [str(directory / "bin" / "python"), "-c", "import mlflow; print(mlflow.__version__)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return out.stdout.strip()


def export_model(directory: Path, model_file: Path, output: Path, sample_rows: list) -> Path:
    """Write an MLflow model directory holding the model of `model_file`."""
    if output.exists():
        import shutil

        shutil.rmtree(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            str(directory / "bin" / "python"),
            "-c",
            _EXPORT,
            str(model_file),
            str(output),
            json.dumps(sample_rows),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"exporting {model_file} to MLflow failed: {done.stderr[-2000:]}")
    return output


def serve_command(directory: Path, model: Path, port: int, workers: int) -> list[str]:
    return [
        str(directory / "bin" / "mlflow"),
        "models",
        "serve",
        "-m",
        str(model),
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        str(workers),
    ]


def serve_env(directory: Path, base: dict[str, str]) -> dict[str, str]:
    """MLflow runs `uvicorn` from PATH: put the peer's bin first."""
    return {**base, "PATH": f"{directory / 'bin'}:{base.get('PATH', '')}"}
