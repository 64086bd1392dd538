"""Fixtures shared by the whole suite: where the data is, a trained artifact, required tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parent.parent
TOOLS_BIN = REPO / ".tools" / "bin"

# The seed paper's curl example: the first row of the red-wine file, in FEATURES order.
PAPER_ROW = (7.4, 0.7, 0.0, 1.9, 0.076, 11.0, 34.0, 0.9978, 3.51, 0.56, 9.4)


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
        [
            sys.executable,
            "-m",
            "wine_quality.cli",
            "train",
            "--data-dir",
            str(data_source),
            "--output",
            str(output),
        ],
        check=True,
    )
    return output


def project_version() -> str:
    return subprocess.run(
        [REPO / "scripts" / "version.sh"], capture_output=True, text=True, check=True
    ).stdout.strip()


def git_head() -> str:
    return (
        subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()
        or "unknown"
    )


class BuiltImage(NamedTuple):
    name: str  # localhost/wine-quality:<version>, in podman's image store
    commit: str  # the commit checked out when it was built


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
