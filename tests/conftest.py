"""Fixtures shared by the whole suite: where the data is, a trained artifact, required tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOOLS_BIN = REPO / ".tools" / "bin"


def require_tool(name: str) -> str:
    """Path of the command `name`; skips the test on a developer machine without it, fails in CI."""
    found = shutil.which(name, path=f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found:
        return found
    message = f"{name} is not installed (scripts/install-tools.sh installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


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


@pytest.fixture(scope="session")
def model_dir(data_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real red-wine artifact, trained once per session with the project's own command."""
    output = tmp_path_factory.mktemp("artifact") / "model"
    subprocess.run(
        [sys.executable, "-m", "wine_quality.cli", "train",
         "--data-dir", str(data_source), "--output", str(output)],
        check=True,
    )
    return output


@pytest.fixture(scope="session")
def loaded_model(model_dir: Path):
    """The `model_dir` artifact loaded through the service's verified loader."""
    from wine_quality.artifact import load_artifact

    return load_artifact(model_dir)


@pytest.fixture
def make_app(loaded_model):
    """Build the Flask app around the real loaded model, with settings overrides."""
    from wine_quality.app import create_app
    from wine_quality.settings import Settings

    def make(**overrides):
        settings = Settings.from_env({}).replace(**overrides)
        return create_app(settings, model=loaded_model)

    return make


@pytest.fixture
def api_client(make_app):
    """A Flask test client of the app with default settings."""
    return make_app().test_client()
