"""Champion/challenger: `wine-quality compare` decides whether a new model may be released."""

from __future__ import annotations

import copy
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from wine_quality import cli
from wine_quality.training import release


def metadata(rmse: float = 0.60, mae: float = 0.46, r2: float = 0.40, **extra) -> dict:
    """A metadata.json in the shape training writes (metrics.test holds the held-out scores)."""
    return {
        "name": "wine-quality",
        "version": f"0.1.0+m{int(rmse * 1e4):04d}",
        "wine": "red",
        "seed": 0,
        "data": {"file": "winequality-red.csv", "sha256": "abc"},
        "metrics": {
            "test": {"rmse": rmse, "mae": mae, "r2": r2, "within_0_5": 0.62, "within_1": 0.9},
            "cv": {"rmse": 0.1, "mae": 0.1, "r2": 0.9},
            "gate": {"passed": True},
        },
        **extra,
    }


def write(path: Path, data: dict | str) -> str:
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return str(path)


def run_compare(tmp_path: Path, challenger: dict, champion: dict | None, *flags: str) -> int:
    args = ["compare", write(tmp_path / "new.json", challenger)]
    if champion is not None:
        args += ["--champion", write(tmp_path / "old.json", champion)]
    return cli.main([*args, *flags])


def test_better_challenger_is_released(tmp_path, capsys):
    assert run_compare(tmp_path, metadata(rmse=0.58), metadata(rmse=0.60)) == release.EXIT_RELEASE
    out = capsys.readouterr().out
    assert "**Release.**" in out
    assert "| rmse | 0.6000 | 0.5800 | -0.0200 | better |" in out


def test_worse_challenger_is_refused_and_says_why(tmp_path, capsys):
    code = run_compare(tmp_path, metadata(rmse=0.63), metadata(rmse=0.60))
    assert code == release.EXIT_WORSE
    captured = capsys.readouterr()
    assert "**Not released.**" in captured.out
    assert "| rmse | 0.6000 | 0.6300 | +0.0300 | worse |" in captured.out
    assert "challenger rmse 0.6300 is worse than champion 0.6000" in captured.err


def test_allow_worse_is_an_explicit_override(tmp_path, capsys):
    code = run_compare(tmp_path, metadata(rmse=0.63), metadata(rmse=0.60), "--allow-worse")
    assert code == release.EXIT_RELEASE
    assert "**Release (override).**" in capsys.readouterr().out


def test_equal_metrics_are_not_worse(tmp_path):
    assert run_compare(tmp_path, metadata(), metadata()) == release.EXIT_RELEASE


def test_tolerance_accepts_a_small_loss_only(tmp_path):
    new, old = metadata(rmse=0.605), metadata(rmse=0.60)
    assert run_compare(tmp_path, new, old, "--tolerance", "0.01") == release.EXIT_RELEASE
    assert run_compare(tmp_path, new, old, "--tolerance", "0.001") == release.EXIT_WORSE


def test_higher_is_better_metrics_gate_the_other_way(tmp_path):
    old = metadata(r2=0.40)
    assert run_compare(tmp_path, metadata(r2=0.45), old, "--metric", "r2") == release.EXIT_RELEASE
    assert run_compare(tmp_path, metadata(r2=0.35), old, "--metric", "r2") == release.EXIT_WORSE


def test_first_release_has_no_champion(tmp_path, capsys):
    assert run_compare(tmp_path, metadata(), None) == release.EXIT_RELEASE
    assert "no released model yet" in capsys.readouterr().out


def test_summary_file_gets_the_markdown(tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    run_compare(tmp_path, metadata(rmse=0.63), metadata(rmse=0.60), "--summary", str(summary))
    text = summary.read_text()
    assert text.startswith("earlier step\n## Champion / challenger")
    assert "**Not released.**" in text


def test_different_data_is_flagged(tmp_path, capsys):
    old = metadata()
    old["data"]["sha256"] = "def"
    run_compare(tmp_path, metadata(), old)
    assert "The training data differs (def → abc)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON (Expecting property name enclosed in double quotes at line"),
        ("[1, 2]", "expected a JSON object, found list"),
        (json.dumps({"name": "x"}), "no 'metrics' object"),
        (json.dumps({"metrics": {"rmse": 0.5, "mae": 0.4}}), "no 'metrics.test' object"),
        (json.dumps({"metrics": {"holdout": {"rmse": 0.5}}}), "no 'metrics.test' object"),
        (json.dumps({"metrics": {"test": {"note": "n/a"}}}), "'metrics.test' holds no numeric"),
        (json.dumps({"metrics": {"test": {"mae": 0.5}}}), "no held-out metric 'rmse'"),
    ],
)
def test_bad_champion_metadata_is_named(tmp_path, capsys, content, problem):
    champion = write(tmp_path / "old.json", content)
    code = cli.main(["compare", write(tmp_path / "new.json", metadata()), "--champion", champion])
    assert code == release.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert champion in err
    assert problem in err


def test_missing_file_is_named(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "metadata.json"
    assert cli.main(["compare", str(missing)]) == release.EXIT_BAD_INPUT
    assert f"{missing}: cannot read metadata" in capsys.readouterr().err


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving tmp_path (stands in for a release asset URL)."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()


def test_champion_from_a_url(http_root, capsys):
    base, folder = http_root
    write(folder / "metadata.json", metadata(rmse=0.55))
    challenger = write(folder / "new.json", metadata(rmse=0.58))
    assert cli.main(["compare", challenger, "--champion", f"{base}/metadata.json"]) == 1
    assert f"({base}/metadata.json)" in capsys.readouterr().out
    assert cli.main(["compare", challenger, "--champion", f"{base}/missing.json"]) == 2
    assert "missing.json: cannot read metadata (HTTP Error 404" in capsys.readouterr().err


def test_gate_knows_every_held_out_metric_training_writes():
    from wine_quality.training.train import score

    written = score(np.array([5.0, 6.0, 7.0]), np.array([5.2, 5.5, 7.9]))
    assert set(written) == set(release.HIGHER_IS_BETTER)


def test_a_real_artifact_against_itself_and_a_better_champion(model_dir, tmp_path, capsys):
    challenger = str(model_dir / "metadata.json")
    assert cli.main(["compare", challenger, "--champion", challenger]) == release.EXIT_RELEASE
    better = copy.deepcopy(json.loads(Path(challenger).read_text()))
    better["metrics"]["test"]["rmse"] -= 0.05
    champion = write(tmp_path / "champion.json", better)
    capsys.readouterr()
    assert cli.main(["compare", challenger, "--champion", champion]) == release.EXIT_WORSE
    assert "worse" in capsys.readouterr().out
