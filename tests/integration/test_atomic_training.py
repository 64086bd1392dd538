"""`wine-quality train` SIGKILLed at every step of publishing its artifact, and at a random
instant: the output path always loads (the previous artifact, or the new one once the link has
switched), and the next complete run leaves no staging directory or stray version behind.

The pauses are injected by a wrapper around the real command: it replaces os.rename, os.symlink,
os.replace and shutil.rmtree with versions that, for paths beside the output, announce the call
and sleep before (or after) the N-th one. The test SIGKILLs the process while it sleeps there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wine_quality.core.artifact import load_artifact

pytestmark = pytest.mark.slow

WRAPPER = r"""
import os, shutil, sys, time

when, target, nth = os.environ["PAUSE_AT"].split(":")
beside = os.environ["PAUSE_BESIDE"]
real = {"rename": os.rename, "symlink": os.symlink, "replace": os.replace, "rmtree": shutil.rmtree}
calls = dict.fromkeys(real, 0)


def patched(name):
    def call(*args, **kwargs):
        paths = [str(a) for a in args if isinstance(a, (str, os.PathLike))]
        hit = False
        if name == target and any(p.startswith(beside) for p in paths):
            calls[name] += 1
            hit = calls[name] == int(nth)
        if hit and when == "before":
            pause(name, paths)
        result = real[name](*args, **kwargs)
        if hit and when == "after":
            pause(name, paths)
        return result
    return call


def pause(name, paths):
    print(f"PAUSED {when} {name} {paths}", flush=True)
    time.sleep(600)


os.rename, os.symlink, os.replace = patched("rename"), patched("symlink"), patched("replace")
shutil.rmtree = patched("rmtree")
from wine_quality.cli import main
sys.exit(main(sys.argv[1:]))
"""

# Publishing is: rename staging -> version directory, make the new link, rename it over the
# output, remove older versions; a run with leftovers starts by removing them.
PAUSES = {
    "staging complete, before it becomes a version": ("before:rename:1", "previous"),
    "version made, before the new link": ("before:symlink:1", "previous"),
    "new link made, before the switch": ("before:replace:1", "previous"),
    "right after the switch, before the cleanup": ("after:replace:1", "new"),
    "while removing an earlier run's leftovers": ("before:rmtree:1", "previous"),
}


def train_command(data_source: Path, output: Path) -> list[str]:
    return [
        *("train", "--quiet", "--data-dir", str(data_source), "--output", str(output)),
        *("--candidates", "ridge", "--folds", "2"),
    ]


def train(data_source: Path, output: Path) -> None:
    command = [sys.executable, "-m", "wine_quality.cli", *train_command(data_source, output)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)


def train_until_paused(data_source: Path, output: Path, pause_at: str) -> str:
    """Run train under the wrapper until it announces the pause, then SIGKILL it."""
    env = {**os.environ, "PAUSE_AT": pause_at, "PAUSE_BESIDE": str(output.parent)}
    process = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, *train_command(data_source, output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        for line in process.stdout:
            if line.startswith("PAUSED"):
                return line.strip()
        pytest.fail(f"train ended (status {process.wait()}) without reaching {pause_at}")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        process.stdout.close()


def leftovers(output: Path) -> list[str]:
    return sorted(
        path.name
        for kind in ("new", "link", "old")
        for path in output.parent.glob(f".{output.name}.{kind}-*")
    )


@pytest.fixture(scope="module")
def output(data_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An output path that already holds an artifact, shared by the kills below in order."""
    path = tmp_path_factory.mktemp("atomic") / "model"
    train(data_source, path)
    return path


@pytest.mark.parametrize("instant", PAUSES)
def test_killed_while_publishing_the_output_still_loads(
    instant: str, output: Path, data_source: Path
):
    pause_at, expected = PAUSES[instant]
    before = output.resolve()
    paused = train_until_paused(data_source, output, pause_at)
    after = output.resolve()
    assert (after == before) == (expected == "previous"), paused
    assert load_artifact(output).version  # verified: checksums, facts, reference predictions


def test_killed_at_a_random_instant_the_output_still_loads(output: Path, data_source: Path):
    started = time.monotonic()
    train(data_source, output)
    duration = time.monotonic() - started
    for fraction in (0.3, 0.6, 0.9):
        process = subprocess.Popen(
            [sys.executable, "-m", "wine_quality.cli", *train_command(data_source, output)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(duration * fraction)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert load_artifact(output).version


def test_the_next_complete_run_leaves_no_staging_and_one_previous_version(
    output: Path, data_source: Path
):
    train_until_paused(data_source, output, "before:rename:1")  # leaves a staging directory
    assert [name for name in leftovers(output) if ".new-" in name]
    train_until_paused(data_source, output, "before:replace:1")  # leaves a version and a link
    assert [name for name in leftovers(output) if ".link-" in name]
    train(data_source, output)
    assert leftovers(output) == []
    versions = sorted(output.parent.glob(f".{output.name}.v-*"))
    assert output.resolve() in versions and len(versions) <= 2
    assert load_artifact(output).version
