"""The Helm chart, judged by what `helm template` renders (no Kubernetes API server runs here).

Every test renders the real chart with the real Helm binaries from scripts/install-helm.sh.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from support import REPO, require_tool
from wine_quality.app.settings import SETTINGS
from wine_quality.core.features import FEATURE_KEYS

CHART = REPO / "chart" / "wine-quality"
RELEASE = "wine"


def helm_binary(name: str = "helm") -> str:
    return require_tool(name)


def run_helm(*args: str, helm: str = "helm", chart: Path = CHART) -> subprocess.CompletedProcess:
    return subprocess.run(
        [helm_binary(helm), "template", RELEASE, str(chart), "--namespace", "wine", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def render(*args: str, helm: str = "helm") -> list[dict]:
    result = run_helm(*args, helm=helm)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_error(*args: str, helm: str = "helm") -> str:
    result = run_helm(*args, helm=helm)
    assert result.returncode != 0, f"rendering with {args} should have failed"
    return result.stderr


def kinds(docs: list[dict]) -> list[str]:
    return sorted(doc["kind"] for doc in docs)


def one(docs: list[dict], kind: str) -> dict:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def workload(docs: list[dict]) -> dict:
    """The Deployment's pod spec."""
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def container(docs: list[dict]) -> dict:
    return workload(docs)["containers"][0]


def config(docs: list[dict]) -> dict[str, str]:
    """The service's environment: the ConfigMap the container's envFrom names."""
    ref = container(docs)["envFrom"][0]["configMapRef"]["name"]
    maps = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == ref]
    assert len(maps) == 1, f"ConfigMap {ref} named by envFrom is not rendered"
    return maps[0]["data"]


def track_deployment(docs: list[dict], track: str) -> dict:
    found = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["labels"]["track"] == track
    ]
    assert len(found) == 1, f"expected one {track} Deployment, got {len(found)}"
    return found[0]


def values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


# --- what renders by default and when switched on ---------------------------------------------


def test_defaults_render_the_core_resources_only():
    docs = render()
    assert kinds(docs) == sorted(
        [
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Pod",
            "Secret",
            "Service",
            "ServiceAccount",
        ]
    )
    test_pod = one(docs, "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"


def test_optional_resources_render_when_switched_on():
    docs = render("--values", str(CHART / "ci" / "all-on-values.yaml"))
    for kind in (
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "NetworkPolicy",
        "Ingress",
        "PodDisruptionBudget",
    ):
        one(docs, kind)


@pytest.mark.parametrize("helm", ["helm", "helm3"])
def test_hpa_on_removes_replicas(helm):
    off = render("--set", "replicaCount=3", helm=helm)
    assert one(off, "Deployment")["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler" not in kinds(off)

    on = render(
        "--set",
        "autoscaling.enabled=true",
        "--set",
        "autoscaling.minReplicas=3",
        "--set",
        "autoscaling.maxReplicas=9",
        helm=helm,
    )
    assert "replicas" not in one(on, "Deployment")["spec"]
    hpa = one(on, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 9)
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(on, "Deployment")["metadata"]["name"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]


def test_hpa_scales_on_memory_when_asked():
    docs = render(
        "--set",
        "autoscaling.enabled=true",
        "--set",
        "autoscaling.targetMemoryUtilizationPercentage=80",
    )
    metrics = one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert {
        m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in metrics
    } == {"cpu": 70, "memory": 80}


def test_hpa_min_above_max_fails_with_a_clear_error():
    error = render_error(
        "--set",
        "autoscaling.enabled=true",
        "--set",
        "autoscaling.minReplicas=5",
        "--set",
        "autoscaling.maxReplicas=2",
    )
    assert "autoscaling.minReplicas=5 exceeds autoscaling.maxReplicas=2" in error


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ((), True),  # replicaCount 2
        (("replicaCount=1",), False),
        (("podDisruptionBudget.enabled=false",), False),
        (("autoscaling.enabled=true", "autoscaling.minReplicas=1", "replicaCount=5"), False),
        (("autoscaling.enabled=true", "autoscaling.minReplicas=2", "replicaCount=1"), True),
    ],
)
def test_pdb_only_when_at_least_two_pods_always_run(settings, expected):
    args = [arg for setting in settings for arg in ("--set", setting)]
    docs = render(*args)
    assert ("PodDisruptionBudget" in kinds(docs)) is expected
    if expected:
        pdb = one(docs, "PodDisruptionBudget")
        assert (
            pdb["spec"]["selector"]["matchLabels"]
            == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
        )


def test_pdb_max_unavailable_replaces_min_available():
    docs = render("--set", "podDisruptionBudget.maxUnavailable=1")
    spec = one(docs, "PodDisruptionBudget")["spec"]
    assert spec.get("maxUnavailable") == 1 and "minAvailable" not in spec


# --- values reach the pod ---------------------------------------------------------------------


def test_image_tag_defaults_to_app_version():
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container(render())["image"] == f"ghcr.io/wine-quality/wine-quality:{app_version}"


def test_image_repository_tag_digest_and_pull_policy_from_values():
    digest = "sha256:" + "ab" * 32
    docs = render(
        "--set",
        "image.repository=registry.example.com/ml/wine",
        "--set",
        "image.tag=9.9.9",
        "--set",
        f"image.digest={digest}",
        "--set",
        "image.pullPolicy=Always",
    )
    assert container(docs)["image"] == f"registry.example.com/ml/wine:9.9.9@{digest}"
    assert container(docs)["imagePullPolicy"] == "Always"


@pytest.mark.parametrize(
    ("registry", "repository", "expected"),
    [
        # The registry named in the repository is replaced ...
        ("registry.example.com", None, "registry.example.com/wine-quality/wine-quality"),
        (
            "mirror.example.com:5000/ghcr/",
            None,
            "mirror.example.com:5000/ghcr/wine-quality/wine-quality",
        ),
        ("registry.example.com", "localhost/wine-quality", "registry.example.com/wine-quality"),
        ("registry.example.com", "quay.example.org:8443/ml/wine", "registry.example.com/ml/wine"),
        # ... and a repository without one gets it in front.
        ("registry.example.com", "ml/wine", "registry.example.com/ml/wine"),
        ("registry.example.com", "wine", "registry.example.com/wine"),
    ],
)
def test_global_image_registry_replaces_the_registry_of_the_image(registry, repository, expected):
    digest = "sha256:" + "cd" * 32
    args = ["--set", f"global.imageRegistry={registry}", "--set", f"image.digest={digest}"]
    if repository:
        args += ["--set", f"image.repository={repository}"]
    docs = render(*args, "--set", "image.tag=1.2.3")
    assert container(docs)["image"] == f"{expected}:1.2.3@{digest}"


def test_global_image_registry_applies_to_the_helm_test_image_too():
    def test_image(*args: str) -> str:
        return one(render(*args), "Pod")["spec"]["containers"][0]["image"]

    assert test_image() == "docker.io/curlimages/curl:8.17.0"
    assert (
        test_image("--set", "global.imageRegistry=registry.example.com")
        == "registry.example.com/curlimages/curl:8.17.0"
    )


def test_global_image_registry_of_a_parent_chart_reaches_the_subchart(tmp_path):
    # Helm hands a parent chart's `global` values to every chart under its charts/ folder.
    parent = tmp_path / "platform"
    shutil.copytree(CHART, parent / "charts" / "wine-quality")
    (parent / "Chart.yaml").write_text(
        "apiVersion: v2\nname: platform\nversion: 1.0.0\nkubeVersion: '>=1.30.0-0'\n"
    )
    (parent / "values.yaml").write_text(
        "global:\n  imageRegistry: mirror.example.com\n  otherParentSetting: kept\n"
    )
    result = run_helm(chart=parent)
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert container(docs)["image"] == f"mirror.example.com/wine-quality/wine-quality:{app_version}"


def test_global_image_registry_must_be_a_registry_not_a_url():
    assert "imageRegistry" in render_error(
        "--set", "global.imageRegistry=https://registry.example.com"
    )


# --- labels: what rolls the pods ---------------------------------------------------------------


def render_chart_at(tmp_path: Path, version: str, app_version: str, *args: str) -> list[dict]:
    """The chart rendered as released at `version` / `app_version` (a copy, Chart.yaml edited)."""
    chart = tmp_path / f"wine-quality-{version}-{app_version}"
    shutil.copytree(CHART, chart)
    chart_yaml = chart / "Chart.yaml"
    text = chart_yaml.read_text()
    text, versions = re.subn(r"(?m)^version: .*$", f"version: {version}", text)
    text, app_versions = re.subn(r"(?m)^appVersion: .*$", f'appVersion: "{app_version}"', text)
    assert (versions, app_versions) == (1, 1), "Chart.yaml has no version/appVersion line to edit"
    chart_yaml.write_text(text)
    result = run_helm(*args, chart=chart)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize("values_file", [None, "all-on-values.yaml"])
def test_chart_bump_keeps_the_pod_template_and_so_the_pods(tmp_path, values_file):
    # The image pinned (as a release of a new chart with the same image would): nothing the pods
    # run changes, so the pod template, and with it the ReplicaSet's pod-template-hash, must not.
    args = ["--set", "image.tag=1.2.3"]
    if values_file:
        args += ["--values", str(CHART / "ci" / values_file)]
    old = one(render_chart_at(tmp_path, "0.1.0", "0.1.0", *args), "Deployment")
    new = one(render_chart_at(tmp_path, "0.2.0", "0.2.0", *args), "Deployment")

    assert new["spec"]["template"] == old["spec"]["template"]
    # The Deployment object itself still says which chart made it.
    assert old["metadata"]["labels"]["helm.sh/chart"] == "wine-quality-0.1.0"
    assert new["metadata"]["labels"]["helm.sh/chart"] == "wine-quality-0.2.0"


def test_app_version_bump_changes_only_the_image_of_the_pod_template(tmp_path):
    # With the tag left to appVersion, a new appVersion is a new image: that, and only that, rolls.
    old = one(render_chart_at(tmp_path, "0.1.0", "0.1.0"), "Deployment")
    new = one(render_chart_at(tmp_path, "0.2.0", "0.2.0"), "Deployment")
    old_container = old["spec"]["template"]["spec"]["containers"][0]
    new_container = new["spec"]["template"]["spec"]["containers"][0]
    assert (old_container["image"], new_container["image"]) == (
        "ghcr.io/wine-quality/wine-quality:0.1.0",
        "ghcr.io/wine-quality/wine-quality:0.2.0",
    )
    new_container["image"] = old_container["image"]
    assert new["spec"]["template"] == old["spec"]["template"]
    assert old["metadata"]["labels"]["app.kubernetes.io/version"] == "0.1.0"
    assert new["metadata"]["labels"]["app.kubernetes.io/version"] == "0.2.0"


def test_pod_labels_are_the_selector_plus_common_and_pod_labels():
    docs = render(
        "--values",
        str(CHART / "ci" / "all-on-values.yaml"),  # commonLabels team=ml, podLabels tier=model
        "--set",
        "podLabels.team=serving",
        "--set",
        "podLabels.app\\.kubernetes\\.io/instance=not-the-release",
    )
    deployment = one(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()  # a podLabels entry cannot break the selector
    assert one(docs, "Service")["spec"]["selector"].items() <= pod_labels.items()
    assert {k: v for k, v in pod_labels.items() if k not in selector} == {
        "app.kubernetes.io/managed-by": "Helm",
        "app.kubernetes.io/part-of": "wine-quality",
        "track": "stable",
        "team": "serving",  # podLabels win over commonLabels
        "tier": "model",
    }
    # Every other resource keeps the full set, chart and version included.
    for doc in docs:
        if doc["kind"] != "Pod":
            assert {"helm.sh/chart", "app.kubernetes.io/version"} <= doc["metadata"][
                "labels"
            ].keys()
            assert doc["metadata"]["labels"]["team"] == "ml"


def test_settings_reach_the_container_environment():
    docs = render(
        "--set",
        "gunicorn.workers=5",
        "--set",
        "gunicorn.threads=3",
        "--set",
        "gunicorn.timeout=45",
        "--set",
        "config.runtime=sklearn",
        "--set",
        "config.logLevel=debug",
        "--set",
        "config.maxBatchRows=77",
        "--set",
        "containerPort=9090",
    )
    env = config(docs)
    assert env["GUNICORN_WORKERS"] == "5"
    assert env["GUNICORN_THREADS"] == "3"
    assert env["GUNICORN_TIMEOUT"] == "45"
    assert env["WINE_QUALITY_RUNTIME"] == "sklearn"
    assert env["WINE_QUALITY_LOG_LEVEL"] == "debug"
    assert env["WINE_QUALITY_MAX_BATCH_ROWS"] == "77"
    assert env["PORT"] == "9090"
    assert container(docs)["ports"] == [{"name": "http", "containerPort": 9090, "protocol": "TCP"}]


def test_secret_key_comes_from_the_charts_own_secret_by_default():
    docs = render()
    secret = one(docs, "Secret")
    env = {e["name"]: e for e in container(docs)["env"]}
    secret_ref = env["WINE_QUALITY_SECRET_KEY"]["valueFrom"]["secretKeyRef"]
    assert secret_ref == {"name": secret["metadata"]["name"], "key": "secret-key"}
    key = base64.b64decode(secret["data"]["secret-key"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{48}", key)
    # Random per render (no lookup under `helm template`): never a fixed, public value.
    assert one(render(), "Secret")["data"] != secret["data"]
    assert "WINE_QUALITY_SECRET_KEY" not in config(docs)  # not in the ConfigMap


def test_secret_key_keeps_the_installed_key_on_upgrade(tmp_path):
    """On a cluster `lookup` returns the installed Secret (under `helm template` nothing); the
    helper that picks the value is fed such a Secret's data here, through a probe template in a
    copy of the chart."""
    template = (CHART / "templates" / "secret.yaml").read_text()
    assert re.search(r'lookup "v1" "Secret" \.Release\.Namespace \$name\)\.data', template)
    assert '"existing" $existing "key" $key' in template
    chart = tmp_path / "wine-quality"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "probe.yaml").write_text(
        "kind: Probe\n"
        'installed: {{ include "wine-quality.secretKeyData" (dict "existing" (dict "secret-key"'
        ' "b2xkLWtleQ==") "key" "secret-key") }}\n'
        'other: {{ include "wine-quality.secretKeyData" (dict "existing" (dict "k" "eA==")'
        ' "key" "secret-key") }}\n'
    )
    result = run_helm("--show-only", "templates/probe.yaml", chart=chart)
    assert result.returncode == 0, result.stderr
    probe = yaml.safe_load(result.stdout)
    assert probe["installed"] == "b2xkLWtleQ=="  # the installed key is kept
    assert re.fullmatch(r"[A-Za-z0-9]{48}", base64.b64decode(probe["other"]).decode())


def test_secret_key_and_extra_env_are_passed_as_env_entries():
    docs = render(
        "--set",
        "secretKey.existingSecret=csrf",
        "--set",
        "secretKey.key=k",
        "--set",
        "extraEnv[0].name=TZ",
        "--set",
        "extraEnv[0].value=UTC",
    )
    env = {e["name"]: e for e in container(docs)["env"]}
    secret_ref = env["WINE_QUALITY_SECRET_KEY"]["valueFrom"]["secretKeyRef"]
    assert secret_ref == {"name": "csrf", "key": "k"}
    assert env["TZ"]["value"] == "UTC"
    assert "Secret" not in kinds(docs)  # an existing Secret replaces the chart's own


def test_every_env_var_the_chart_sets_is_a_service_setting():
    known = {s.env for s in SETTINGS}
    docs = render("--values", str(CHART / "ci" / "all-on-values.yaml"), "--set", "extraEnv=null")
    names = set(config(docs)) | {e["name"] for e in container(docs).get("env", [])}
    # The shadow's directory is set on the stable track when it shadows the canary.
    stable = track_deployment(
        render("--values", str(CHART / "ci" / "canary-values.yaml")), "stable"
    )
    names |= {e["name"] for e in stable["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert names - known == set(), "the chart sets variables the service does not read"
    # Everything is set explicitly (the CSRF key from a Secret), so the chart documents the
    # service's whole configuration rather than relying on the image's defaults.
    assert known - names == set()


def test_config_change_rolls_the_pods():
    def checksum(*args: str) -> str:
        return one(render(*args), "Deployment")["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]

    assert checksum() == checksum()
    assert checksum() != checksum("--set", "gunicorn.workers=3")


def test_probes_and_resources_come_from_values():
    docs = render(
        "--set",
        "probes.startup.failureThreshold=90",
        "--set",
        "probes.readiness.periodSeconds=7",
        "--set",
        "resources.limits.memory=1Gi",
        "--set",
        "resources.requests.cpu=300m",
    )
    pod = container(docs)
    assert pod["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert pod["startupProbe"]["failureThreshold"] == 90
    assert pod["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert pod["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert pod["readinessProbe"]["periodSeconds"] == 7
    assert pod["resources"]["limits"]["memory"] == "1Gi"
    assert pod["resources"]["requests"]["cpu"] == "300m"


def test_startup_probe_budget_covers_model_loading():
    probe = container(render())["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 60


def test_rolling_update_never_reduces_capacity():
    strategy = one(render(), "Deployment")["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_scheduling_passthrough():
    docs = render("--values", str(CHART / "ci" / "all-on-values.yaml"))
    pod = workload(docs)
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in pod["affinity"]
    assert pod["priorityClassName"] == "high-priority"
    selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert [c["topologyKey"] for c in pod["topologySpreadConstraints"]] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    assert all(
        c["labelSelector"]["matchLabels"] == selector for c in pod["topologySpreadConstraints"]
    )


# --- security and shutdown --------------------------------------------------------------------


def assert_restricted(pod_spec: dict) -> None:
    """The Kubernetes "restricted" Pod Security Standard, as far as the pod spec decides it."""
    pod_context = pod_spec["securityContext"]
    assert pod_context["seccompProfile"]["type"] == "RuntimeDefault"
    for c in pod_spec["containers"]:
        context = c["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert not context["capabilities"].get("add")
        assert context.get("privileged", False) is False
        assert context["runAsNonRoot"] is True or pod_context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context.get("runAsUser", pod_context.get("runAsUser")) == 10001
        assert context.get("runAsGroup", pod_context.get("runAsGroup")) == 10001
    assert not pod_spec.get("hostNetwork") and not pod_spec.get("hostPID")
    assert all("hostPath" not in v for v in pod_spec.get("volumes", []))


def test_pods_meet_the_restricted_pod_security_standard():
    docs = render()
    pod = workload(docs)
    assert_restricted(pod)
    assert_restricted(one(docs, "Pod")["spec"])  # the helm test pod too
    assert pod["automountServiceAccountToken"] is False
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m["name"] for m in container(docs)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert config(docs)["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")


def test_grace_period_outlasts_the_shutdown_sequence():
    docs = render(
        "--set",
        "gunicorn.gracefulTimeout=40",
        "--set",
        "gunicorn.shutdownDelay=3",
        "--set",
        "preStopSleepSeconds=7",
    )
    pod = workload(docs)
    assert container(docs)["lifecycle"]["preStop"] == {"sleep": {"seconds": 7}}
    assert pod["terminationGracePeriodSeconds"] > 40 + 3 + 7
    env = config(docs)
    assert (env["GUNICORN_GRACEFUL_TIMEOUT"], env["GUNICORN_SHUTDOWN_DELAY"]) == ("40", "3")


def test_too_short_grace_period_fails_the_render():
    error = render_error("--set", "terminationGracePeriodSeconds=20")
    assert "terminationGracePeriodSeconds=20 must exceed" in error


def test_kube_version_below_the_claimed_minimum_is_refused():
    # The preStop sleep action needs Kubernetes 1.30; Chart.yaml's kubeVersion says so.
    error = render_error("--kube-version", "1.29.0")
    assert "kubeVersion" in error or "incompatible" in error


# --- service, monitoring, network ---------------------------------------------------------------


def test_port_8080_is_one_default_in_chart_service_and_image():
    setting = next(s for s in SETTINGS if s.env == "PORT").default
    exposed = re.findall(r"^EXPOSE (\d+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    docs = render()
    assert values()["containerPort"] == values()["service"]["port"] == int(setting)
    assert exposed == [setting]
    assert config(docs)["PORT"] == setting
    assert one(docs, "Service")["spec"]["ports"][0]["port"] == int(setting)


def test_service_is_cluster_ip_with_a_named_http_port():
    docs = render()
    service = one(docs, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_service_monitor_is_gated_by_the_flag_and_takes_its_settings():
    docs = render(
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "serviceMonitor.labels.release=kube-prometheus-stack",
        "--set",
        "serviceMonitor.interval=15s",
        "--set",
        "serviceMonitor.scrapeTimeout=5s",
        "--set",
        "serviceMonitor.relabelings[0].targetLabel=node",
        "--set",
        "serviceMonitor.relabelings[0].sourceLabels[0]=__meta_node",
    )
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "5s")
    assert endpoint["relabelings"][0]["targetLabel"] == "node"
    service_labels = one(docs, "Service")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    assert monitor["spec"]["podTargetLabels"] == ["track"]


def test_network_policy_admits_only_the_http_port():
    docs = render("--set", "networkPolicy.enabled=true")
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert policy["ingress"][0]["from"] == [{"podSelector": {}}]


def test_network_policy_with_peers_still_admits_the_helm_test_pod():
    docs = render(
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.from[0].namespaceSelector.matchLabels.team=ingress",
    )
    peers = one(docs, "NetworkPolicy")["spec"]["ingress"][0]["from"]
    assert peers[0] == {"namespaceSelector": {"matchLabels": {"team": "ingress"}}}
    test_peers = peers[1:]
    assert len(test_peers) == 1 and set(test_peers[0]) == {"podSelector"}  # release namespace
    selector = test_peers[0]["podSelector"]["matchLabels"]
    test_labels = one(docs, "Pod")["metadata"]["labels"]
    assert selector.items() <= test_labels.items()
    # ... and only it: the selector does not match the service's own pods.
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= pod_labels.items()


def test_ingress_routes_to_the_service():
    docs = render(
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.hosts[0].host=wine.test",
        "--set",
        "ingress.hosts[0].paths[0].path=/",
        "--set",
        "ingress.hosts[0].paths[0].pathType=Prefix",
    )
    backend = one(docs, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend["service"] == {
        "name": one(docs, "Service")["metadata"]["name"],
        "port": {"name": "http"},
    }


def test_helm_test_pod_is_not_selected_by_the_service():
    docs = render()
    selector = one(docs, "Service")["spec"]["selector"]
    test_labels = one(docs, "Pod")["metadata"]["labels"]
    assert not all(test_labels.get(k) == v for k, v in selector.items())


def test_helm_test_sample_is_one_wine_with_every_feature():
    sample = values()["tests"]["sample"]
    assert tuple(sample) == FEATURE_KEYS
    test_pod = one(render(), "Pod")
    env = {e["name"]: e["value"] for e in test_pod["spec"]["containers"][0]["env"]}
    assert json.loads(env["SAMPLE"]) == sample
    assert env["URL"] == "http://wine-wine-quality:8080"


# --- values schema ------------------------------------------------------------------------------


@pytest.mark.parametrize("helm", ["helm", "helm3"])
def test_schema_rejects_a_wrong_type_naming_the_key(helm):
    error = render_error("--set", "replicaCount=two", helm=helm)
    assert "replicaCount" in error
    assert "integer" in error


@pytest.mark.parametrize("helm", ["helm", "helm3"])
@pytest.mark.parametrize(
    ("setting", "key"), [("replicaCont=2", "replicaCont"), ("image.tagg=1.0", "tagg")]
)
def test_schema_rejects_an_unknown_key_naming_it(helm, setting, key):
    error = render_error("--set", setting, helm=helm)
    assert re.search(rf"[Aa]dditional propert(y|ies) '?{key}'? (is )?not allowed", error), error


def test_schema_rejects_a_bad_enum_value():
    assert "logLevel" in render_error("--set", "config.logLevel=verbose")


def test_schema_accepts_global_values_from_a_parent_chart():
    render("--set", "global.imageRegistry=registry.example.com", "--set", "global.anything=else")


def test_schema_covers_every_key_of_values_yaml():
    schema = json.loads((CHART / "values.schema.json").read_text())

    def missing(node: dict, tree: dict, prefix: str) -> list[str]:
        gaps = []
        for key, value in tree.items():
            sub = node.get("properties", {}).get(key)
            if sub is None:
                if node.get("additionalProperties", True) is False:
                    gaps.append(prefix + key)
                continue
            if isinstance(value, dict) and value and "properties" in sub:
                gaps += missing(sub, value, f"{prefix}{key}.")
        return gaps

    assert missing(schema, values(), "") == []


# --- versions, docs and the whole check ------------------------------------------------------


def test_app_version_is_the_project_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"] == project


def test_artifacthub_images_annotation_names_the_images_the_chart_deploys():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    images = yaml.safe_load(chart["annotations"]["artifacthub.io/images"])
    found = {image["name"]: image["image"] for image in images}
    image, tests_image = values()["image"], values()["tests"]["image"]
    assert found == {
        "wine-quality": f"{image['repository']}:{chart['appVersion']}",
        "curl": f"{tests_image['repository']}:{tests_image['tag']}",
    }


def test_readme_intro_names_every_kind_the_chart_renders():
    intro = (CHART / "README.md").read_text().split("\n## ", 1)[0]
    rendered = set(kinds(render())) | set(
        kinds(render("--values", str(CHART / "ci" / "all-on-values.yaml")))
    )
    assert {"Secret", "PrometheusRule"} <= rendered
    missing = {kind for kind in rendered - {"Pod"} if kind not in intro}  # Pod: the helm test
    assert missing == set()
    assert "Grafana dashboard" in intro


def test_readme_points_at_notes_txt_and_chart_yaml_asks_no_version_bump():
    readme = (CHART / "README.md").read_text()
    assert "NOTES.txt" in readme and "release notes print" not in readme
    # The chart version is set at release (scripts/release.sh), as ct.yaml says; no bump per change.
    assert yaml.safe_load((REPO / "ct.yaml").read_text())["check-version-increment"] is False
    assert "bump it on every chart change" not in (CHART / "Chart.yaml").read_text()
    assert "release.sh" in (CHART / "Chart.yaml").read_text()


def test_values_table_in_readme_matches_values_yaml():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "chart-values-table.py"), "--check", str(CHART)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_values_table_check_catches_drift_and_undocumented_keys(tmp_path):
    chart = tmp_path / "wine-quality"
    shutil.copytree(CHART, chart)
    script = [sys.executable, str(REPO / "scripts" / "chart-values-table.py")]
    text = (chart / "values.yaml").read_text()
    (chart / "values.yaml").write_text(text.replace("# -- Fewest pods.", "# -- Fewest pods ever."))
    drift = subprocess.run([*script, "--check", str(chart)], capture_output=True, text=True)
    assert drift.returncode == 1 and "out of date" in drift.stderr
    subprocess.run([*script, str(chart)], check=True)
    assert "Fewest pods ever." in (chart / "README.md").read_text()

    (chart / "values.yaml").write_text(text + "\nundocumentedKey: 1\n")
    undocumented = subprocess.run([*script, "--check", str(chart)], capture_output=True, text=True)
    assert undocumented.returncode == 1 and "undocumentedKey" in undocumented.stderr


def test_chart_check_script_passes():
    require_tool("helm")
    result = subprocess.run(
        [str(REPO / "scripts" / "chart-check.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    log = result.stderr
    assert "all chart checks passed" in log
    assert re.search(r"kubernetes-validate --strict 1\.30\.0: \d+ manifests valid", log)
    assert "Failed checks: 0" in log


def test_portable_schema_drops_only_go_dialect_patterns(tmp_path):
    source = tmp_path / "crd.json"
    source.write_text(
        json.dumps(
            {
                "properties": {
                    "strategy": {"type": "string", "pattern": "^(?i)(abort|warn)?$"},
                    "name": {"type": "string", "pattern": "^[a-z]+$"},
                }
            }
        )
    )
    out = tmp_path / "portable.json"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "manifests.py"),
            "portable-schema",
            str(source),
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "/properties/strategy: ^(?i)(abort|warn)?$"
    schema = json.loads(out.read_text())
    assert "pattern" not in schema["properties"]["strategy"]
    assert schema["properties"]["name"]["pattern"] == "^[a-z]+$"


def test_install_helm_provides_the_pinned_versions_and_is_idempotent():
    script = REPO / "scripts" / "install-helm.sh"
    subprocess.run([script], check=True, timeout=600, capture_output=True)
    again = subprocess.run([script], check=True, timeout=60, capture_output=True, text=True)
    assert again.stderr == ""  # nothing downloaded or replaced the second time
    tools = REPO / ".tools" / "bin"
    for binary, version in (("helm", "v4.1.4"), ("helm3", "v3.18.0")):
        out = subprocess.run(
            [tools / binary, "version", "--template", "{{.Version}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out == version
    kubectl = subprocess.run(
        [tools / "kubectl", "version", "--client"], capture_output=True, text=True, check=True
    ).stdout
    assert "v1.35.2" in kubectl


SHARED_CRDS = REPO.parent / "shared" / "schemas" / "crds"


def crd_schemas(tmp_path: Path, body: str | None) -> subprocess.CompletedProcess:
    """scripts/crd-schemas.sh in a copy of its folder, with a `curl` that writes BODY, or without
    BODY the real schema the URL names (from the shared copy; the catalog cannot be reached from
    here), and no local schema folder, so it downloads."""
    (tmp_path / "scripts").mkdir(exist_ok=True)
    shutil.copy2(REPO / "scripts" / "crd-schemas.sh", tmp_path / "scripts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    curl = bin_dir / "curl"
    curl.write_text(
        "#!/bin/sh\n"
        'url=""; for arg in "$@"; do case "$arg" in http*) url=$arg;; esac; done\n'
        'while [ "$1" != -o ]; do shift; done\n'
        'if [ -n "${BODY+x}" ]; then printf %s "$BODY" > "$2"\n'
        'else cp "$SRC/monitoring.coreos.com-$(basename "$url" _v1.json)_v1.json" "$2"; fi\n'
    )
    curl.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "SRC": str(Path(os.environ.get("CRD_SCHEMA_DIR") or SHARED_CRDS)),
        "CRD_SCHEMA_DIR": str(tmp_path / "absent"),
    }
    if body is not None:
        env["BODY"] = body
    return subprocess.run(
        [str(tmp_path / "scripts" / "crd-schemas.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("", "is empty"),
        ("<html>", "is not valid JSON"),
        ('{"type": "object"}', "does not match its pinned sha256"),
    ],
)
def test_crd_schema_download_keeps_no_partial_or_invalid_file(tmp_path, body, problem):
    result = crd_schemas(tmp_path, body)
    assert result.returncode == 1
    assert problem in result.stderr
    assert list((tmp_path / ".tools" / "cache" / "crds").iterdir()) == []

    good = crd_schemas(tmp_path, None)
    assert good.returncode == 0, good.stderr
    folder = Path(good.stdout.strip())
    assert sorted(p.name for p in folder.iterdir()) == [
        f"monitoring.coreos.com-{kind}_v1.json"
        for kind in ("podmonitor", "prometheusrule", "servicemonitor")
    ]


# --- the canary track ---------------------------------------------------------------------------


def matches(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def pod_labels_of(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"]["labels"]


def test_canary_is_a_second_deployment_whose_selector_never_overlaps_the_stable_one():
    docs = render("--values", str(CHART / "ci" / "canary-values.yaml"))
    stable, canary = track_deployment(docs, "stable"), track_deployment(docs, "canary")
    assert canary["metadata"]["name"] == stable["metadata"]["name"] + "-canary"
    stable_pods, canary_pods = pod_labels_of(stable), pod_labels_of(canary)
    assert (stable_pods["track"], canary_pods["track"]) == ("stable", "canary")
    assert matches(stable["spec"]["selector"]["matchLabels"], stable_pods)
    assert matches(canary["spec"]["selector"]["matchLabels"], canary_pods)
    assert not matches(stable["spec"]["selector"]["matchLabels"], canary_pods)
    assert not matches(canary["spec"]["selector"]["matchLabels"], stable_pods)
    # One Service and one NetworkPolicy cover both tracks, never the helm test pod.
    service = one(docs, "Service")["spec"]["selector"]
    test_pod = one(docs, "Pod")["metadata"]["labels"]
    assert matches(service, stable_pods) and matches(service, canary_pods)
    assert not matches(service, test_pod)
    # The stable selector is the one every earlier release has: upgrades keep working.
    assert (
        stable["spec"]["selector"]["matchLabels"]
        == track_deployment(render(), "stable")["spec"]["selector"]["matchLabels"]
    )


def test_canary_runs_its_own_image_replicas_and_settings():
    docs = render(
        "--values",
        str(CHART / "ci" / "canary-values.yaml"),
        "--set",
        "canary.image.digest=sha256:" + "a" * 64,
        "--set",
        "canary.replicaCount=3",
    )
    stable, canary = track_deployment(docs, "stable"), track_deployment(docs, "canary")
    canary_container = canary["spec"]["template"]["spec"]["containers"][0]
    stable_container = stable["spec"]["template"]["spec"]["containers"][0]
    assert canary_container["image"] == (
        "ghcr.io/wine-quality/wine-quality:0.2.0@sha256:" + "a" * 64
    )
    assert stable_container["image"] == f"ghcr.io/wine-quality/wine-quality:{values_app_version()}"
    assert canary["spec"]["replicas"] == 3
    assert {"name": "WINE_QUALITY_LOG_LEVEL", "value": "debug"} in canary_container["env"]
    assert "WINE_QUALITY_LOG_LEVEL" not in {e["name"] for e in stable_container["env"]}


def test_stable_pods_shadow_the_canary_model_copied_from_its_image():
    docs = render("--values", str(CHART / "ci" / "canary-values.yaml"))
    stable, canary = track_deployment(docs, "stable"), track_deployment(docs, "canary")
    pod = stable["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == canary["spec"]["template"]["spec"]["containers"][0]["image"]
    assert init["command"][-2:] == ["/app/model/.", "/shadow-model/"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["WINE_QUALITY_SHADOW_MODEL_DIR"] == "/shadow-model"
    mount = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}["shadow-model"]
    assert mount == {"name": "shadow-model", "mountPath": "/shadow-model", "readOnly": True}
    assert "initContainers" not in canary["spec"]["template"]["spec"]
    without = render(
        "--values", str(CHART / "ci" / "canary-values.yaml"), "--set", "canary.shadowOfStable=false"
    )
    assert "initContainers" not in track_deployment(without, "stable")["spec"]["template"]["spec"]


def test_autoscaling_and_disruption_budget_concern_the_stable_track_only():
    docs = render(
        "--values",
        str(CHART / "ci" / "canary-values.yaml"),
        "--set",
        "autoscaling.enabled=true",
    )
    stable, canary = track_deployment(docs, "stable"), track_deployment(docs, "canary")
    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert hpa["name"] == stable["metadata"]["name"]
    assert "replicas" not in stable["spec"] and canary["spec"]["replicas"] == 1
    budget = one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    assert matches(budget, pod_labels_of(stable)) and not matches(budget, pod_labels_of(canary))


def test_without_the_canary_nothing_of_it_renders():
    docs = render()
    assert [d["metadata"]["labels"]["track"] for d in docs if d["kind"] == "Deployment"] == [
        "stable"
    ]
    assert "initContainers" not in workload(docs)


def values_app_version() -> str:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


def test_a_canary_without_pods_still_lends_its_model_to_the_stable_shadow():
    docs = render(
        "--values", str(CHART / "ci" / "canary-values.yaml"), "--set", "canary.replicaCount=0"
    )
    assert track_deployment(docs, "canary")["spec"]["replicas"] == 0
    stable = track_deployment(docs, "stable")["spec"]["template"]["spec"]
    assert stable["initContainers"][0]["name"] == "shadow-model"
    assert "/canary/replicaCount" in render_error(
        "--values", str(CHART / "ci" / "canary-values.yaml"), "--set", "canary.replicaCount=-1"
    )
