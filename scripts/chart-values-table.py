#!/usr/bin/env python3
"""The values table of the chart README, generated from values.yaml's `# -- ` comments.

Usage: scripts/chart-values-table.py [--check] [CHART_DIR]
  Without --check, rewrites the table between the values-table markers of the chart's README and
  of the project README. With --check, exits 1 (naming the difference) when either table is out of
  date or a key of values.yaml has no `# -- ` comment.

A comment `# -- text` (continued by further `# ` lines) documents the key right below it. A key
that holds a map of keys needs no comment of its own when every key in it has one; a documented
key's value (a passed-through Kubernetes object, say) is shown whole as its default.
Types come from values.schema.json; the default is the value in values.yaml, as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

START = "<!-- values-table:start -->"
END = "<!-- values-table:end -->"
REPO = Path(__file__).resolve().parent.parent
PROJECT_CHART = REPO / "chart" / "wine-quality"
PROJECT_README = REPO / "README.md"  # shows the table too, for the project's own chart
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")
DOC_START = re.compile(r"^\s*# -- ?(?P<text>.*)$")
DOC_MORE = re.compile(r"^\s*#(?: (?P<text>.*))?$")


class ValuesDocError(Exception):
    """values.yaml has a key without documentation."""


def documented_keys(lines: list[str], values: dict) -> list[tuple[str, str]]:
    """(dotted key, description) for every documented key, in file order."""
    rows: list[tuple[str, str]] = []
    undocumented: list[str] = []
    stack: list[tuple[int, str, bool]] = []  # (indent, key, documented)
    comment: list[str] | None = None
    for number, line in enumerate(lines, start=1):
        if (match := DOC_START.match(line)) is not None:
            comment = [match.group("text").strip()]
            continue
        if comment is not None and (match := DOC_MORE.match(line)) is not None:
            comment.append((match.group("text") or "").strip())
            continue
        match = KEY_LINE.match(line)
        if match is None:
            if line.strip() and not line.lstrip().startswith("#"):
                comment = None
            continue
        indent = len(match.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        inside_documented = any(documented for _, _, documented in stack)
        path = [key for _, key, _ in stack] + [match.group("key")]
        dotted = ".".join(path)
        if not inside_documented:
            if comment is not None:
                rows.append((dotted, " ".join(part for part in comment if part)))
            elif not isinstance(lookup(values, path), dict) or not lookup(values, path):
                undocumented.append(f"line {number}: {dotted}")
        stack.append((indent, match.group("key"), comment is not None or inside_documented))
        comment = None
    if undocumented:
        raise ValuesDocError("keys without a '# -- ' comment: " + ", ".join(undocumented))
    return rows


def lookup(tree: object, path: list[str]) -> object:
    for key in path:
        tree = tree[key] if isinstance(tree, dict) else None
    return tree


def schema_type(schema: dict, path: list[str]) -> str | None:
    node: dict | None = schema
    for key in path:
        node = (node or {}).get("properties", {}).get(key)
    if not node or "type" not in node:
        return None
    kinds = node["type"] if isinstance(node["type"], list) else [node["type"]]
    return " or ".join(kinds)


def value_type(value: object) -> str:
    for kind, name in (
        (bool, "boolean"),
        (int, "integer"),
        (float, "number"),
        (str, "string"),
        (list, "array"),
        (dict, "object"),
    ):
        if isinstance(value, kind):
            return name
    return "null"


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(chart: Path) -> str:
    text = (chart / "values.yaml").read_text(encoding="utf-8")
    values = yaml.safe_load(text) or {}
    schema = json.loads((chart / "values.schema.json").read_text(encoding="utf-8"))
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for dotted, description in documented_keys(text.splitlines(), values):
        path = dotted.split(".")
        default = lookup(values, path)
        kind = schema_type(schema, path) or value_type(default)
        rendered = json.dumps(default, separators=(",", ":"), ensure_ascii=False)
        lines.append(f"| `{dotted}` | {kind} | `{cell(rendered)}` | {cell(description)} |")
    return "\n".join(lines)


def replace_table(readme: str, new_table: str) -> str:
    if START not in readme or END not in readme:
        raise ValuesDocError(f"README has no {START} ... {END} markers")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{new_table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the README is out of date")
    parser.add_argument("chart", nargs="?", type=Path, default=PROJECT_CHART)
    args = parser.parse_args(argv)
    readmes = [args.chart / "README.md"]
    if args.chart.resolve() == PROJECT_CHART:
        readmes.append(PROJECT_README)
    try:
        new_table = table(args.chart)
        current = {path: path.read_text(encoding="utf-8") for path in readmes}
        updated = {path: replace_table(text, new_table) for path, text in current.items()}
    except ValuesDocError as error:
        print(f"chart-values-table: {error}", file=sys.stderr)
        return 1
    stale = [path for path in readmes if updated[path] != current[path]]
    if args.check:
        for path in stale:
            print(
                f"chart-values-table: {path} is out of date with values.yaml; "
                "run scripts/chart-values-table.py",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in stale:
        path.write_text(updated[path], encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
