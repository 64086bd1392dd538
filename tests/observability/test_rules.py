"""The chart's PrometheusRule: valid for Prometheus and the CRD, and each alert proven by promtool.

The rules under test are the ones `helm template` renders from the chart, never a copy: the
`spec` of the rendered PrometheusRule is written to a rule file next to the unit tests of
tests/promtool/ and run with `promtool test rules`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support import REPO, require_tool

from .conftest import PROMTOOL_TESTS, alert_names, of_kind, prometheus_rule, render, write_rule_file

ALERTS = {
    "WineQualityHighErrorRatio",
    "WineQualityHighLatency",
    "WineQualityDown",
    "WineQualityTargetDown",
    "WineQualityInputDrift",
    "WineQualityPredictionShift",
}
# Off by default; their promtool tests render the chart with the values that switch them on.
OPTIONAL_ALERTS = {"WineQualityShadowDisagreement"}
UNIT_TESTS = sorted(PROMTOOL_TESTS.glob("*.test.yaml"))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def portable_crd_schema(name: str, folder: Path) -> Path:
    """The CRD's JSON schema without its Go-only regexes, which check-jsonschema rejects."""
    found = subprocess.run(
        [str(REPO / "scripts" / "crd-schemas.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    source = Path(found.stdout.strip())
    if found.returncode != 0 or not (source / name).is_file():
        pytest.fail(f"CRD schema {name} not found (scripts/crd-schemas.sh: {found.stderr.strip()})")
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "manifests.py"),
            "portable-schema",
            str(source / name),
            str(folder / name),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return folder / name


def check_jsonschema(schema: Path, document: dict, folder: Path) -> subprocess.CompletedProcess:
    path = folder / "document.yaml"
    path.write_text(yaml.safe_dump(document))
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("check-jsonschema")),
            "--schemafile",
            str(schema),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_monitoring_objects_are_off_by_default():
    kinds = {doc["kind"] for doc in render()}
    assert "PrometheusRule" not in kinds
    assert all(
        not doc["metadata"]["name"].endswith("-dashboard") for doc in of_kind(render(), "ConfigMap")
    )


def test_rendered_rules_pass_promtool_check(default_rule: dict, default_rule_file: Path):
    assert alert_names(default_rule) == ALERTS
    result = promtool("check", "rules", str(default_rule_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


@pytest.mark.parametrize("unit_test", UNIT_TESTS, ids=lambda p: p.name.removesuffix(".test.yaml"))
def test_promtool_unit_tests_pass_on_the_rendered_rules(unit_test: Path, tmp_path: Path):
    values = unit_test.with_name(unit_test.name.replace(".test.yaml", ".values.yaml"))
    rule = prometheus_rule(*(["--values", str(values)] if values.is_file() else []))
    write_rule_file(rule, tmp_path / "rules.yaml")
    shutil.copy(unit_test, tmp_path / unit_test.name)
    result = promtool("test", "rules", str(tmp_path / unit_test.name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_shown_firing_and_quiet():
    firing: set[str] = set()
    quiet: set[str] = set()
    for unit_test in UNIT_TESTS:
        for case in yaml.safe_load(unit_test.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing == ALERTS | OPTIONAL_ALERTS, f"no firing case for {ALERTS - firing}"
    assert quiet == ALERTS | OPTIONAL_ALERTS, f"no quiet case for {ALERTS - quiet}"


def test_unit_tests_fail_when_a_threshold_moves(tmp_path: Path):
    """The promtool tests depend on the thresholds: raising one turns its firing case red."""
    rule = prometheus_rule("--set-json", "prometheusRule.errorRatio.threshold=0.5")
    write_rule_file(rule, tmp_path / "rules.yaml")
    shutil.copy(PROMTOOL_TESTS / "alerts.test.yaml", tmp_path)
    result = promtool("test", "rules", str(tmp_path / "alerts.test.yaml"))
    assert result.returncode != 0
    assert "alertname: WineQualityHighErrorRatio, time: 15m" in result.stdout + result.stderr


def test_thresholds_and_durations_come_from_values():
    rule = prometheus_rule(
        "--set",
        "prometheusRule.latency.p99Seconds=1.5",
        "--set",
        "prometheusRule.latency.window=10m",
        "--set",
        "prometheusRule.latency.for=2m",
        "--set",
        "prometheusRule.inputDrift.enabled=false",
        "--set-json",
        "prometheusRule.predictionShift.trainingMean=5.7",
        "--set",
        "prometheusRule.additionalAlertLabels.team=ml",
        "--set",
        "prometheusRule.runbookUrl=https://runbooks.example.com/wine-quality",
    )
    rules = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(rules) == ALERTS - {"WineQualityInputDrift"}
    latency = rules["WineQualityHighLatency"]
    assert latency["for"] == "2m"
    assert "[10m]" in latency["expr"]
    assert latency["expr"].rstrip().endswith("> 1.5")
    assert "- 5.7" in rules["WineQualityPredictionShift"]["expr"]
    assert "wine_quality_training_target_mean" not in rules["WineQualityPredictionShift"]["expr"]
    for alert in rules.values():
        assert alert["labels"]["team"] == "ml"
        name = alert["alert"].lower()
        assert (
            alert["annotations"]["runbook_url"]
            == f"https://runbooks.example.com/wine-quality#{name}"
        )


SCHEMA = "monitoring.coreos.com-prometheusrule_v1.json"


@pytest.mark.parametrize(
    "args",
    [
        [],
        [
            "--set",
            "prometheusRule.labels.release=kube-prometheus-stack",
            "--set",
            "prometheusRule.annotations.owner=ml",
            "--set",
            "prometheusRule.additionalAlertLabels.team=ml",
            "--set",
            "prometheusRule.runbookUrl=https://runbooks.example.com/wine-quality",
            "--set-json",
            "prometheusRule.predictionShift.trainingMean=5.636",
        ],
    ],
    ids=["defaults", "all-options"],
)
def test_rendered_rule_validates_against_the_crd_schema(args: list[str], tmp_path: Path):
    schema = portable_crd_schema(SCHEMA, tmp_path)
    result = check_jsonschema(schema, prometheus_rule(*args), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_crd_schema_validation_catches_a_broken_rule(tmp_path: Path):
    schema = portable_crd_schema(SCHEMA, tmp_path)
    rule = prometheus_rule()
    rule["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    result = check_jsonschema(schema, rule, tmp_path)
    assert result.returncode != 0
    assert "five minutes" in result.stdout + result.stderr
