"""What tests share besides fixtures: paths, the seed paper's example wine, tool lookup.

Tests import these from here, not from conftest (pytest's advice: conftest is for fixtures).
"""

from __future__ import annotations

import os
import shutil
import subprocess
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


def sample_intervals() -> dict:
    """A valid `intervals` block of metadata.json, for hand-made artifacts and metadata."""
    from wine_quality.core.features import FEATURES

    return {
        "level": 0.8,
        "quantile": 1.5,
        "difficulty": {
            "intercept": 0.5,
            "weights": {f.key: 0.0 for f in FEATURES},
            "prediction_weight": 0.0,
            "floor": 0.05,
            "ceiling": 1.0,
        },
        "coverage_test": 0.8,
        "mean_width_test": 1.5,
        "method": "normalised cross-conformal",
    }
