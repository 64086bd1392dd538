#!/usr/bin/env python3
"""What a Prometheus scrapes for the chart's ServiceMonitor, read from rendered manifests, for a
plain Prometheus (no Prometheus Operator) reaching the pods through published or forwarded ports
(scripts/prometheus-scrape.sh).

scrape-config.py endpoint RENDERED
    Resolves the ServiceMonitor's first endpoint the way the Prometheus Operator does: the
    ServiceMonitor selects the Service by labels, its `port` names a port of that Service, whose
    `targetPort` names (or numbers) a container port of the pods the Service selects. Prints one
    JSON object: container_port, port_name, path, interval, scrape_timeout, pod_selector (the
    Service's selector as `kubectl --selector` takes it) and namespace.
scrape-config.py prometheus RENDERED --target POD=HOST:PORT [--target ...]
    Prints a Prometheus configuration with one job for that endpoint: its path, interval, timeout
    and honorLabels, its metricRelabelings, and one static target per pod, labelled like the
    operator's (namespace, service, pod, job, and the ServiceMonitor's podTargetLabels, read from
    the Deployment whose name prefixes the pod's).

Exits 1 with a message naming the manifest and field when the endpoint does not resolve.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

# ServiceMonitor relabeling fields (camelCase) and Prometheus relabel_config keys.
RELABEL_KEYS = {
    "sourceLabels": "source_labels",
    "separator": "separator",
    "targetLabel": "target_label",
    "regex": "regex",
    "modulus": "modulus",
    "replacement": "replacement",
    "action": "action",
}


class Unresolved(Exception):
    """The ServiceMonitor's endpoint does not lead to a container port."""


def documents(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc.get("kind") == kind]


def matches(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def name_of(doc: dict) -> str:
    return f"{doc['kind']} {doc['metadata']['name']}"


def service_monitor(docs: list[dict]) -> dict:
    monitors = of_kind(docs, "ServiceMonitor")
    if len(monitors) != 1:
        raise Unresolved(f"expected one ServiceMonitor in the manifests, found {len(monitors)}")
    monitor = monitors[0]
    if not monitor["spec"].get("endpoints"):
        raise Unresolved(f"{name_of(monitor)} has no spec.endpoints")
    return monitor


def selected_service(docs: list[dict], monitor: dict) -> dict:
    selector = monitor["spec"].get("selector", {}).get("matchLabels", {})
    services = [s for s in of_kind(docs, "Service") if matches(selector, s["metadata"]["labels"])]
    if len(services) != 1:
        raise Unresolved(
            f"{name_of(monitor)} spec.selector.matchLabels {selector} selects "
            f"{len(services)} Services, expected one"
        )
    return services[0]


def selected_deployments(docs: list[dict], service: dict) -> list[dict]:
    selector = service["spec"]["selector"]
    deployments = [
        d
        for d in of_kind(docs, "Deployment")
        if matches(selector, d["spec"]["template"]["metadata"].get("labels", {}))
    ]
    if not deployments:
        raise Unresolved(
            f"{name_of(service)} spec.selector {selector} selects no Deployment's pods"
        )
    return deployments


def container_port(deployment: dict, target: str | int) -> dict:
    ports = [
        port
        for container in deployment["spec"]["template"]["spec"]["containers"]
        for port in container.get("ports", [])
        if target in (port.get("name"), port.get("containerPort"))
    ]
    if not ports:
        raise Unresolved(f"{name_of(deployment)} has no container port {target!r}")
    return ports[0]


def endpoint(docs: list[dict]) -> dict:
    monitor = service_monitor(docs)
    first = monitor["spec"]["endpoints"][0]
    if "port" not in first:
        raise Unresolved(f"{name_of(monitor)} spec.endpoints[0] names no port")
    service = selected_service(docs, monitor)
    service_ports = [p for p in service["spec"]["ports"] if p.get("name") == first["port"]]
    if not service_ports:
        raise Unresolved(
            f"{name_of(monitor)} spec.endpoints[0].port {first['port']!r} is not a port "
            f"of {name_of(service)}"
        )
    target = service_ports[0].get("targetPort", service_ports[0]["port"])
    resolved = [container_port(d, target) for d in selected_deployments(docs, service)]
    if len({p["containerPort"] for p in resolved}) != 1:
        raise Unresolved(f"{name_of(service)} targetPort {target!r} differs between Deployments")
    selector = service["spec"]["selector"]
    return {
        "container_port": resolved[0]["containerPort"],
        "port_name": resolved[0].get("name", ""),
        "path": first.get("path", "/metrics"),
        "interval": first.get("interval", "30s"),
        "scrape_timeout": first.get("scrapeTimeout", "10s"),
        "honor_labels": bool(first.get("honorLabels", False)),
        "pod_selector": ",".join(f"{key}={value}" for key, value in sorted(selector.items())),
        "namespace": monitor["metadata"].get("namespace", "default"),
        "service": service["metadata"]["name"],
        "job": f"serviceMonitor/{monitor['metadata'].get('namespace', 'default')}"
        f"/{monitor['metadata']['name']}/0",
    }


def relabel_configs(rules: list[dict], field: str) -> list[dict]:
    configs = []
    for number, rule in enumerate(rules):
        unknown = set(rule) - set(RELABEL_KEYS)
        if unknown:
            raise Unresolved(
                f"{field}[{number}] has fields {sorted(unknown)} this config cannot map"
            )
        configs.append({RELABEL_KEYS[key]: value for key, value in rule.items()})
    return configs


def owner_labels(docs: list[dict], pod: str, keys: list[str]) -> dict[str, str]:
    """podTargetLabels of a pod, from the Deployment whose name is the longest prefix of the pod's
    (Kubernetes names a Deployment's pods <deployment>-<hash>-<id>, podman kube play
    <deployment>-pod-<n>)."""
    owners = [d for d in of_kind(docs, "Deployment") if pod.startswith(d["metadata"]["name"] + "-")]
    if not owners:
        return {}
    owner = max(owners, key=lambda d: len(d["metadata"]["name"]))
    labels = owner["spec"]["template"]["metadata"].get("labels", {})
    return {key: labels[key] for key in keys if key in labels}


TARGET = re.compile(r"^(?P<pod>[a-z0-9]([-a-z0-9.]*[a-z0-9])?)=(?P<address>[^\s=]+:\d+)$")


def prometheus_config(docs: list[dict], targets: list[str]) -> dict:
    found = endpoint(docs)
    monitor = service_monitor(docs)
    first = monitor["spec"]["endpoints"][0]
    if first.get("relabelings"):
        raise Unresolved(
            f"{name_of(monitor)} spec.endpoints[0].relabelings need Kubernetes service discovery; "
            "this configuration has static targets"
        )
    static = []
    for target in targets:
        parsed = TARGET.match(target)
        if not parsed:
            raise Unresolved(f"target {target!r} is not POD=HOST:PORT")
        pod = parsed["pod"]
        labels = {
            "namespace": found["namespace"],
            "service": found["service"],
            "pod": pod,
            "job": found["service"],
            **owner_labels(docs, pod, monitor["spec"].get("podTargetLabels", [])),
        }
        static.append({"targets": [parsed["address"]], "labels": labels})
    job = {
        "job_name": found["job"],
        "metrics_path": found["path"],
        "scrape_interval": found["interval"],
        "scrape_timeout": found["scrape_timeout"],
        "honor_labels": found["honor_labels"],
        "static_configs": static,
    }
    metric_rules = first.get("metricRelabelings") or []
    if metric_rules:
        job["metric_relabel_configs"] = relabel_configs(
            metric_rules, "spec.endpoints[0].metricRelabelings"
        )
    return {"scrape_configs": [job]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    endpoint_parser = commands.add_parser("endpoint", help="the resolved endpoint, as JSON")
    endpoint_parser.add_argument("rendered", type=Path)
    config_parser = commands.add_parser("prometheus", help="a Prometheus configuration")
    config_parser.add_argument("rendered", type=Path)
    config_parser.add_argument("--target", action="append", required=True, metavar="POD=HOST:PORT")
    args = parser.parse_args(argv)
    try:
        docs = documents(args.rendered)
        if args.command == "endpoint":
            print(json.dumps(endpoint(docs)))
        else:
            print(yaml.safe_dump(prometheus_config(docs, args.target), sort_keys=False), end="")
    except (Unresolved, OSError, yaml.YAMLError, KeyError) as error:
        print(f"scrape-config: {args.rendered}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
