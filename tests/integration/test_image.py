"""The container image, built and run under podman with the project's own scripts.

`scripts/image.sh build` builds the Dockerfile from the session's freshly trained artifact (the
session fixture `built_image`); `scripts/image.sh test` runs it the way the chart does (UID 10001,
read-only root file system, tmpfs /tmp, the chart's environment), smoke-tests it and stops it with
SIGTERM. The tests below
check what the image promises: its metadata, that it ships exactly the trained artifact, and that
the runtime user can write nothing outside /tmp.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from support import REPO, BuiltImage, project_version, require_tool

pytestmark = [pytest.mark.container, pytest.mark.slow]

IMAGE_SH = REPO / "scripts" / "image.sh"


@pytest.fixture(scope="module")
def podman() -> str:
    return require_tool("podman")


@pytest.fixture(scope="module")
def image(built_image: BuiltImage) -> str:
    return built_image.name


@pytest.fixture(scope="module")
def engine_env(podman: str, image: str, model_dir: Path) -> dict[str, str]:
    """image.sh forced onto podman (a Docker engine may answer too) and this session's artifact."""
    return {
        **os.environ,
        "CONTAINER_ENGINE": "podman",
        "CONTAINERS_CONF": str(REPO / "scripts" / "podman" / "containers.conf"),
        "IMAGE": image,
        "MODEL_DIR": str(model_dir),
    }


@pytest.fixture(scope="module")
def inspected(podman: str, image: str) -> dict:
    out = subprocess.run(
        [podman, "image", "inspect", image], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)[0]


def run_in_image(
    podman: str, image: str, env: dict[str, str], *command: str, read_only: bool = True
) -> str:
    """Runs `command` in a throw-away container of the image as its own user; returns stdout."""
    options = ["--rm", "--no-healthcheck", *(["--read-only"] if read_only else [])]
    result = subprocess.run(
        [podman, "run", *options, "--entrypoint", command[0], image, *command[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{command} failed in the image: {result.stderr[-2000:]}"
    return result.stdout


def test_image_labels_name_version_commit_and_model(
    inspected: dict, model_dir: Path, built_image: BuiltImage
):
    labels = inspected["Labels"]
    metadata = json.loads((model_dir / "metadata.json").read_text())
    commit = built_image.commit

    assert labels["org.opencontainers.image.version"] == project_version()
    assert labels["org.opencontainers.image.revision"] in (commit, f"{commit}-dirty")
    assert labels["io.github.wine-quality.model.version"] == metadata["version"]
    assert labels["org.opencontainers.image.title"] == "wine-quality"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://github.com/")
    datetime.fromisoformat(labels["org.opencontainers.image.created"].replace("Z", "+00:00"))
    env = dict(item.split("=", 1) for item in inspected["Config"]["Env"])
    assert env["WINE_QUALITY_MODEL_VERSION"] == metadata["version"]
    assert env["WINE_QUALITY_GIT_COMMIT"] == labels["org.opencontainers.image.revision"]


def test_image_runs_gunicorn_as_uid_10001_on_port_8080(inspected: dict):
    config = inspected["Config"]
    assert config["User"] == "10001:10001"
    assert set(config["ExposedPorts"]) == {"8080/tcp"}
    assert config["WorkingDir"] == "/app"
    assert config["Entrypoint"] == [
        "/opt/venv/bin/gunicorn",
        "-c",
        "python:wine_quality.app.gunicorn_conf",
    ]
    assert config["Cmd"] == ["wine_quality.app:create_app()"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["WINE_QUALITY_MODEL_DIR"] == "/app/model"
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert inspected["Healthcheck"]["Test"][0] == "CMD"
    assert "/readyz" in inspected["Healthcheck"]["Test"][-1]


def test_image_ships_exactly_the_trained_artifact(
    podman: str, image: str, engine_env: dict[str, str], model_dir: Path
):
    listing = run_in_image(
        podman,
        image,
        engine_env,
        "python3",
        "-c",
        (
            "import hashlib, json, pathlib; root = pathlib.Path('/app/model'); print(json.dumps({"
            "str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()"
            " for p in root.rglob('*') if p.is_file()}))"
        ),
    )
    expected = {
        str(p.relative_to(model_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in model_dir.rglob("*")
        if p.is_file() and p.name != "model.joblib"  # the service never unpickles: no pickle
    }
    assert json.loads(listing) == expected


def test_image_has_no_scikit_learn_scipy_or_joblib(
    podman: str, image: str, engine_env: dict[str, str]
):
    found = run_in_image(
        podman,
        image,
        engine_env,
        "python3",
        "-c",
        "import importlib.util as u; "
        "print(*[m for m in ('sklearn', 'scipy', 'joblib', 'onnxruntime') if u.find_spec(m)])",
    )
    assert found.split() == ["onnxruntime"]


def test_runtime_user_can_write_nothing_in_app_or_venv_and_has_no_build_tools(
    podman: str, image: str, engine_env: dict[str, str]
):
    # No --read-only here: the image's own file modes must keep the code and model immutable.
    script = (
        "find /app /opt/venv -writable; for tool in gcc cc make; do command -v $tool; done; "
        "test -e /opt/venv/bin/pip && echo /opt/venv/bin/pip; true"
    )
    found = run_in_image(podman, image, engine_env, "sh", "-c", script, read_only=False)
    assert found.split() == []


def test_image_serves_smoke_test_and_stops_gracefully_on_sigterm(
    image: str, engine_env: dict[str, str]
):
    require_tool("curl")
    result = subprocess.run(
        [IMAGE_SH, "test"], env=engine_env, capture_output=True, text=True, timeout=600, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"image.sh test failed:\n{output[-4000:]}"
    assert "smoke test passed" in output
    assert "exit status 0" in output
