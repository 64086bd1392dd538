"""scripts/e2e.sh, the steps of the CI e2e-kind job.

- podman path: the real image (built once per session, fixture `built_image`) under
  `podman kube play` (scripts/kube-play.sh): its UID, read-only root, smoke test, the chart's helm
  test script, and the pod torn down afterwards.
- kind path: no Docker engine or Kubernetes API server can run here, so `docker`, `kind`, `kubectl`
  and `helm` are stand-ins that record their arguments; `kubectl port-forward` starts the real
  service (gunicorn, the real model) on the forwarded port, so scripts/smoke-test.sh runs for real.
  These tests pin down the order and arguments of the cluster steps and the failure diagnostics.
"""

from __future__ import annotations

import itertools
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support import REPO, BuiltImage, require_tool

E2E = REPO / "scripts/e2e.sh"
IMAGE = "ghcr.io/owner/wine-quality:sha-1234567"

STAND_IN = """#!/usr/bin/env bash
# Stand-in for docker, kind, kubectl and helm: records its arguments, answers what e2e.sh asks.
name=$(basename "$0")
echo "$name $*" >> "$E2E_CALLS"
case "$name $1" in
  "helm upgrade")
    if [ -n "${FAIL_INSTALL:-}" ]; then echo "Error: context deadline exceeded" >&2; exit 1; fi ;;
  "kind get") printf '%s\\n' ${KIND_CLUSTERS:-} ;;
esac
case "$*" in
  *"jsonpath={.items[0].metadata.name}"*) echo wine-quality ;;
  *"jsonpath={.spec.ports[0].port}"*) echo 8080 ;;
  *port-forward*)
    for arg; do
      if [[ $arg =~ ^([0-9]+):([0-9]+)$ ]]; then port=${BASH_REMATCH[1]}; fi
    done
    exec "$WINE_QUALITY_BIN" serve --port "$port" --model-dir "$MODEL_DIR" ;;
esac
exit 0
"""


@pytest.fixture
def stand_ins(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    commands = {}
    for name in ("docker", "kind", "kubectl", "helm"):
        path = bin_dir / name
        path.write_text(STAND_IN)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        commands[name.upper()] = str(path)
    return commands


def run_kind_path(
    tmp_path: Path, model_dir: Path, stand_ins: dict[str, str], **env: str
) -> tuple[subprocess.CompletedProcess, list[str]]:
    calls = tmp_path / "calls.log"
    environ = {
        **os.environ,
        **stand_ins,
        "E2E_MODE": "kind",
        "IMAGE": IMAGE,
        "E2E_CALLS": str(calls),
        "MODEL_DIR": str(model_dir),
        "WINE_QUALITY_BIN": str(Path(sys.executable).with_name("wine-quality")),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "GUNICORN_WORKERS": "1",
        "SMOKE_READY_TIMEOUT": "60",
        **env,
    }
    result = subprocess.run([E2E], capture_output=True, text=True, env=environ, timeout=300)
    return result, calls.read_text().splitlines() if calls.exists() else []


def index(calls: list[str], prefix: str) -> int:
    matches = [number for number, call in enumerate(calls) if call.startswith(prefix)]
    assert matches, f"no call starting with {prefix!r} in {calls}"
    return matches[0]


def test_kind_path_installs_the_chart_and_smoke_tests_it(tmp_path, model_dir, stand_ins):
    require_tool("curl")
    result, calls = run_kind_path(tmp_path, model_dir, stand_ins)
    assert result.returncode == 0, result.stdout + result.stderr

    order = [
        index(calls, "kind create cluster --name wine-quality"),
        index(calls, f"kind load docker-image {IMAGE} --name wine-quality"),
        index(calls, "kubectl apply --server-side"),
        index(calls, "helm upgrade --install wine-quality chart/wine-quality"),
        index(calls, "helm test wine-quality --namespace wine-quality"),
        index(calls, "kubectl --namespace wine-quality port-forward service/wine-quality"),
    ]
    assert order == sorted(order)
    crds = [call for call in calls if call.startswith("kubectl apply")]
    assert any("monitoring.coreos.com_servicemonitors.yaml" in call for call in crds)
    assert all("prometheus-operator/v0." in call for call in crds)  # a pinned operator release
    install = calls[order[3]]
    for argument in (
        "image.repository=ghcr.io/owner/wine-quality",
        "image.tag=sha-1234567",
        "autoscaling.enabled=true",
        "serviceMonitor.enabled=true",
        "prometheusRule.enabled=true",
        "networkPolicy.enabled=true",
        "--wait",
    ):
        assert argument in install
    assert any("monitoring.coreos.com_prometheusrules.yaml" in call for call in crds)
    assert_install_values_admit_only_another_namespace_and_the_test_pod(install)
    assert "smoke test passed" in (result.stdout + result.stderr).lower()
    assert not any(" describe " in call for call in calls)


def assert_install_values_admit_only_another_namespace_and_the_test_pod(install: str) -> None:
    """The real chart, rendered with the values e2e.sh installs: the NetworkPolicy's peers are
    another namespace and the chart's `helm test` pod, so on kind `helm test` proves that rule."""
    helm = require_tool("helm")
    words = install.split()  # the stand-in logs "$*"; none of e2e.sh's arguments holds a space
    flags = [
        word
        for flag, arg in itertools.pairwise(words)
        if flag in ("--set", "--set-string")
        for word in (flag, arg)
    ]
    rendered = subprocess.run(
        [helm, "template", "wine-quality", str(REPO / "chart/wine-quality"), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    test_pod = next(d for d in docs if d["kind"] == "Pod")
    peers = policy["spec"]["ingress"][0]["from"]
    assert peers[0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }
    selector = peers[1]["podSelector"]["matchLabels"]
    assert selector.items() <= test_pod["metadata"]["labels"].items()
    assert any(d["kind"] == "PrometheusRule" for d in docs)


def test_kind_path_reuses_an_existing_cluster(tmp_path, model_dir, stand_ins):
    # The install fails on purpose: this test is about the cluster step only.
    result, calls = run_kind_path(
        tmp_path, model_dir, stand_ins, KIND_CLUSTERS="other wine-quality", FAIL_INSTALL="1"
    )
    assert "reusing kind cluster wine-quality" in result.stderr
    assert not any(call.startswith("kind create") for call in calls)
    assert index(calls, "kind load docker-image") < index(calls, "helm upgrade")


def test_kind_path_failure_dumps_describe_and_logs(tmp_path, model_dir, stand_ins):
    result, calls = run_kind_path(tmp_path, model_dir, stand_ins, FAIL_INSTALL="1")
    assert result.returncode != 0
    assert "context deadline exceeded" in result.stderr
    assert "e2e: failed; state of namespace wine-quality follows" in result.stderr
    describe = index(calls, "kubectl --namespace wine-quality describe")
    logs = index(calls, "kubectl --namespace wine-quality logs")
    assert describe > index(calls, "helm upgrade")
    assert "--all-containers" in calls[logs]
    assert not any(call.startswith("helm test") for call in calls)


def test_unknown_mode_is_refused():
    result = subprocess.run(
        [E2E],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "E2E_MODE": "minikube"},
    )
    assert result.returncode == 2
    assert "E2E_MODE must be auto, kind or podman, not 'minikube'" in result.stderr


@pytest.mark.slow
@pytest.mark.container
def test_podman_path_runs_the_chart_with_the_real_image(built_image: BuiltImage):
    require_tool("helm")
    require_tool("curl")
    podman = require_tool("podman")
    result = subprocess.run(
        [E2E],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "E2E_MODE": "podman", "IMAGE": built_image.name},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "no Docker engine: running the chart under podman kube play" in output
    # scripts/kube-play.sh's checks of the running pod
    assert "uid:gid 10001:10001, read-only root file system, writable /tmp" in output
    assert "WINE_QUALITY_SECRET_KEY from the chart's Secret: 48 characters" in output
    # ... and the run's podman secret is removed with the pod.
    secrets = subprocess.run(
        [podman, "secret", "ls", "--format", "{{.Name}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    release = re.search(r"as release (kube-play-\d+) ", output).group(1)
    assert not [name for name in secrets if name.startswith(f"{release}-")]
    assert "smoke test passed" in output
    assert re.search(r"helm test script passed: .*\"quality\"", output)
    assert "kube-play: passed" in output
    # Torn down: the run's pod is gone.
    pod = re.search(r"kube-play: pod (\S+)", output).group(1)
    pods = subprocess.run(
        [podman, "pod", "ps", "--format", "{{.Name}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert pod not in pods
