"""The README tells the truth about what a user configures and how to start."""

from __future__ import annotations

import re
from pathlib import Path

from wine_quality.app.settings import SETTINGS, markdown_table

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def between(marker: str) -> str:
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    return README[README.index(start) + len(start) : README.index(end)].strip()


def test_configuration_table_is_generated_from_the_settings():
    assert between("settings-table") == markdown_table(), (
        "README configuration table is stale; paste the output of `python -c "
        "'from wine_quality.app.settings import markdown_table; print(markdown_table())'`"
    )
    assert len(SETTINGS) == between("settings-table").count("\n| `")


def test_first_screen_gives_the_two_setup_commands():
    first_block = re.search(r"```sh\n(.*?)```", README, re.DOTALL)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make run", "make test"]
    assert README[: first_block.start()].count("\n") < 20


def test_ci_runs_the_readme_test_command():
    assert re.search(r"^make test\b", (REPO / ".ci" / "run").read_text(), re.MULTILINE)


def test_every_linked_local_file_exists():
    links = re.findall(r"\]\((?!https?://|#)([^)#]+)", README)
    missing = [link for link in links if not (REPO / link).exists()]
    assert not missing, missing
