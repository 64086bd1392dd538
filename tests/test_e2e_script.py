"""scripts/e2e.sh, the steps of the CI e2e-kind job.

- podman path: the real image (built once per session, fixture `built_image`) under
  `podman kube play` (scripts/kube-play.sh): its UID, read-only root, smoke test, the chart's helm
  test script, and the pod torn down afterwards.
  A real Prometheus then scrapes the pod as the chart's rendered ServiceMonitor says.
- kind path: no Docker engine or Kubernetes API server can run here, so `docker`, `kind`, `kubectl`,
  `helm` and (for the metrics-server download) `curl` are stand-ins that record their arguments;
  `kubectl port-forward service/...` starts the real service (gunicorn, the real model) on the
  forwarded port, so scripts/smoke-test.sh runs for real, and `kubectl port-forward pod/...` relays
  to it, so the real Prometheus scrapes it; `helm get manifest` renders the real chart with the
  values `helm upgrade` was given. These tests pin down the order and arguments of the cluster
  steps, the metrics-server download check, the HPA wait and the failure diagnostics.
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

POD = "wine-quality-7d9c5b8f4-x2x7q"

STAND_IN = """#!/usr/bin/env bash
# Stand-in for docker, kind, kubectl, helm and curl: records its arguments, answers e2e.sh.
name=$(basename "$0")
echo "$name $*" >> "$E2E_CALLS"
case "$name $1" in
  "helm upgrade")
    if [ -n "${FAIL_INSTALL:-}" ]; then echo "Error: context deadline exceeded" >&2; exit 1; fi ;;
  "kind get") printf '%s\\n' ${KIND_CLUSTERS:-} ;;
  "kubectl get") [[ $2 != apiservice || -n ${METRICS_API:-} ]] || exit 1 ;;
  "curl -fsSL") echo "not the pinned file" > "$5"; exit 0 ;;
  "helm get")
    # What `helm upgrade` installed: the real chart, rendered with the values it was given.
    read -ra words <<< "$(grep '^helm upgrade ' "$E2E_CALLS" | tail -n 1)"
    values=()
    for ((i = 4; i < ${#words[@]}; i++)); do
      case ${words[i]} in
        --set | --set-string | --namespace) values+=("${words[i]}" "${words[i + 1]}") ;;
      esac
    done
    exec "$REAL_HELM" template "${words[3]}" "${words[4]}" "${values[@]}" ;;
esac
case "$*" in
  *"jsonpath={.items[0].metadata.name}"*) echo wine-quality ;;
  *"jsonpath={.items[*].metadata.name}"*) echo "$POD" ;;
  *"jsonpath={.spec.ports[0].port}"*) echo 8080 ;;
  *currentMetrics*) echo "${HPA_UTILISATION-37}" ;;
  *"jsonpath={.spec.metrics"*) echo 70 ;;
  *currentReplicas*) echo 2 ;;
  *port-forward*)
    for arg; do
      if [[ $arg =~ ^([0-9]+):([0-9]+)$ ]]; then port=${BASH_REMATCH[1]}; fi
    done
    if [[ $* == *" pod/"* ]]; then
      exec python3 -c "$RELAY" "$port" "$(cat "$E2E_CALLS.port")"
    fi
    echo "$port" > "$E2E_CALLS.port"
    exec "$WINE_QUALITY_BIN" serve --port "$port" --model-dir "$MODEL_DIR" ;;
esac
exit 0
"""

# `kubectl port-forward pod/...`: relays 127.0.0.1:LISTEN to the service's port TARGET.
RELAY = """
import socket, sys, threading
listen, target = (int(arg) for arg in sys.argv[1:3])
server = socket.create_server(("127.0.0.1", listen))
def pipe(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass
while True:
    client, _ = server.accept()
    upstream = socket.create_connection(("127.0.0.1", target))
    for ends in ((client, upstream), (upstream, client)):
        threading.Thread(target=pipe, args=ends, daemon=True).start()
"""


@pytest.fixture
def stand_ins(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    commands = {}
    for name in ("docker", "kind", "kubectl", "helm", "curl"):
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
        "REAL_HELM": require_tool("helm"),
        "RELAY": RELAY,
        "POD": POD,
        "METRICS_API": "registered",  # metrics-server already serves metrics.k8s.io
        "SCRAPE_INTERVAL": "1s",
        "LOAD_CLIENTS": "2",
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
    require_tool("prometheus")
    result, calls = run_kind_path(tmp_path, model_dir, stand_ins)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    order = [
        index(calls, "kind create cluster --name wine-quality"),
        index(calls, f"kind load docker-image {IMAGE} --name wine-quality"),
        index(calls, "kubectl apply --server-side"),
        index(calls, "kubectl wait --for condition=Available"),
        index(calls, "helm upgrade --install wine-quality chart/wine-quality"),
        index(calls, "helm test wine-quality --namespace wine-quality"),
        index(calls, "kubectl --namespace wine-quality port-forward service/wine-quality"),
        index(calls, "helm get manifest wine-quality --namespace wine-quality"),
        index(calls, f"kubectl --namespace wine-quality port-forward pod/{POD}"),
        index(calls, "kubectl --namespace wine-quality get hpa wine-quality"),
    ]
    assert order == sorted(order)
    assert calls[order[3]].endswith("apiservice/v1beta1.metrics.k8s.io")
    assert "reusing the metrics.k8s.io API already registered" in result.stderr
    assert not any(call.startswith(("curl", "kubectl apply --kustomize")) for call in calls)
    assert_prometheus_found_the_smoke_test_predictions(result.stderr)
    # The pods are those the Service selects, and the forwarded port the ServiceMonitor's.
    pods = next(call for call in calls if "get pods" in call)
    assert "app.kubernetes.io/instance=wine-quality" in pods and "status.phase=Running" in pods
    assert f"pod/{POD}" in calls[order[8]] and calls[order[8]].split()[5].endswith(":8080")
    # Under load until the HPA reports a computed CPU utilisation.
    assert "load on http://127.0.0.1:" in result.stderr
    assert "HPA wine-quality: CPU at 37% of the request (target 70%), 2 replicas" in result.stderr
    crds = [call for call in calls if call.startswith("kubectl apply")]
    assert any("monitoring.coreos.com_servicemonitors.yaml" in call for call in crds)
    assert all("prometheus-operator/v0." in call for call in crds)  # a pinned operator release
    install = calls[order[4]]
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
    assert "serviceMonitor.interval=1s" in install
    assert "smoke test passed" in output.lower()
    assert not any(" describe " in call for call in calls)


def assert_prometheus_found_the_smoke_test_predictions(stderr: str) -> None:
    """scripts/prometheus-scrape.sh's report: the job derived from the ServiceMonitor, every target
    up, and the query's series with the smoke test's predictions (a single, a batch of 2 and a v2
    request of 2 rows: at least 5)."""
    job = re.search(
        r"prometheus-scrape: job (\S+): (\S+) on container port (\S+), every (\S+)", stderr
    )
    assert job, stderr
    assert job.group(2, 3, 4) == ("/metrics", "http/8080", "1s")
    assert "prometheus-scrape: targets up: 1/1" in stderr
    series = re.findall(r"wine_quality_predictions_total > 0: \{(.*)\} (\S+)", stderr)
    assert len(series) == 1, stderr
    labels, value = series[0]
    assert float(value) >= 5
    assert 'track="stable"' in labels
    assert "prometheus-scrape: passed" in stderr


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


def test_kind_path_refuses_a_metrics_server_manifest_that_is_not_the_pinned_one(
    tmp_path, model_dir, stand_ins
):
    # A fresh cluster without metrics.k8s.io: the manifests are downloaded, and the stand-in curl
    # answers with something else than the pinned files.
    result, calls = run_kind_path(tmp_path, model_dir, stand_ins, METRICS_API="")
    assert result.returncode == 1
    assert "installing metrics-server v0." in result.stderr
    assert "metrics-server apiservice.yaml does not match its pinned sha256" in result.stderr
    download = index(calls, "curl -fsSL")
    # From a commit of the metrics-server repository, not a branch or a moving tag.
    assert re.search(
        r"kubernetes-sigs/metrics-server/[0-9a-f]{40}/manifests/base/", calls[download]
    )
    assert not any(call.startswith("kubectl apply --kustomize") for call in calls)
    assert not any(call.startswith("helm upgrade") for call in calls)


def test_kind_path_fails_when_the_hpa_never_computes_a_target(tmp_path, model_dir, stand_ins):
    require_tool("prometheus")
    result, calls = run_kind_path(
        tmp_path, model_dir, stand_ins, HPA_UTILISATION="", HPA_TIMEOUT="6"
    )
    assert result.returncode == 1
    assert "HPA wine-quality computed no CPU target within 6s" in result.stderr
    assert len([call for call in calls if "currentMetrics" in call]) >= 1
    assert "e2e: failed; state of namespace wine-quality follows" in result.stderr


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
    # A real Prometheus scraped the pod as the chart's rendered ServiceMonitor says, and found the
    # smoke test's predictions (and the helm test script's one).
    job = re.search(
        r"prometheus-scrape: job (\S+): (\S+) on container port (\S+), every (\S+)", output
    )
    assert job and job.group(2, 3, 4) == ("/metrics", "http/8080", "5s"), output
    assert "prometheus-scrape: targets up: 1/1" in output
    series = re.findall(r"wine_quality_predictions_total > 0: \{(.*)\} (\S+)", output)
    assert len(series) == 1 and float(series[0][1]) >= 6, output
    played = re.search(r"kube-play: pod (\S+)", output).group(1)
    assert f'pod="{played}"' in series[0][0]
    assert "kube-play: passed" in output
    # Torn down: the run's pod is gone.
    pod = re.search(r"kube-play: pod (\S+)", output).group(1)
    pods = subprocess.run(
        [podman, "pod", "ps", "--format", "{{.Name}}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert pod not in pods
