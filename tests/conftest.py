"""Fixtures shared by the whole suite: where the data is, a trained artifact, required tools."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gunicorn_server import GunicornServer
from support import REPO, BuiltImage, git_head, project_version, require_tool


@pytest.fixture(scope="session")
def data_source() -> Path:
    """Folder holding winequality-red.csv and winequality-white.csv."""
    default = REPO.parent / "shared" / "data" / "wine-quality"
    folder = Path(os.environ.get("WINE_QUALITY_DATA_SOURCE") or default)
    if not (folder / "winequality-red.csv").is_file():
        message = f"UCI data not found in {folder}; set WINE_QUALITY_DATA_SOURCE"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return folder


def _train(data_source: Path, output: Path, *options: str) -> Path:
    command = [sys.executable, "-m", "wine_quality.cli", "train", "--quiet"]
    command += ["--data-dir", str(data_source), "--output", str(output), *options]
    subprocess.run(command, check=True)
    return output


@pytest.fixture(scope="session")
def model_dir(data_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real red-wine artifact: every candidate, 5-fold CV (about 25 s), trained once per
    session with the project's own command. For tests where the promoted model itself matters."""
    return _train(data_source, tmp_path_factory.mktemp("artifact") / "model")


@pytest.fixture(scope="session")
def small_model_dir(data_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete, verified artifact in about 3 s (ridge regression, 2 folds) through the same
    command and gate: for protocol and validation tests, which need a model, not the best one."""
    return _train(
        data_source,
        tmp_path_factory.mktemp("small") / "model",
        "--candidates",
        "ridge",
        "--folds",
        "2",
    )


@pytest.fixture(scope="module")
def small_model_server(
    small_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GunicornServer]:
    """The service under gunicorn (2 workers) serving the small model, one per test module."""
    server = GunicornServer.start(
        small_model_dir, tmp_path_factory.mktemp("server"), GUNICORN_SHUTDOWN_DELAY="0"
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def built_image(model_dir: Path) -> BuiltImage:
    """The project's image, built once per session by `scripts/image.sh build` under podman (where
    `podman kube play` looks for it) from the `model_dir` artifact, mostly from the build cache."""
    require_tool("podman")
    image = BuiltImage(f"localhost/wine-quality:{project_version()}", git_head())
    env = {
        **os.environ,
        "CONTAINER_ENGINE": "podman",
        "IMAGE": image.name,
        "MODEL_DIR": str(model_dir),
        "CONTAINERS_CONF": str(REPO / "scripts" / "podman" / "containers.conf"),
    }
    result = subprocess.run(
        [REPO / "scripts" / "image.sh", "build"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, (
        f"image.sh build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return image


@pytest.fixture(scope="session")
def loaded_model(small_model_dir: Path):
    """The `small_model_dir` artifact loaded through the service's verified loader."""
    from wine_quality.core.artifact import load_artifact

    return load_artifact(small_model_dir)


@pytest.fixture
def make_app(loaded_model):
    """Build the Flask app around the real loaded model, with settings overrides."""
    from wine_quality.app import create_app
    from wine_quality.app.settings import Settings

    def make(**overrides):
        settings = dataclasses.replace(Settings.from_env({}), **overrides)
        return create_app(settings, model=loaded_model)

    return make


@pytest.fixture
def api_client(make_app):
    """A Flask test client of the app with default settings."""
    return make_app().test_client()
