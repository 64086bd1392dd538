"""The chart's two tracks under `podman kube play` with the real image: the stable and the
canary Deployment, each with its settings, and the stable pods scoring a shadow model.

podman 4.3 sometimes starts a pod's containers before its init container has finished (the bug
that also makes it fail on "once" init containers), so the stable pods here take their shadow
from their own image (`WINE_QUALITY_SHADOW_MODEL_DIR=/app/model`) instead of through
`canary.shadowOfStable`'s init container; tests/chart/test_chart.py checks that wiring in the
rendered manifests. (No Kubernetes API server can run here; the Service's traffic split needs one
and runs only in the workflow's kind job.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests
import yaml

from gunicorn_server import free_port
from support import REPO, BuiltImage, require_tool
from wine_quality.app.metrics import FLUSH_SECONDS

pytestmark = [pytest.mark.container, pytest.mark.slow]

CHART = REPO / "chart" / "wine-quality"
CONTAINERS_CONF = REPO / "scripts" / "podman" / "containers.conf"
READY_SECONDS = 120


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_tool("podman"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=check,
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
    )


def wait_ready(url: str) -> dict:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        try:
            answer = requests.get(url + "/readyz", timeout=3)
            if answer.status_code == 200:
                return answer.json()
        except requests.RequestException:
            pass
        time.sleep(1)
    pytest.fail(f"{url}/readyz not ready within {READY_SECONDS} s")


@pytest.fixture(scope="module")
def tracks(built_image: BuiltImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """{"stable": URL, "canary": URL}, both pods of one `podman kube play` of the chart."""
    folder = tmp_path_factory.mktemp("canary-play")
    repository, tag = built_image.name.rsplit(":", 1)
    release = f"canary-{os.getpid()}"
    rendered = subprocess.run(
        [
            require_tool("helm"), "template", release, str(CHART),
            "--values", str(CHART / "ci" / "canary-values.yaml"),
            "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
            "--set", "image.pullPolicy=Never", "--set", f"canary.image.tag={tag}",
            "--set", "canary.shadowOfStable=false",
            "--set", "extraEnv[0].name=WINE_QUALITY_SHADOW_MODEL_DIR",
            "--set", "extraEnv[0].value=/app/model",
        ],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    (folder / "rendered.yaml").write_text(rendered)
    ports = {"stable": free_port(), "canary": free_port()}
    manifest = folder / "play.yaml"
    subprocess.run(
        [
            sys.executable, str(REPO / "scripts" / "manifests.py"), "kube-play",
            str(folder / "rendered.yaml"), str(manifest),
            "--host-port", str(ports["stable"]), "--canary-port", str(ports["canary"]),
            "--secrets", str(folder / "secrets"),
        ],
        check=True, timeout=60,
    )  # fmt: skip
    secrets = []
    for file in sorted((folder / "secrets").glob("*.json")):
        podman("secret", "rm", file.stem, check=False)
        podman("secret", "create", file.stem, str(file))
        secrets.append(file.stem)
    try:
        played = podman("kube", "play", str(manifest), check=False)
        assert played.returncode == 0, played.stdout + played.stderr
        yield {track: f"http://127.0.0.1:{port}" for track, port in ports.items()}
    finally:
        podman("kube", "down", str(manifest), check=False)
        for name in secrets:
            podman("secret", "rm", name, check=False)


def test_both_tracks_run_and_the_stable_pods_score_a_shadow(tracks):
    stable, canary = wait_ready(tracks["stable"]), wait_ready(tracks["canary"])
    assert stable["model_version"] == canary["model_version"]  # one image here, for both tracks
    shadow = requests.get(tracks["stable"] + "/v1/model", timeout=10).json()["shadow"]
    assert shadow["loaded"] is True, shadow
    assert shadow["version"] == canary["model_version"]

    wine = yaml.safe_load((CHART / "values.yaml").read_text())["tests"]["sample"]
    answers = [requests.post(url + "/v1/predict", json=wine, timeout=30) for url in tracks.values()]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json()["quality"] == answers[1].json()["quality"]
    assert requests.post(tracks["stable"] + "/v1/predict", json=wine, timeout=30).ok
    # the stable pod's shadow scores its two rows off the request path, within moments
    deadline = time.monotonic() + 10
    while metric(tracks["stable"], "wine_quality_shadow_predictions_total") < 2:
        assert time.monotonic() < deadline, "the shadow did not score the stable pod's rows"
        time.sleep(0.05)
    assert metric(tracks["stable"], "wine_quality_shadow_predictions_total") == 2
    # Each pod counts its own rows only: the tracks share no metrics directory. Every worker
    # writes its counts within FLUSH_SECONDS of a request.
    time.sleep(FLUSH_SECONDS + 0.5)
    assert metric(tracks["stable"], "wine_quality_predictions_total") == 2
    assert metric(tracks["canary"], "wine_quality_predictions_total") == 1


def metric(url: str, name: str) -> float:
    """The value of the unlabelled metric `name` as the pod reports it."""
    answer = requests.get(url + "/metrics", timeout=10)
    assert answer.status_code == 200, answer.text[:500]
    for line in answer.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    pytest.fail(f"{url}/metrics has no {name}:\n{answer.text[:2000]}")
