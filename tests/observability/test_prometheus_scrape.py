"""A real Prometheus scrapes the real service: the metrics are right, not only present.

gunicorn serves a trained artifact with several workers on a free 127.0.0.1 port. Prometheus
(Debian's package) scrapes it with a job equivalent to the chart's ServiceMonitor (its path, the
Service name as `job`, the release namespace as `namespace`, a 1 s interval) and evaluates the
chart's rendered alert rules. The test sends a known mix of traffic, waits for the scrapes and
compares what Prometheus's HTTP API answers with what was sent. The dashboard's queries and the
metric list of the README are checked against the same Prometheus.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from gunicorn_server import GunicornServer, free_port, stop_process
from support import REPO, require_tool
from wine_quality.core.features import FEATURE_NAMES, FEATURES, resolve

from .conftest import (
    DASHBOARD,
    KUBE_STATE_METRICS,
    NAMESPACE,
    dashboard_queries,
    of_kind,
    prometheus_rule,
    render,
    write_rule_file,
)

pytestmark = pytest.mark.slow

WORKERS = 3
SCRAPE_INTERVAL = "1s"
DOC = REPO / "README.md"
PLOT_SCRIPT = REPO / "scripts" / "plot-scrape.py"
# Pushed out of the training range, within the physical bounds: alcohol above the training
# maximum (15 of 117 rows, above the 10% drift threshold), sulphates below the training minimum
# (4 rows, below it). No other feature leaves its range.
HIGH_ALCOHOL_SINGLES = 5
HIGH_ALCOHOL_BATCH = 10
LOW_SULPHATES_IN_BATCH = 4
BATCH_SIZES = (3, 7, 20, 50)
GOOD_SINGLES = 12
CSV_ROWS = 10
# Added to every series by the scrape (target labels), not by the service.
TARGET_LABELS = {"__name__", "job", "instance", "namespace"}
# Pause between the kinds of traffic, longer than the scrape interval: rate() then sees each
# kind arrive (a burst inside one scrape would look like series born with their final value).
PHASE_PAUSE = 1.5


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except (requests.RequestException, AssertionError, KeyError) as exc:
            last_error = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last error: {last_error})")


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Prometheus:
    """The parts of Prometheus's HTTP API the tests use."""

    def __init__(self, url: str):
        self.url = url

    def api(self, endpoint: str, **params: Any) -> Any:
        response = requests.get(f"{self.url}/api/v1/{endpoint}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"{endpoint} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def by(self, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        """{(label values...): value} of an instant vector."""
        return {
            tuple(s["metric"].get(label, "") for label in labels): float(s["value"][1])
            for s in self.query(expr)
        }

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, f"{expr}: {result}"
        return float(result[0]["value"][1])


@dataclass
class Traffic:
    """What the test sent and what the service answered."""

    by_status: Counter = field(default_factory=Counter)  # (method, status) -> requests
    by_route: Counter = field(default_factory=Counter)  # (method, route template, status)
    predicted_rows: int = 0
    prediction_requests: int = 0
    qualities: list[float] = field(default_factory=list)
    out_of_range: Counter = field(default_factory=Counter)  # feature key -> rows

    def count(self, method: str, route: str, status: str, n: int = 1) -> None:
        self.by_status[method, status] += n
        self.by_route[method, route, status] += n

    def record(self, method: str, route: str, response: requests.Response) -> requests.Response:
        self.count(method, route, str(response.status_code))
        if response.status_code == 200 and route in ("/v1/predict", "/predict"):
            body = response.json()
            records = body.get("predictions", [body])
            self.prediction_requests += 1
            self.predicted_rows += len(records)
            self.qualities += [r["quality"] for r in records]
        return response


class Client:
    """HTTP client of the service that records every answered request in `traffic`."""

    def __init__(self, base_url: str, traffic: Traffic):
        self.base_url = base_url
        self.traffic = traffic
        self.session = requests.Session()

    def get(self, url: str, route: str) -> requests.Response:
        return self.traffic.record("GET", route, self.session.get(self.base_url + url, timeout=30))

    def post(self, url: str, route: str, **kwargs: Any) -> requests.Response:
        response = self.session.post(self.base_url + url, timeout=30, **kwargs)
        return self.traffic.record("POST", route, response)


@dataclass
class Stack:
    prometheus: Prometheus
    traffic: Traffic
    metadata: dict
    ready: dict  # the service's /readyz answer
    job: str
    namespace: str
    started: float
    finished: float


def metadata_feature(metadata: dict, key: str) -> dict:
    return next(f for f in metadata["features"] if resolve(f["name"]).key == key)


def row_at(metadata: dict, quantile: str) -> dict[str, float]:
    """A row of the training distribution: every feature at its training `quantile`."""
    return {resolve(f["name"]).key: f["quantiles"][quantile] for f in metadata["features"]}


def typical_rows(metadata: dict, count: int) -> list[dict[str, float]]:
    quantiles = ("0.25", "0.5", "0.75")
    return [row_at(metadata, quantiles[i % 3]) for i in range(count)]


def outside_training_range(metadata: dict, key: str, above: bool) -> float:
    """A value of `key` outside its training range but inside its physical bounds."""
    recorded = metadata_feature(metadata, key)
    bounds = resolve(key)
    value = recorded["train_max"] * 1.1 if above else recorded["train_min"] * 0.5
    assert bounds.minimum <= value <= bounds.maximum
    assert not recorded["train_min"] <= value <= recorded["train_max"]
    return value


def send_invalid_requests(client: Client, metadata: dict) -> None:
    good = row_at(metadata, "0.5")
    invalid = [
        ({"json": {**good, "ph": 20.0}}, 422),  # outside the physical bounds
        ({"json": {k: v for k, v in good.items() if k != "alcohol"}}, 422),  # a missing field
        ({"json": {"instances": [good, {**good, "density": "heavy"}]}}, 422),
        ({"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400),
        ({"data": "alcohol=10", "headers": {"Content-Type": "text/plain"}}, 415),
    ]
    for kwargs, status in invalid:
        assert client.post("/v1/predict", "/v1/predict", **kwargs).status_code == status
    assert client.get("/no/such/page", "unmatched").status_code == 404
    assert client.get("/healthz", "/healthz").status_code == 200


def send_traffic(client: Client, metadata: dict) -> None:
    """The known mix: good singles, JSON and CSV batches, out-of-range inputs, invalid requests."""
    send_invalid_requests(client, metadata)
    alcohol_high = outside_training_range(metadata, "alcohol", above=True)
    sulphates_low = outside_training_range(metadata, "sulphates", above=False)
    for row in typical_rows(metadata, GOOD_SINGLES):
        assert client.post("/v1/predict", "/v1/predict", json=row).status_code == 200
    for size in BATCH_SIZES:
        response = client.post(
            "/v1/predict", "/v1/predict", json={"instances": typical_rows(metadata, size)}
        )
        assert response.status_code == 200, response.text
    time.sleep(PHASE_PAUSE)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(FEATURE_NAMES)
    for row in typical_rows(metadata, CSV_ROWS):
        writer.writerow([row[f.key] for f in FEATURES])
    response = client.post(
        "/predict",
        "/predict",
        data=out.getvalue(),
        headers={"Content-Type": "text/csv", "Accept": "application/json"},
    )
    assert response.status_code == 200, response.text
    time.sleep(PHASE_PAUSE)

    for row in typical_rows(metadata, HIGH_ALCOHOL_SINGLES):
        assert (
            client.post(
                "/v1/predict", "/v1/predict", json={**row, "alcohol": alcohol_high}
            ).status_code
            == 200
        )
    batch = [{**row, "alcohol": alcohol_high} for row in typical_rows(metadata, HIGH_ALCOHOL_BATCH)]
    for row in batch[:LOW_SULPHATES_IN_BATCH]:
        row["sulphates"] = sulphates_low
    assert client.post("/v1/predict", "/v1/predict", json={"instances": batch}).status_code == 200
    client.traffic.out_of_range.update(
        {"alcohol": HIGH_ALCOHOL_SINGLES + HIGH_ALCOHOL_BATCH, "sulphates": LOW_SULPHATES_IN_BATCH}
    )
    time.sleep(PHASE_PAUSE)

    send_invalid_requests(client, metadata)


def chart_scrape_job() -> tuple[str, str]:
    """(job, metrics path) that kube-prometheus-stack derives from the chart's ServiceMonitor."""
    docs = render("--set", "serviceMonitor.enabled=true")
    (monitor,) = of_kind(docs, "ServiceMonitor")
    (service,) = of_kind(docs, "Service")
    (deployment,) = of_kind(docs, "Deployment")
    (endpoint,) = monitor["spec"]["endpoints"]
    # endpoint.port names a Service port, whose targetPort names the container port gunicorn binds
    (service_port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    (container_port,) = [p for p in container["ports"] if p["name"] == service_port["targetPort"]]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert str(container_port["containerPort"]) == env.get("PORT", "8080")
    return service["metadata"]["name"], endpoint.get("path", "/metrics")


def start_prometheus(
    folder: Path, port: int, job: str, path: str, target: str, rules: Path
) -> subprocess.Popen:
    config = {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": path,
                "static_configs": [{"targets": [target], "labels": {"namespace": NAMESPACE}}],
            }
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (folder / "prometheus.log").open("w")
    return subprocess.Popen(
        [
            require_tool("prometheus"),
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=folder,
    )


@pytest.fixture(scope="module")
def stack(
    small_model_dir: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    require_tool("prometheus")
    folder = tmp_path_factory.mktemp("scrape")
    job, path = chart_scrape_job()
    rules = write_rule_file(prometheus_rule(), folder / "rules.yaml")
    metadata = json.loads((small_model_dir / "metadata.json").read_text())
    # With a shadow (another model) and the prediction log on, every metric the service can
    # expose is scraped.
    service = GunicornServer.start(
        small_model_dir,
        folder,
        GUNICORN_WORKERS=str(WORKERS),
        GUNICORN_SHUTDOWN_DELAY="0",
        WINE_QUALITY_SHADOW_MODEL_DIR=str(model_dir),
        WINE_QUALITY_PREDICTION_LOG="stdout",
    )
    traffic = Traffic()
    for status, count in service.readiness_probes.items():  # the service counted these too
        traffic.count("GET", "/readyz", str(status), count)
    client = Client(service.url, traffic)
    prometheus_port = free_port()
    prometheus_process = None
    try:
        ready = client.get("/readyz", "/readyz").json()
        prometheus_process = start_prometheus(
            folder, prometheus_port, job, path, f"127.0.0.1:{service.port}", rules
        )
        prometheus = Prometheus(f"http://127.0.0.1:{prometheus_port}")

        def target_up() -> bool:
            assert prometheus_process.poll() is None, (
                f"prometheus exited:\n{tail(folder / 'prometheus.log')}"
            )
            return prometheus.by(f'up{{job="{job}"}}', "job") == {(job,): 1.0}

        wait_for(target_up, 60, "Prometheus to scrape the service")
        started = time.time()
        send_traffic(client, metadata)
        total = sum(traffic.by_status.values())
        wait_for(
            lambda: (
                prometheus.by(f'sum(flask_http_request_total{{job="{job}"}})') == {(): float(total)}
            ),
            60,
            f"a scrape that counts all {total} requests",
        )
        time.sleep(3)  # two more scrapes: every new series then has the samples rate() needs
        yield Stack(prometheus, traffic, metadata, ready, job, NAMESPACE, started, time.time())
    finally:
        if prometheus_process is not None:
            stop_process(prometheus_process, timeout=30)
        service.stop()


def selector(stack: Stack) -> str:
    return f'job="{stack.job}", namespace="{stack.namespace}"'


def test_request_counts_by_status_equal_what_was_sent(stack: Stack):
    expr = f"sum by (method, status) (flask_http_request_total{{{selector(stack)}}})"
    counted = stack.prometheus.by(expr, "method", "status")
    assert counted == {key: float(n) for key, n in stack.traffic.by_status.items()}
    assert {status for _, status in counted} >= {"200", "400", "404", "415", "422"}


def test_latency_histogram_has_every_request_in_its_buckets(stack: Stack):
    sel = selector(stack)
    counts = stack.prometheus.by(
        f"sum by (method, path, status) (flask_http_request_duration_seconds_count{{{sel}}})",
        "method",
        "path",
        "status",
    )
    assert counts == {key: float(n) for key, n in stack.traffic.by_route.items()}
    expr = f'sum by (le) (flask_http_request_duration_seconds_bucket{{{sel}, path="/v1/predict"}})'
    buckets = stack.prometheus.by(expr, "le")
    ordered = sorted(((float(le), n) for (le,), n in buckets.items()))
    predict_requests = sum(
        n for (_, route, _), n in stack.traffic.by_route.items() if route == "/v1/predict"
    )
    assert ordered[-1] == (math.inf, predict_requests)
    assert [n for _, n in ordered] == sorted(n for _, n in ordered)  # cumulative
    assert any(n > 0 for le, n in ordered if le != math.inf)  # finite buckets are populated


def test_predicted_rows_equal_what_was_sent(stack: Stack):
    sel = selector(stack)
    prom, sent = stack.prometheus, stack.traffic
    expected_rows = (
        GOOD_SINGLES + sum(BATCH_SIZES) + CSV_ROWS + HIGH_ALCOHOL_SINGLES + HIGH_ALCOHOL_BATCH
    )
    assert sent.predicted_rows == expected_rows
    assert prom.value(f"sum(wine_quality_predictions_total{{{sel}}})") == expected_rows
    assert prom.value(f"sum(wine_quality_batch_rows_count{{{sel}}})") == sent.prediction_requests
    assert prom.value(f"sum(wine_quality_batch_rows_sum{{{sel}}})") == expected_rows
    assert prom.value(f"sum(wine_quality_predicted_quality_count{{{sel}}})") == expected_rows
    assert prom.value(f"sum(wine_quality_predicted_quality_sum{{{sel}}})") == pytest.approx(
        sum(sent.qualities), abs=1e-3
    )
    top = prom.value(f'sum(wine_quality_predicted_quality_bucket{{{sel}, le="+Inf"}})')
    assert top == expected_rows


def test_out_of_range_counter_moved_for_exactly_the_features_pushed_out(stack: Stack):
    counted = stack.prometheus.by(
        f"wine_quality_out_of_range_total{{{selector(stack)}}}", "feature"
    )
    moved = {feature: n for (feature,), n in counted.items() if n > 0}
    assert moved == {k: float(n) for k, n in stack.traffic.out_of_range.items()}
    assert set(counted) == {(f.key,) for f in FEATURES}  # every feature has its series


def test_model_info_carries_the_served_model(stack: Stack):
    sel = selector(stack)
    info = stack.prometheus.query(f"wine_quality_model_info{{{sel}}}")
    assert len(info) == 1, info
    labels = info[0]["metric"]
    assert labels["version"] == stack.metadata["version"] == stack.ready["model_version"]
    assert labels["algorithm"] == stack.metadata["algorithm"]
    assert labels["runtime"] == stack.ready["runtime"]
    assert float(info[0]["value"][1]) == 1
    assert stack.prometheus.value(f"wine_quality_training_target_mean{{{sel}}}") == pytest.approx(
        stack.metadata["target"]["mean"]
    )
    assert stack.prometheus.value(f"wine_quality_model_load_seconds{{{sel}}}") > 0


def test_chart_alerts_evaluate_on_the_live_series(stack: Stack):
    """The rendered rules run without errors; only the drift alert (alcohol) is pending."""

    def drift_pending() -> list[dict]:
        alerts = stack.prometheus.api("alerts")["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "WineQualityInputDrift"]

    pending = wait_for(drift_pending, 20, "WineQualityInputDrift to turn pending")
    assert [(a["labels"]["feature"], a["state"]) for a in pending] == [("alcohol", "pending")]
    rules = [rule for group in stack.prometheus.api("rules")["groups"] for rule in group["rules"]]
    assert len(rules) == 6
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    active = {a["labels"]["alertname"] for a in stack.prometheus.api("alerts")["alerts"]}
    assert not active & {"WineQualityDown", "WineQualityTargetDown", "WineQualityHighErrorRatio"}


def test_dashboard_queries_parse_and_return_data(stack: Stack, dashboard: dict, tmp_path: Path):
    variables = {"namespace": stack.namespace, "job": stack.job, "__rate_interval": "5m"}
    empty, kube_state = [], []
    for query in dashboard_queries(dashboard):
        result = stack.prometheus.query(query.resolved(variables))  # a parse error fails here
        if query.needs_kube_state_metrics:
            kube_state.append(f"{query.panel}/{query.ref}")
        elif not result:
            empty.append(f"{query.panel}/{query.ref}: {query.expr}")
    assert empty == []
    # kube-state-metrics cannot run here: these queries are only parsed above.
    assert kube_state == [f"Replicas vs HPA target/{ref}" for ref in "BCDE"]
    used = set().union(*(q.metrics for q in dashboard_queries(dashboard)))
    assert {m for m in used if m.startswith("kube_")} == KUBE_STATE_METRICS

    outputs = [tmp_path]
    if os.environ.get("WINE_QUALITY_DOCS_IMAGES"):
        outputs.append(Path(os.environ["WINE_QUALITY_DOCS_IMAGES"]))
    for folder in outputs:
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                str(PLOT_SCRIPT),
                "--prometheus",
                stack.prometheus.url,
                "--dashboard",
                str(DASHBOARD),
                "--var",
                f"namespace={stack.namespace}",
                "--var",
                f"job={stack.job}",
                "--start",
                str(stack.started - 5),
                "--end",
                str(stack.finished),
                "--output",
                str(folder / "monitoring-scrape.png"),
            ],
            check=True,
            timeout=120,
        )
        assert (folder / "monitoring-scrape.png").stat().st_size > 10_000


def documented_metrics() -> dict[str, set[str]]:
    """{metric: label names} from the README's metrics table."""
    text = DOC.read_text()
    start, end = "<!-- metrics-table:start -->", "<!-- metrics-table:end -->"
    table = text[text.index(start) : text.index(end)]
    rows = re.findall(r"^\| `([a-z_:]+)` \| [a-z]+ \| ([^|]*) \|", table, re.MULTILINE)
    return {name: set(re.findall(r"`([a-z_]+)`", labels)) for name, labels in rows}


def test_monitoring_doc_lists_every_exposed_metric_with_its_labels(stack: Stack):
    names = stack.prometheus.api("label/__name__/values", **{"match[]": f'{{job="{stack.job}"}}'})
    exposed: dict[str, set[str]] = {}
    for name in names:
        if name in ("up", "ALERTS", "ALERTS_FOR_STATE") or name.startswith("scrape_"):
            continue  # made by Prometheus (scrapes, alert rules), not the service
        series = stack.prometheus.api("series", **{"match[]": f'{name}{{job="{stack.job}"}}'})
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        family = base if f"{base}_bucket" in names else name
        labels = set().union(*(s.keys() for s in series)) - TARGET_LABELS - {"le"}
        exposed.setdefault(family, set()).update(labels)
    documented = documented_metrics()
    # Counted only when a request raises an unhandled exception, which no client input can cause.
    only_on_failure = {"flask_http_request_exceptions_total": {"method", "status"}}
    assert documented == exposed | only_on_failure
