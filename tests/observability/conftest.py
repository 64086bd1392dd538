"""Helpers of the observability tests: the chart as `helm template` renders it, rules, dashboard."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from support import REPO, require_tool

CHART = REPO / "chart" / "wine-quality"
DASHBOARD = CHART / "dashboards" / "wine-quality.json"
PROMTOOL_TESTS = REPO / "tests" / "promtool"
# The promtool tests and the scrape test use this release: the rules then select
# {job="wine-quality", namespace="wine-quality"} (prometheus-operator sets job to the Service name).
RELEASE = "wine-quality"
NAMESPACE = "wine-quality"


def render(*args: str) -> list[dict]:
    """The documents of `helm template RELEASE CHART --namespace NAMESPACE ARGS`."""
    helm = require_tool("helm")
    result = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def prometheus_rule(*args: str) -> dict:
    """The one PrometheusRule rendered with prometheusRule.enabled=true and ARGS."""
    rules = of_kind(render("--set", "prometheusRule.enabled=true", *args), "PrometheusRule")
    assert len(rules) == 1, rules
    return rules[0]


def write_rule_file(rule: dict, path: Path) -> Path:
    """The PrometheusRule's `spec` is a Prometheus rule file (`groups:`); write it to `path`."""
    path.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    return path


def alert_names(rule: dict) -> set[str]:
    return {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r}


@pytest.fixture(scope="session")
def default_rule() -> dict:
    """The PrometheusRule with the chart's default thresholds."""
    return prometheus_rule()


@pytest.fixture(scope="session")
def default_rule_file(default_rule: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rule_file(default_rule, tmp_path_factory.mktemp("rules") / "rules.yaml")


@pytest.fixture(scope="session")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


# Series of kube-state-metrics, which a cluster with kube-prometheus-stack has and this machine
# cannot: queries using them are only checked to parse. Every `kube_*` metric of the dashboard must
# be listed here.
KUBE_STATE_METRICS = frozenset(
    {
        "kube_horizontalpodautoscaler_status_current_replicas",
        "kube_horizontalpodautoscaler_status_desired_replicas",
        "kube_horizontalpodautoscaler_spec_min_replicas",
        "kube_horizontalpodautoscaler_spec_max_replicas",
    }
)
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


@dataclass(frozen=True)
class Query:
    panel: str
    ref: str
    expr: str

    @property
    def metrics(self) -> set[str]:
        """Metric names the expression selects (the dashboard always writes `name{matchers}`)."""
        return set(_SELECTOR.findall(self.expr))

    @property
    def needs_kube_state_metrics(self) -> bool:
        return bool(self.metrics & KUBE_STATE_METRICS)

    def resolved(self, variables: dict[str, str]) -> str:
        """The expression with Grafana's variables ($namespace, $job, $__rate_interval) set."""
        return _VARIABLE.sub(lambda m: variables[m.group(1)], self.expr)


def dashboard_queries(dashboard: dict) -> list[Query]:
    return [
        Query(panel["title"], target["refId"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
