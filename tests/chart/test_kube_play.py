"""The chart's workload run with the real image under `podman kube play` (scripts/kube-play.sh).

No Kubernetes API server can run on the project's development machines; podman runs the rendered
Deployment and its ConfigMap as a pod instead, which proves the chart's port, probe paths, env
variable names, UID and read-only root file system work with the image. The kind cluster of the CI
workflow (scripts/e2e.sh) covers the rest (Service, HPA, helm test).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, require_tool

KUBE_PLAY = REPO / "scripts" / "kube-play.sh"


def version() -> str:
    return subprocess.run([REPO / "scripts" / "version.sh"], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(scope="session")
def local_image(request: pytest.FixtureRequest) -> str:
    """localhost/wine-quality:<version>, built from the session's artifact when it is missing."""
    podman = require_tool("podman")
    image = f"localhost/wine-quality:{version()}"
    exists = subprocess.run([podman, "image", "exists", image], check=False).returncode == 0
    if not exists:
        model_dir: Path = request.getfixturevalue("model_dir")  # trains only when needed
        subprocess.run([REPO / "scripts" / "image.sh", "build"], check=True, timeout=1800,
                       env={**os.environ, "IMAGE": image, "MODEL_DIR": str(model_dir)})
    return image


def test_kube_play_manifest_keeps_what_podman_runs_and_publishes_http(tmp_path):
    helm = require_tool("helm")
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(subprocess.run(
        [helm, "template", "kp", str(REPO / "chart" / "wine-quality"),
         "--values", str(REPO / "chart" / "wine-quality" / "ci" / "all-on-values.yaml")],
        capture_output=True, text=True, check=True).stdout)
    out = tmp_path / "play.yaml"
    subprocess.run([sys.executable, REPO / "scripts" / "manifests.py", "kube-play", rendered, out,
                    "--host-port", "18080"], check=True)
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in docs][-1] == "Deployment"
    assert {d["kind"] for d in docs} == {"ConfigMap", "Deployment"}
    deployment = docs[-1]
    assert deployment["spec"]["replicas"] == 1
    port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]
    assert (port["name"], port["hostPort"], port["hostIP"]) == ("http", 18080, "127.0.0.1")


def test_kube_play_names_a_missing_image():
    require_tool("podman")
    result = subprocess.run([KUBE_PLAY], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "IMAGE": "wine-quality:no-such-tag"})
    assert result.returncode == 1
    assert "image localhost/wine-quality:no-such-tag not found" in result.stderr


@pytest.mark.slow
@pytest.mark.container
def test_chart_workload_runs_under_podman_kube_play(local_image):
    require_tool("helm")
    require_tool("curl")
    podman = require_tool("podman")
    result = subprocess.run([KUBE_PLAY], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "IMAGE": local_image})
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert "uid:gid 10001:10001, read-only root file system, writable /tmp" in log
    assert "smoke test passed" in log
    assert re.search(r"helm test script passed: .*\"quality\"", log)
    assert "kube-play: passed" in log
    # Torn down: the run's pod is gone.
    pod = re.search(r"kube-play: pod (\S+)", log).group(1)
    pods = subprocess.run([podman, "pod", "ps", "--format", "{{.Name}}"], capture_output=True,
                          text=True, check=True).stdout.split()
    assert pod not in pods
