#!/usr/bin/env python3
"""Splits and selects the documents of `helm template` output (chart-check.sh, kube-play.sh).

manifests.py split FILE DIR
    Writes each document of FILE to DIR/<kind>-<name>.yaml; prints one line per document,
    "<kind> <path>", so callers can route each kind to its validator.
manifests.py kube-play FILE OUT --host-port PORT [--canary-port PORT] [--secrets DIR]
    Writes to OUT what `podman kube play` runs: the Deployments, ConfigMaps and Secrets of FILE,
    with each Deployment cut to one replica and its `http` container port published on
    127.0.0.1:PORT (podman publishes only ports that name a hostPort); the canary track's
    Deployment (label track: canary), when the chart renders one, on --canary-port. Each
    emptyDir volume is renamed after its Deployment: podman 4.3 makes an emptyDir a named volume
    called after the volume, shared by every pod that uses the same name, where Kubernetes gives
    each pod its own (two tracks would share /tmp and the metrics directory in it). With
    --secrets, each Secret goes to DIR/<name>.json instead, as the JSON object of its data
    (base64 values), the form `podman secret create` takes and every podman's `secretKeyRef`
    reads (podman 4.3 stores a Secret document of the kube file in a form its own `secretKeyRef`
    cannot read).
manifests.py helm-test-script FILE
    Prints the `helm test` pod's shell script, preceded by exports of its environment except URL,
    so that the host's sh and curl can run the same check against a pod published on 127.0.0.1.
manifests.py portable-schema SCHEMA OUT
    Copies a CRD JSON schema, dropping `pattern`s written in Go's regex dialect with inline flags
    such as `(?i)`, which JSON Schema's ECMAScript dialect (and so check-jsonschema) rejects as
    invalid; prints the path of each dropped pattern.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shlex
import sys
from pathlib import Path

import yaml

PLAYABLE_KINDS = ("ConfigMap", "Secret", "Deployment")


def documents(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def split(path: Path, folder: Path) -> list[tuple[str, Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for doc in documents(path):
        kind = doc.get("kind", "Unknown")
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", doc.get("metadata", {}).get("name", "unnamed"))
        target = folder / f"{kind.lower()}-{name}.yaml"
        if target.exists():
            raise SystemExit(f"manifests: two {kind} documents named {name} in {path}")
        target.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        written.append((kind, target))
    return written


def publish_http(deployment: dict, host_port: int) -> None:
    deployment["spec"]["replicas"] = 1
    containers = deployment["spec"]["template"]["spec"]["containers"]
    ports = [port for c in containers for port in c.get("ports", []) if port.get("name") == "http"]
    if not ports:
        raise SystemExit("manifests: the Deployment has no container port named http")
    for port in ports:
        port["hostPort"] = host_port
        port["hostIP"] = "127.0.0.1"


def keep_init_containers(deployment: dict) -> None:
    """podman 4.3 removes a "once" init container (its default) right after starting it and fails
    when it is still running; "always" init containers are kept, and run before the pod's
    containers all the same. podman reads the annotation from the Deployment's own metadata."""
    if deployment["spec"]["template"]["spec"].get("initContainers"):
        annotations = deployment["metadata"].setdefault("annotations", {})
        annotations["io.podman.annotations.init.container.type"] = "always"


def own_empty_dirs(deployment: dict) -> None:
    """Rename the pod's emptyDir volumes (and their mounts) to <Deployment>-<volume>, so that
    podman's named volume for each is this pod's alone, as an emptyDir is in Kubernetes."""
    pod = deployment["spec"]["template"]["spec"]
    prefix = deployment["metadata"]["name"]
    renamed = {}
    for volume in pod.get("volumes") or []:
        if "emptyDir" in volume:
            renamed[volume["name"]] = volume["name"] = f"{prefix}-{volume['name']}"
    for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        for mount in container.get("volumeMounts") or []:
            mount["name"] = renamed.get(mount["name"], mount["name"])


def track(deployment: dict) -> str:
    """The chart's track of a Deployment: stable (also for a Deployment without the label) or
    canary."""
    return deployment["metadata"].get("labels", {}).get("track", "stable")


def secret_data(secret: dict) -> dict[str, str]:
    data = dict(secret.get("data") or {})
    for key, value in (secret.get("stringData") or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    return data


def kube_play(
    path: Path,
    out: Path,
    host_port: int,
    secrets: Path | None = None,
    canary_port: int | None = None,
) -> None:
    selected = [doc for doc in documents(path) if doc.get("kind") in PLAYABLE_KINDS]
    if secrets is not None:
        secrets.mkdir(parents=True, exist_ok=True)
        for secret in [doc for doc in selected if doc["kind"] == "Secret"]:
            target = secrets / f"{secret['metadata']['name']}.json"
            target.write_text(json.dumps(secret_data(secret)), encoding="utf-8")
        selected = [doc for doc in selected if doc["kind"] != "Secret"]
    ports = {"stable": host_port, "canary": canary_port}
    found = [doc for doc in selected if doc["kind"] == "Deployment"]
    deployments = {track(doc): doc for doc in found}
    if "stable" not in deployments or len(deployments) != len(found):
        raise SystemExit(f"manifests: expected one Deployment per track in {path}")
    for name, deployment in deployments.items():
        if ports.get(name) is None:
            raise SystemExit(f"manifests: no host port for the {name} Deployment (--canary-port)")
        publish_http(deployment, ports[name])
        keep_init_containers(deployment)
        own_empty_dirs(deployment)
    # ConfigMaps and Secrets first: podman resolves envFrom references in document order.
    selected.sort(key=lambda doc: PLAYABLE_KINDS.index(doc["kind"]))
    out.write_text(yaml.safe_dump_all(selected, sort_keys=False), encoding="utf-8")


def helm_test_script(path: Path) -> str:
    pods = [
        doc
        for doc in documents(path)
        if doc.get("kind") == "Pod"
        and doc["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
    ]
    if len(pods) != 1:
        raise SystemExit(f"manifests: expected one helm test pod in {path}, found {len(pods)}")
    container = pods[0]["spec"]["containers"][0]
    exports = [
        f"export {e['name']}={shlex.quote(e['value'])}"
        for e in container.get("env", [])
        if e["name"] != "URL"
    ]
    return "\n".join([*exports, *container["args"]])


GO_INLINE_FLAGS = re.compile(r"\(\?[imsU]+\)")


def drop_go_patterns(node: object, path: str = "") -> list[str]:
    dropped = []
    if isinstance(node, dict):
        pattern = node.get("pattern")
        if isinstance(pattern, str) and GO_INLINE_FLAGS.search(pattern):
            del node["pattern"]
            dropped.append(f"{path or '/'}: {pattern}")
        for key, child in node.items():
            dropped += drop_go_patterns(child, f"{path}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            dropped += drop_go_patterns(child, f"{path}/{index}")
    return dropped


def portable_schema(source: Path, out: Path) -> list[str]:
    schema = json.loads(source.read_text(encoding="utf-8"))
    dropped = drop_go_patterns(schema)
    out.write_text(json.dumps(schema), encoding="utf-8")
    return dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    split_parser = commands.add_parser("split")
    split_parser.add_argument("file", type=Path)
    split_parser.add_argument("folder", type=Path)
    play_parser = commands.add_parser("kube-play")
    play_parser.add_argument("file", type=Path)
    play_parser.add_argument("out", type=Path)
    play_parser.add_argument("--host-port", type=int, required=True)
    play_parser.add_argument("--canary-port", type=int)
    play_parser.add_argument("--secrets", type=Path)
    test_parser = commands.add_parser("helm-test-script")
    test_parser.add_argument("file", type=Path)
    schema_parser = commands.add_parser("portable-schema")
    schema_parser.add_argument("schema", type=Path)
    schema_parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "split":
        for kind, target in split(args.file, args.folder):
            print(kind, target)
    elif args.command == "kube-play":
        kube_play(args.file, args.out, args.host_port, args.secrets, args.canary_port)
    elif args.command == "helm-test-script":
        print(helm_test_script(args.file))
    else:
        for dropped in portable_schema(args.schema, args.out):
            print(dropped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
