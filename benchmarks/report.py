"""Summaries, goals, ratios and the Markdown table of a benchmark run."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from servers import OWN_FLOOR, STOCK_FLOORS

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


DOCS_WITH_RESULTS = ("README.md", "benchmarks/README.md", "docs/inference.md")


def summarise(runs: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    def med(values: list[float]) -> float:
        return float(statistics.median(values))

    rps = [r["requests_per_second"] for r in runs]
    p = {k: [r["latency_us"][k] / 1000 for r in runs] for k in ("p50", "p90", "p99")}
    return {
        "requests_per_second": med(rps),
        "rows_per_second": med(rps) * rows,
        "p50_ms": med(p["p50"]),
        "p90_ms": med(p["p90"]),
        "p99_ms": med(p["p99"]),
        "errors": int(sum(r["errors"] for r in runs)),
        "requests": int(sum(r["requests"] for r in runs)),
        "spread": {
            "requests_per_second": [min(rps), max(rps)],
            "p99_ms": [min(p["p99"]), max(p["p99"])],
        },
    }


def find(measurements: list[dict], server: str, scenario: str) -> dict | None:
    return next(
        (m for m in measurements if m["server"] == server and m["scenario"] == scenario), None
    )


def summarise_in_process(rounds: list[list[dict]]) -> list[dict[str, Any]]:
    """Per model and runtime: the median over the rounds, with the rounds' min-max."""
    merged: dict[tuple[str, str], list[dict]] = {}
    for round_ in rounds:
        for r in round_:
            merged.setdefault((r["model"], r["runtime"]), []).append(r)
    result = []
    for (model, runtime), runs in merged.items():
        if "error" in runs[0]:
            result.append(runs[0])
            continue
        single = [r["single_row_us"] for r in runs]
        batch = [r["batch_rows_per_second"] for r in runs]
        result.append(
            {
                "model": model,
                "runtime": runtime,
                "algorithm": runs[0]["algorithm"],
                "single_row_us": statistics.median(single),
                "batch_rows": runs[0]["batch_rows"],
                "batch_rows_per_second": statistics.median(batch),
                "spread": {
                    "single_row_us": [min(single), max(single)],
                    "batch_rows_per_second": [min(batch), max(batch)],
                },
            }
        )
    return result


def per_round(m: dict | None, key: str = "requests_per_second") -> list[float] | None:
    """One value per round of a measurement: requests_per_second, rows_per_second or p99_ms."""
    if not m:
        return None
    if key == "p99_ms":
        return [r["latency_us"]["p99"] / 1000 for r in m["runs"]]
    factor = m["rows_per_request"] if key == "rows_per_second" else 1
    return [r["requests_per_second"] * factor for r in m["runs"]]


def _in_process_per_round(
    rounds: list[list[dict]], model: str, runtime: str, key: str = "batch_rows_per_second"
) -> list[float] | None:
    values = [
        r[key]
        for round_ in rounds
        for r in round_
        if r["model"] == model and r["runtime"] == runtime and "error" not in r
    ]
    return values or None


def _median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def _goal(
    name: str,
    ours: list[float] | None,
    theirs: list[float] | None,
    threshold: float,
    detail: str,
    below: bool = False,
) -> dict[str, Any]:
    """Median over the rounds of ours/theirs (paired round by round, so a burst of background
    load hits both sides), or of ours alone for a `below` limit."""
    if below:
        values = ours
    else:
        values = (
            [a / b for a, b in zip(ours, theirs, strict=True) if b] if ours and theirs else None
        )
    value = _median(values)
    passed = None if value is None else (value < threshold if below else value >= threshold)
    return {
        "goal": name,
        "value": value,
        "threshold": threshold,
        "comparison": "<" if below else ">=",
        "passed": passed,
        "detail": detail,
        "per_round": values,
        "spread": [min(values), max(values)] if values else None,
    }


def compute_goals(
    measurements: list[dict], inproc_rounds: list[list[dict]], serving: str
) -> list[dict[str, Any]]:
    """Issue "fast inference": the promoted model on its serving runtime against its references."""
    ours = per_round(find(measurements, f"service-promoted-{serving}", "single"))
    linear = [
        per_round(find(measurements, f"service-linear-{runtime}", "single"))
        for runtime in ("onnx", "sklearn")
    ]
    linear = [values for values in linear if values]
    best_linear = [max(pair) for pair in zip(*linear, strict=True)] if linear else None
    seed = per_round(find(measurements, "seed-promoted", "single"))
    p99 = per_round(find(measurements, f"service-promoted-{serving}", "single"), "p99_ms")
    batch = per_round(
        find(measurements, f"service-promoted-{serving}", "batch_10000"), "rows_per_second"
    )
    floor = _in_process_per_round(inproc_rounds, "promoted", serving)
    explain_us = _in_process_per_round(inproc_rounds, "promoted", "explain", "single_row_us")
    explain_ms = [us / 1000 for us in explain_us] if explain_us else None
    bare = _stock_floor(measurements)
    shadowed = find(measurements, f"service-promoted-{serving}+shadow", "single")
    shadow_p99 = per_round(shadowed, "p99_ms")
    p99_rise = (
        [a / b for a, b in zip(shadow_p99, p99, strict=True) if b] if shadow_p99 and p99 else None
    )
    return [
        _goal(
            "single-row throughput vs the same service serving the linear baseline",
            ours,
            best_linear,
            0.75,
            f"{_num(_median(ours))} vs {_num(_median(best_linear))} req/s, the faster "
            "runtime of the linear model in each round",
        ),
        _goal(
            "single-row throughput vs the seed-style server with the same model",
            ours,
            seed,
            10.0,
            f"{_num(_median(ours))} vs {_num(_median(seed))} req/s",
        ),
        _goal(
            "p99 latency at 8 connections, promoted model, ms",
            p99,
            None,
            20.0,
            "wrk closed loop",
            below=True,
        ),
        _goal(
            "10,000-row JSON batch end to end vs in-process rows/s of the serving runtime",
            batch,
            floor,
            0.5,
            f"{_num(_median(batch))} vs {_num(_median(floor))} rows/s in-process ({serving})",
        ),
        _goal(
            "single-row throughput vs the bare stack (Flask's constant JSON under gunicorn's own "
            "workers, the best round of sync and gthread; same worker count)",
            ours,
            bare,
            0.70,
            f"{_num(_median(ours))} vs {_num(_median(bare))} req/s",
        ),
        _goal(
            "single-row p99 with a shadow model vs without (ratio)",
            p99_rise,
            None,
            1.10,
            f"{_num(_median(shadow_p99))} vs {_num(_median(p99))} ms; "
            f"{_num(_median(per_round(shadowed)))} vs {_num(_median(ours))} req/s",
            below=True,
        ),
        _goal(
            "explanation of one row (base value and contributions), promoted model, p50 ms",
            explain_ms,
            None,
            5.0,
            "in process, different rows in turn",
            below=True,
        ),
    ]


def _stock_floor(measurements: list[dict]) -> list[float] | None:
    """The constant answer's best round under gunicorn's own sync and gthread workers, for every
    round: both share wrk's connections unevenly in some rounds (one worker takes them all, at
    half the throughput), and such a round must not flatter the service."""
    stock = [
        values for name in STOCK_FLOORS if (values := per_round(find(measurements, name, "single")))
    ]
    if not stock:
        return None
    best = max(max(values) for values in stock)
    return [best] * len(stock[0])


def compute_references(measurements: list[dict], serving: str) -> list[dict[str, Any]]:
    """Ratios printed beside the goals, with no threshold of their own."""
    ours = per_round(find(measurements, f"service-promoted-{serving}", "single"))
    own = per_round(find(measurements, OWN_FLOOR, "single"))
    values = [a / b for a, b in zip(ours, own, strict=True) if b] if ours and own else None
    return [
        {
            "name": "single-row throughput vs the constant answer under the service's own "
            "gunicorn worker (app/worker.py)",
            "value": _median(values),
            "spread": [min(values), max(values)] if values else None,
            "detail": f"{_num(_median(ours))} vs {_num(_median(own))} req/s",
        }
    ]


def ratios(measurements: list[dict]) -> list[dict[str, Any]]:
    """Each service measurement against the seed and the peer, same model and scenario: the median
    of the round-by-round ratios of rows/s."""
    result = []
    for m in measurements:
        if m["kind"] != "service":
            continue
        row: dict[str, Any] = {"server": m["server"], "scenario": m["scenario"]}
        ours = per_round(m, "rows_per_second")
        for kind in ("seed", "mlflow"):
            theirs = per_round(
                find(measurements, f"{kind}-{m['model']}", m["scenario"]), "rows_per_second"
            )
            if theirs and all(theirs):
                row[f"vs_{kind}"] = _median([a / b for a, b in zip(ours, theirs, strict=True)])
        if len(row) > 2:
            result.append(row)
    return result


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _cell(m: dict | None) -> str:
    if not m:
        return "-"
    s = m["summary"]
    lo, hi = s["spread"]["requests_per_second"]
    return (
        f"{_num(s['requests_per_second'])} req/s ({_num(lo)}-{_num(hi)}), p99 {s['p99_ms']:.1f} ms"
    )


def markdown(results: dict[str, Any], summary: bool = False) -> str:
    """The full report, or (summary) the headline table and the goals, for the top-level README."""
    sections = (
        [_header, _headline, _goals]
        if summary
        else [_header, _headline, _scenarios, _in_process, _ratios, _goals, _notes]
    )
    return "\n".join(line for section in sections for line in section(results)).rstrip() + "\n"


def _header(results: dict[str, Any]) -> list[str]:
    return [
        f"Measured {results['date']} on {results['machine']['summary']}; "
        f"{results['settings']['repeats']} rounds of {results['settings']['duration']} s "
        "per scenario, "
        "median (min-max of the rounds). "
        f"Load average (1 min) during the run: {results['machine']['loadavg_range']}.",
        "",
    ]


def _headline(results: dict[str, Any]) -> list[str]:
    ms, inproc = results["measurements"], results["in_process"]
    promoted = results["models"]["promoted"]["algorithm"]
    out = [
        "Single-row JSON at saturation (2 workers each, wrk 8 connections):",
        "",
        f"| way of serving | LinearRegression | promoted ({promoted}) |",
        "|---|---|---|",
    ]
    table = [
        ("seed paper's code: model loaded on every request", "seed-{}"),
        ("this service, scikit-learn runtime", "service-{}-sklearn"),
        ("this service, ONNX Runtime", "service-{}-onnx"),
        (
            f"MLflow `models serve` ({results['peer']['version'] if results['peer'] else '-'})",
            "mlflow-{}",
        ),
    ]
    for label, pattern in table:
        out.append(
            f"| {label} | {_cell(find(ms, pattern.format('linear'), 'single'))} | "
            f"{_cell(find(ms, pattern.format('promoted'), 'single'))} |"
        )
    for runtime in ("sklearn", "onnx"):
        cells = []
        for model in ("linear", "promoted"):
            r = next((x for x in inproc if x["model"] == model and x["runtime"] == runtime), None)
            cells.append(f"{r['single_row_us'] / 1000:.3f} ms" if r and "error" not in r else "-")
        out.append(f"| in-process `predict`, one row, {runtime} | {cells[0]} | {cells[1]} |")
    return [*out, ""]


def _scenarios(results: dict[str, Any]) -> list[str]:
    out = [
        "All scenarios:",
        "",
        "| server | scenario | req/s (min-max) | rows/s | p50 ms | p90 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in results["measurements"]:
        s = m["summary"]
        lo, hi = s["spread"]["requests_per_second"]
        out.append(
            f"| {m['server']} | {m['label']} | {_num(s['requests_per_second'], 1)} "
            f"({_num(lo, 1)}-{_num(hi, 1)}) | {_num(s['rows_per_second'])} | "
            f"{s['p50_ms']:.2f} | {s['p90_ms']:.2f} | {s['p99_ms']:.2f} | {s['errors']} |"
        )
    return [*out, ""]


def _in_process(results: dict[str, Any]) -> list[str]:
    out = [
        "In-process `LoadedModel.predict` (one thread; the floor no server can beat):",
        "",
        "| model | runtime | one row | rows/s, " + f"{results['settings']['batch_rows']:,} rows |",
        "|---|---|---|---|",
    ]
    for r in results["in_process"]:
        if "error" in r:
            out.append(f"| {r['model']} | {r['runtime']} | not available: {r['error'][:80]} | - |")
        else:
            out.append(
                f"| {r['model']} ({r['algorithm']}) | {r['runtime']} | "
                f"{r['single_row_us']:,.1f} µs | {_num(r['batch_rows_per_second'])} |"
            )
    return [*out, ""]


def _ratios(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if results["ratios"]:
        out += [
            "Ratios (rows/s of the service over the baseline, same model, same scenario):",
            "",
            "| server | scenario | vs seed | vs MLflow |",
            "|---|---|---|---|",
        ]
        for r in results["ratios"]:
            seed = f"{r['vs_seed']:.1f}x" if "vs_seed" in r else "-"
            peer = f"{r['vs_mlflow']:.1f}x" if "vs_mlflow" in r else "-"
            out.append(f"| {r['server']} | {r['scenario']} | {seed} | {peer} |")
        out.append("")
    return out


def _goals(results: dict[str, Any]) -> list[str]:
    out = [
        "Fast-inference goals:",
        "",
        "| goal | median of the rounds (min-max) | needed | result |",
        "|---|---|---|---|",
    ]
    for g in results["goals"]:
        verdict = {True: "PASS", False: "FAIL", None: "not measured"}[g["passed"]]
        value = "-" if g["value"] is None else f"{g['value']:.2f}"
        if g["spread"] and len(g["per_round"]) > 1:
            value += f" ({g['spread'][0]:.2f}-{g['spread'][1]:.2f})"
        out.append(
            f"| {g['goal']} ({g['detail']}) | {value} | {g['comparison']} {g['threshold']:g} "
            f"| {verdict} |"
        )
    out.append("")
    for r in results.get("references") or []:
        if r["value"] is not None:
            spread = f" ({r['spread'][0]:.2f}-{r['spread'][1]:.2f})" if r["spread"] else ""
            out += [f"For reference, {r['name']}: {r['value']:.2f}{spread}, {r['detail']}.", ""]
    return out


def _notes(results: dict[str, Any]) -> list[str]:
    return [f"- {n}" for n in results.get("notes") or []]


def notes(results: dict[str, Any]) -> list[str]:
    """Plain statements the numbers support: what dominates the latency, what was left out."""
    out = []
    inproc = {(r["model"], r["runtime"]): r for r in results["in_process"] if "error" not in r}
    sk, ox = inproc.get(("promoted", "sklearn")), inproc.get(("promoted", "onnx"))
    served = find(results["measurements"], "service-promoted-sklearn", "rate")
    if sk and ox:
        out.append(
            f"The promoted {sk['algorithm']} costs {sk['single_row_us'] / 1000:.2f} ms per "
            f"single-row predict in scikit-learn and {ox['single_row_us'] / 1000:.3f} ms in "
            f"ONNX Runtime ({sk['single_row_us'] / ox['single_row_us']:.0f}x)."
        )
    if sk and served:
        achieved, target = served["summary"]["requests_per_second"], results["settings"]["rate"]
        if achieved < 0.95 * target:
            out.append(
                f"Served with scikit-learn, the promoted model did not sustain {target:g} req/s "
                f"on 2 workers ({achieved:.1f} req/s achieved; its fixed-rate latencies are "
                "mostly queueing)."
            )
        else:
            share = sk["single_row_us"] / 1000 / served["summary"]["p50_ms"]
            out.append(
                f"Served with scikit-learn, that predict call is {share:.0%} of the median "
                f"request latency at {target:g} req/s ({served['summary']['p50_ms']:.2f} ms)."
            )
    if sk and ox and sk["batch_rows_per_second"] > ox["batch_rows_per_second"]:
        out.append(
            f"For {sk['batch_rows']:,}-row batches scikit-learn is the faster runtime in process "
            f"({_num(sk['batch_rows_per_second'])} vs {_num(ox['batch_rows_per_second'])} rows/s): "
            "its batch tree traversal beats ONNX Runtime's one-thread TreeEnsemble at this size."
        )
    out.append(
        "The seed server takes single rows only; neither baseline runs the fixed-rate "
        "scenario, whose rate is above what they sustain with a tree ensemble."
    )
    out.append(
        "Loopback only; wrk (1 thread) and the servers share the machine's cores, as do "
        "other processes: the load average above says how quiet the machine was."
    )
    return out


def update_docs(results: dict[str, Any], results_json: str) -> list[str]:
    """Rewrite the results blocks of the docs that have them: the full report between the
    `benchmark-results` markers, the headline table and goals between `benchmark-summary`."""
    blocks = {"benchmark-results": markdown(results), "benchmark-summary": markdown(results, True)}
    updated = []
    for name in DOCS_WITH_RESULTS:
        path = REPO / name
        if not path.is_file():
            continue
        text = original = path.read_text(encoding="utf-8")
        for marker, table in blocks.items():
            start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
            if start not in text or end not in text:
                continue
            head, rest = text.split(start, 1)
            _, tail = rest.split(end, 1)
            text = (
                f"{head}{start}\n<!-- written by benchmarks/run.py --update-docs from "
                f"{results_json}; do not edit by hand -->\n{table}{end}{tail}"
            )
        if text != original:
            path.write_text(text, encoding="utf-8")
            updated.append(name)
    return updated
