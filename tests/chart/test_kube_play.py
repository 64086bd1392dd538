"""scripts/kube-play.sh: the chart's workload with the real image under `podman kube play`.

No Kubernetes API server can run on the project's development machines; podman runs the rendered
Deployment and its ConfigMap as a pod instead, which proves the chart's port, probe paths, env
variable names, UID and read-only root file system work with the image. The full run with the real
image is scripts/e2e.sh's podman path (tests/test_e2e_script.py); the tests here cover the
manifest kube-play.sh derives and its refusal of a missing image. The kind cluster of the CI
workflow (scripts/e2e.sh) covers the rest (Service, HPA, helm test).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import yaml

from support import REPO, require_tool

KUBE_PLAY = REPO / "scripts" / "kube-play.sh"


def test_kube_play_manifest_keeps_what_podman_runs_and_publishes_http(tmp_path):
    helm = require_tool("helm")
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(
        subprocess.run(
            [
                helm,
                "template",
                "kp",
                str(REPO / "chart" / "wine-quality"),
                "--values",
                str(REPO / "chart" / "wine-quality" / "ci" / "all-on-values.yaml"),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    out = tmp_path / "play.yaml"
    subprocess.run(
        [
            sys.executable,
            REPO / "scripts" / "manifests.py",
            "kube-play",
            rendered,
            out,
            "--host-port",
            "18080",
        ],
        check=True,
    )
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in docs][-1] == "Deployment"
    assert {d["kind"] for d in docs} == {"ConfigMap", "Deployment"}  # all-on: an existingSecret

    default = tmp_path / "default.yaml"
    default.write_text(
        subprocess.run(
            [helm, "template", "kp", str(REPO / "chart" / "wine-quality")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    secrets = tmp_path / "secrets"
    subprocess.run(
        [
            sys.executable,
            REPO / "scripts" / "manifests.py",
            "kube-play",
            default,
            out,
            "--host-port",
            "18080",
            "--secrets",
            secrets,
        ],
        check=True,
    )
    # The chart's own Secret (the CSRF key) becomes a podman secret file, named as the Secret the
    # container's secretKeyRef reads, holding the Secret's data.
    played = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in played] == ["ConfigMap", "Deployment"]
    env = played[-1]["spec"]["template"]["spec"]["containers"][0]["env"]
    key_env = next(e for e in env if e["name"] == "WINE_QUALITY_SECRET_KEY")
    ref = key_env["valueFrom"]["secretKeyRef"]
    data = json.loads((secrets / f"{ref['name']}.json").read_text())
    assert list(data) == [ref["key"]]
    assert len(base64.b64decode(data[ref["key"]])) == 48
    deployment = docs[-1]
    assert deployment["spec"]["replicas"] == 1
    port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]
    assert (port["name"], port["hostPort"], port["hostIP"]) == ("http", 18080, "127.0.0.1")


def test_kube_play_names_a_missing_image():
    require_tool("podman")
    result = subprocess.run(
        [KUBE_PLAY],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "IMAGE": "wine-quality:no-such-tag"},
    )
    assert result.returncode == 1
    assert "image localhost/wine-quality:no-such-tag not found" in result.stderr


def test_kube_play_manifest_publishes_each_track_and_keeps_init_containers(tmp_path):
    helm = require_tool("helm")
    chart = REPO / "chart" / "wine-quality"
    rendered = tmp_path / "rendered.yaml"
    values = chart / "ci" / "canary-values.yaml"
    rendered.write_text(
        subprocess.run(
            [helm, "template", "kp", str(chart), "--values", str(values)],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    out = tmp_path / "play.yaml"
    manifests = [sys.executable, REPO / "scripts" / "manifests.py", "kube-play", rendered, out]
    refused = subprocess.run([*manifests, "--host-port", "18080"], capture_output=True, text=True)
    assert refused.returncode != 0 and "--canary-port" in refused.stderr
    subprocess.run([*manifests, "--host-port", "18080", "--canary-port", "18081"], check=True)
    deployments = {
        d["metadata"]["labels"]["track"]: d
        for d in yaml.safe_load_all(out.read_text())
        if d["kind"] == "Deployment"
    }
    ports = {
        track: d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["hostPort"]
        for track, d in deployments.items()
    }
    assert ports == {"stable": 18080, "canary": 18081}
    # podman 4.3 can only run the stable pods' init container as an "always" one.
    annotations = deployments["stable"]["metadata"]["annotations"]
    assert annotations["io.podman.annotations.init.container.type"] == "always"
    assert "io.podman.annotations.init.container.type" not in deployments["canary"]["metadata"].get(
        "annotations", {}
    )
    # Each pod gets its own emptyDir, as in Kubernetes: podman names the volume it makes for an
    # emptyDir after the volume, so two tracks with the same names would share /tmp.
    volumes = {
        track: {v["name"] for v in d["spec"]["template"]["spec"]["volumes"] if "emptyDir" in v}
        for track, d in deployments.items()
    }
    assert volumes["stable"] and volumes["canary"]
    assert not volumes["stable"] & volumes["canary"]
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        names = {v["name"] for v in pod["volumes"]}
        mounts = [
            m
            for c in [*pod.get("initContainers", []), *pod["containers"]]
            for m in c.get("volumeMounts", [])
        ]
        assert mounts and {m["name"] for m in mounts} <= names
