#!/usr/bin/env python3
"""Plot the panels of the Grafana dashboard from a Prometheus server, as one PNG.

    .venv/bin/python scripts/plot-scrape.py --prometheus http://127.0.0.1:9090 \
        --var namespace=wine-quality --var job=wine-quality --minutes 30 --output scrape.png

Runs every query of chart/wine-quality/dashboards/wine-quality.json over the time range
(query_range) and draws each panel with matplotlib: time series as lines, the predicted-quality
heatmap as a bar chart of the range's histogram, the model table as text. Panels whose series
are absent (kube-state-metrics outside a cluster) say "no data". The observability test runs it
on its scrape (docs/images/monitoring-scrape.png comes from that run).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import requests
from cycler import cycler

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DASHBOARD = REPO / "chart" / "wine-quality" / "dashboards" / "wine-quality.json"
VARIABLE = re.compile(r"\$\{?(\w+)\}?")
LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", required=True, help="base URL of the Prometheus server")
    parser.add_argument(
        "--dashboard",
        type=Path,
        default=DEFAULT_DASHBOARD,
        help="Grafana dashboard JSON (default: the chart's)",
    )
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="dashboard variable, e.g. namespace=wine-quality (repeatable)",
    )
    parser.add_argument("--start", type=float, help="range start, Unix seconds")
    parser.add_argument("--end", type=float, help="range end, Unix seconds (default: now)")
    parser.add_argument(
        "--minutes",
        type=float,
        default=30,
        help="range length when --start is not given (default: 30)",
    )
    parser.add_argument("--output", type=Path, required=True, help="PNG file to write")
    return parser.parse_args()


class Source:
    def __init__(self, url: str, variables: dict[str, str], start: float, end: float):
        self.url = url.rstrip("/")
        self.start, self.end = start, end
        self.step = max(1.0, (end - start) / 200)
        # a window holding a few samples at any scrape interval up to the step
        self.variables = {"__rate_interval": f"{max(4 * int(self.step), 10)}s", **variables}

    def expr(self, text: str) -> str:
        return VARIABLE.sub(lambda m: self.variables[m.group(1)], text)

    def get(self, endpoint: str, **params: object) -> list[dict]:
        response = requests.get(f"{self.url}/api/v1/{endpoint}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()["data"]["result"]

    def range(self, expr: str) -> list[dict]:
        return self.get(
            "query_range", query=self.expr(expr), start=self.start, end=self.end, step=self.step
        )

    def instant(self, expr: str) -> list[dict]:
        return self.get("query", query=self.expr(expr), time=self.end)


def legend(template: str, metric: dict[str, str]) -> str:
    return LEGEND.sub(lambda m: metric.get(m.group(1), ""), template) or str(metric or "value")


def draw_timeseries(ax: plt.Axes, panel: dict, source: Source) -> bool:
    drawn = False
    for target in panel["targets"]:
        for series in source.range(target["expr"]):
            points = [
                (datetime.fromtimestamp(t), float(v))
                for t, v in series["values"]
                if math.isfinite(float(v))
            ]
            if points:
                ax.plot(
                    *zip(*points, strict=True),
                    label=legend(target.get("legendFormat", ""), series["metric"]),
                )
                drawn = True
    if drawn:
        ax.legend(fontsize=6, loc="upper left")
        ax.tick_params(labelsize=6)
        ax.set_ylabel(panel["fieldConfig"]["defaults"].get("unit", ""), fontsize=7)
    return drawn


def draw_histogram(ax: plt.Axes, panel: dict, source: Source) -> bool:
    """The heatmap's buckets summed over the whole range, de-cumulated, as bars."""
    expr = panel["targets"][0]["expr"].replace(
        "$__rate_interval", f"{int(source.end - source.start) + 1}s"
    )
    buckets = sorted((float(s["metric"]["le"]), float(s["value"][1])) for s in source.instant(expr))
    if not buckets:
        return False
    labels, counts, below = [], [], 0.0
    for le, cumulative in buckets:
        labels.append(f"≤{le:g}" if math.isfinite(le) else "+Inf")
        counts.append(cumulative - below)
        below = cumulative
    ax.bar(labels, counts, color="tab:orange")
    ax.set_xlabel("predicted quality bucket", fontsize=7)
    ax.set_ylabel("rows", fontsize=7)
    ax.tick_params(labelsize=6)
    return True


def draw_table(ax: plt.Axes, panel: dict, source: Source) -> bool:
    lines = []
    for target in panel["targets"]:
        for series in source.instant(target["expr"]):
            labels = ", ".join(f"{k}={v}" for k, v in series["metric"].items())
            name = target.get("legendFormat") or labels
            lines.append(
                f"{name}: {float(series['value'][1]):g}" if not labels or name != labels else labels
            )
    ax.axis("off")
    ax.text(0.0, 0.9, "\n".join(lines), fontsize=7, va="top", family="monospace", wrap=True)
    return bool(lines)


def main() -> None:
    args = parse_args()
    end = args.end or time.time()
    start = args.start or end - args.minutes * 60
    source = Source(args.prometheus, dict(v.split("=", 1) for v in args.var), start, end)
    dashboard = json.loads(args.dashboard.read_text())
    panels = [p for p in dashboard["panels"] if p.get("targets")]
    tab20 = plt.get_cmap("tab20").colors  # ten hues, then their light shades: 20 distinct lines
    plt.rcParams["axes.prop_cycle"] = cycler(color=tab20[::2] + tab20[1::2])
    columns = 2
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(12, 3.2 * rows), squeeze=False)
    draw = {"heatmap": draw_histogram, "table": draw_table}
    for ax, panel in zip(axes.flat, panels, strict=False):
        ax.set_title(panel["title"], fontsize=9)
        if not draw.get(panel["type"], draw_timeseries)(ax, panel, source):
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        f"{dashboard['title']}: {datetime.fromtimestamp(start):%H:%M:%S}"
        f" - {datetime.fromtimestamp(end):%H:%M:%S}",
        fontsize=11,
    )
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=90)
    print(f"plot-scrape: wrote {args.output}")


if __name__ == "__main__":
    main()
