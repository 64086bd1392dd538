"""Champion and challenger: may a newly trained model replace the released one?

`wine-quality compare NEW_METADATA --champion OLD_METADATA` reads the held-out metrics of both
artifacts' metadata.json, prints a Markdown comparison (for a terminal or $GITHUB_STEP_SUMMARY) and
exits non-zero when the challenger is worse on the gating metric, unless --allow-worse is given.
The release job runs it against the metadata.json attached to the previous GitHub release.

Exit codes: 0 = release (better, equal, first release, or worse but explicitly allowed);
1 = worse, not released; 2 = a metadata file is missing, unreadable or has no usable metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_RELEASE = 0
EXIT_WORSE = 1
EXIT_BAD_INPUT = 2

# Direction of each held-out metric training writes (train.score): True = higher is better.
HIGHER_IS_BETTER: dict[str, bool] = {
    "rmse": False,
    "mae": False,
    "r2": True,
    "within_0_5": True,
    "within_1": True,
}
DEFAULT_METRIC = "rmse"
FETCH_TIMEOUT_SECONDS = 30


class CompareError(Exception):
    """A metadata file cannot be read or has no usable held-out metrics; the message says which."""


@dataclass(frozen=True)
class Model:
    source: str
    metadata: dict[str, Any]
    metrics: dict[str, float]

    @property
    def label(self) -> str:
        return str(self.metadata.get("version") or self.metadata.get("model_id") or "unknown")


@dataclass(frozen=True)
class Verdict:
    release: bool
    worse: bool
    reason: str
    markdown: str


def read_metadata(source: str) -> dict[str, Any]:
    """metadata.json from a path, or an http(s)/file URL."""
    try:
        if source.startswith(("https://", "http://", "file://")):
            with urllib.request.urlopen(source, timeout=FETCH_TIMEOUT_SECONDS) as response:  # noqa: S310 (scheme checked above)
                text = response.read().decode("utf-8")
        else:
            text = Path(source).read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise CompareError(f"{source}: cannot read metadata ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CompareError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise CompareError(f"{source}: expected a JSON object, found {type(data).__name__}")
    return data


def held_out_metrics(metadata: dict[str, Any], source: str) -> dict[str, float]:
    """The numeric held-out metrics of an artifact: metrics.test (the promoted model scored on the
    held-out part)."""
    metrics = metadata.get("metrics")
    if not isinstance(metrics, dict):
        raise CompareError(f"{source}: no 'metrics' object")
    metrics = metrics.get("test")
    if not isinstance(metrics, dict):
        raise CompareError(f"{source}: no 'metrics.test' object (the held-out metrics)")
    numbers = {
        name: float(value)
        for name, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }
    if not numbers:
        raise CompareError(f"{source}: 'metrics.test' holds no numeric held-out metric")
    return numbers


def load_model(source: str) -> Model:
    metadata = read_metadata(source)
    return Model(source, metadata, held_out_metrics(metadata, source))


def is_worse(metric: str, challenger: float, champion: float, tolerance: float) -> bool:
    """True when the challenger loses to the champion by more than `tolerance` on `metric`."""
    if HIGHER_IS_BETTER[metric]:
        return challenger < champion - tolerance
    return challenger > champion + tolerance


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _mark(metric: str, challenger: float, champion: float) -> str:
    if challenger == champion:
        return "="
    if metric not in HIGHER_IS_BETTER:
        return ""
    return "better" if (challenger > champion) == HIGHER_IS_BETTER[metric] else "worse"


def comparison_table(challenger: Model, champion: Model | None) -> str:
    names = sorted(set(challenger.metrics) | set(champion.metrics if champion else {}))
    lines = [
        "| metric | champion | challenger | change | |",
        "|---|---:|---:|---:|---|",
    ]
    for name in names:
        new = challenger.metrics.get(name)
        old = champion.metrics.get(name) if champion else None
        change = f"{new - old:+.4f}" if new is not None and old is not None else "-"
        mark = _mark(name, new, old) if new is not None and old is not None else ""
        lines.append(f"| {name} | {_fmt(old)} | {_fmt(new)} | {change} | {mark} |")
    return "\n".join(lines)


def _caveats(challenger: Model, champion: Model) -> list[str]:
    """Differences that make the two held-out scores less comparable."""
    notes = []
    for key, what in (("wine", "wine"), ("seed", "split seed"), ("data", "training data")):
        old, new = champion.metadata.get(key), challenger.metadata.get(key)
        if key == "data":
            old = old.get("sha256") if isinstance(old, dict) else old
            new = new.get("sha256") if isinstance(new, dict) else new
        if old != new:
            notes.append(f"- The {what} differs ({old} → {new}): the held-out sets differ.")
    return notes


def compare(
    challenger: Model,
    champion: Model | None,
    metric: str = DEFAULT_METRIC,
    tolerance: float = 0.0,
    allow_worse: bool = False,
) -> Verdict:
    """Decide whether the challenger is released, and say why in Markdown."""
    if metric not in HIGHER_IS_BETTER:
        known = ", ".join(sorted(HIGHER_IS_BETTER))
        raise CompareError(f"unknown metric {metric!r}; known: {known}")
    if metric not in challenger.metrics:
        raise CompareError(f"{challenger.source}: no held-out metric {metric!r}")
    header = ["## Champion / challenger", ""]
    if champion is None:
        reason = "no released model yet: the challenger becomes the first champion"
        lines = [*header, f"**Release.** {reason}.", "", comparison_table(challenger, None), ""]
        return Verdict(True, False, reason, "\n".join(lines))
    if metric not in champion.metrics:
        raise CompareError(f"{champion.source}: no held-out metric {metric!r}")

    new, old = challenger.metrics[metric], champion.metrics[metric]
    direction = "higher" if HIGHER_IS_BETTER[metric] else "lower"
    worse = is_worse(metric, new, old, tolerance)
    if not worse:
        verdict, release = "Release", True
        reason = f"challenger {metric} {new:.4f} is not worse than champion {old:.4f}"
    elif allow_worse:
        verdict, release = "Release (override)", True
        reason = (
            f"challenger {metric} {new:.4f} is worse than champion {old:.4f}, "
            "released because the override was given"
        )
    else:
        verdict, release = "Not released", False
        reason = (
            f"challenger {metric} {new:.4f} is worse than champion {old:.4f}; "
            "a maintainer can override (docs/pipeline.md)"
        )
    lines = [
        *header,
        f"**{verdict}.** {reason}.",
        "",
        f"Gate: held-out `{metric}` ({direction} is better), tolerance {tolerance:g}. "
        f"Champion: `{champion.label}` ({champion.source}). Challenger: `{challenger.label}`.",
        "",
        comparison_table(challenger, champion),
        "",
        *_caveats(challenger, champion),
    ]
    return Verdict(release, worse, reason, "\n".join(lines).rstrip() + "\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("challenger", help="metadata.json of the newly trained model (path or URL)")
    parser.add_argument(
        "--champion",
        default="",
        help="metadata.json of the last released model (path or URL); empty = no release yet",
    )
    parser.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        choices=sorted(HIGHER_IS_BETTER),
        help=f"held-out metric that decides (default: {DEFAULT_METRIC})",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="how much worse the challenger may be on --metric and still count as not worse",
    )
    parser.add_argument(
        "--allow-worse",
        action="store_true",
        help="release even when the challenger is worse (an explicit maintainer override)",
    )
    parser.add_argument(
        "--summary",
        type=Path,
        default=None,
        help="also append the Markdown to this file (for example $GITHUB_STEP_SUMMARY)",
    )


def run(args: argparse.Namespace) -> int:
    """The `compare` command: print the comparison, return the exit code."""
    try:
        challenger = load_model(args.challenger)
        champion = load_model(args.champion) if args.champion else None
        verdict = compare(challenger, champion, args.metric, args.tolerance, args.allow_worse)
    except CompareError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(verdict.markdown)
    if args.summary is not None:
        with args.summary.open("a", encoding="utf-8") as summary:
            summary.write(verdict.markdown + "\n")
    if not verdict.release:
        print(f"compare: not released: {verdict.reason}", file=sys.stderr)
        return EXIT_WORSE
    return EXIT_RELEASE


def register(subparsers: Any) -> None:
    """Add the `compare` subcommand to the wine-quality CLI."""
    parser = subparsers.add_parser(
        "compare",
        help="champion/challenger: compare a new model's held-out metrics with the released one",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="wine-quality compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
