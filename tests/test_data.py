"""Data fetching with checksum verification, and CSV validation with precise messages."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from wine_quality import cli
from wine_quality.core.artifact import sha256_of
from wine_quality.core.features import CSV_COLUMNS
from wine_quality.training.data import SHA256, DataError, fetch, load_dataset

# One real row of winequality-red.csv (inputs, then the grade).
ROW = ["7.4", "0.7", "0", "1.9", "0.076", "11", "34", "0.9978", "3.51", "0.56", "9.4", "5"]
OTHER_ROW = ["7.8", "0.88", "0", "2.6", "0.098", "25", "67", "0.9968", "3.2", "0.68", "9.8", "5"]
HEADER = ";".join(f'"{name}"' for name in CSV_COLUMNS)


def write(tmp_path: Path, text: str, name: str = "wine.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def rows_csv(*rows: list[str], header: str = HEADER, sep: str = ";") -> str:
    return "\n".join([header, *(sep.join(row) for row in rows)]) + "\n"


def with_value(column: str, value: str, row: list[str] = ROW) -> list[str]:
    changed = list(row)
    changed[CSV_COLUMNS.index(column)] = value
    return changed


def problem(path: Path) -> str:
    with pytest.raises(DataError) as caught:
        load_dataset(path)
    message = str(caught.value)
    assert str(path) in message  # every message names the file
    return message


# --------------------------------------------------------------------------- valid files


def test_valid_file_loads_in_feature_order(tmp_path):
    dataset = load_dataset(write(tmp_path, rows_csv(ROW, OTHER_ROW, ROW)))
    assert dataset.X.shape == (3, 11) and dataset.X.dtype == np.float64
    assert dataset.X[0].tolist() == [float(v) for v in ROW[:11]]
    assert dataset.y.tolist() == [5.0, 5.0, 5.0]
    assert dataset.duplicates == 1
    assert dataset.first_occurrences().tolist() == [True, True, False]
    assert not dataset.is_published


@pytest.mark.parametrize(("wine", "rows", "duplicates"), [("red", 1599, 240), ("white", 4898, 937)])
def test_real_files_and_their_duplicates(data_source, wine, rows, duplicates):
    dataset = load_dataset(data_source / f"winequality-{wine}.csv")
    assert (dataset.rows, dataset.duplicates) == (rows, duplicates)
    assert dataset.is_published
    assert dataset.sha256 == SHA256[f"winequality-{wine}.csv"]
    assert set(np.unique(dataset.y)) <= set(range(3, 10))


def test_unquoted_header_crlf_line_ends_and_byte_order_mark_are_accepted(tmp_path):
    text = "\ufeff" + rows_csv(ROW, header=";".join(CSV_COLUMNS)).replace("\n", "\r\n")
    assert load_dataset(write(tmp_path, text)).rows == 1


# --------------------------------------------------------------------------- malformed files


def test_wrong_separator(tmp_path):
    path = write(tmp_path, rows_csv(ROW, header=HEADER.replace(";", ","), sep=","))
    message = problem(path)
    assert "line 1 (header)" in message
    assert "found 1 column, expected 12" in message
    assert "separated by ','" in message


def test_missing_column(tmp_path):
    index = CSV_COLUMNS.index("citric acid")
    header = ";".join(f'"{n}"' for n in CSV_COLUMNS if n != "citric acid")
    path = write(tmp_path, rows_csv(ROW[:index] + ROW[index + 1 :], header=header))
    message = problem(path)
    assert "line 1 (header)" in message
    assert "missing column(s) 'citric acid'" in message


def test_renamed_column(tmp_path):
    path = write(tmp_path, rows_csv(ROW, header=HEADER.replace('"pH"', '"acidity"')))
    message = problem(path)
    assert "missing column(s) 'pH'" in message and "unexpected column(s) 'acidity'" in message


def test_columns_out_of_order(tmp_path):
    names = list(CSV_COLUMNS)
    names[0], names[1] = names[1], names[0]
    path = write(tmp_path, rows_csv(ROW, header=";".join(names)))
    assert "out of order" in problem(path)


def test_text_in_a_numeric_column(tmp_path):
    path = write(tmp_path, rows_csv(ROW, ROW, with_value("alcohol", "strong")))
    message = problem(path)
    assert "line 4, column 'alcohol': 'strong' is not a number" in message
    assert "1 problem(s)" in message


def test_empty_file(tmp_path):
    assert "the file is empty" in problem(write(tmp_path, ""))


def test_header_only(tmp_path):
    assert "no data rows" in problem(write(tmp_path, HEADER + "\n"))


@pytest.mark.parametrize("missing", ["", "nan", "NaN", " "])
def test_missing_value(tmp_path, missing):
    path = write(tmp_path, rows_csv(ROW, with_value("density", missing)))
    message = problem(path)
    assert "line 3, column 'density': missing value" in message


def test_negative_concentration(tmp_path):
    path = write(tmp_path, rows_csv(with_value("chlorides", "-0.076")))
    message = problem(path)
    assert "line 2, column 'chlorides'" in message
    assert "-0.076 is outside the physical bounds [0, 2] g(sodium chloride)/dm³" in message


def test_ph_above_14(tmp_path):
    path = write(tmp_path, rows_csv(ROW, ROW, ROW, with_value("pH", "14.2")))
    message = problem(path)
    assert "line 5, column 'pH': 14.2 is outside the physical bounds [0, 14] pH" in message


def test_infinite_value(tmp_path):
    path = write(tmp_path, rows_csv(with_value("sulphates", "inf")))
    assert "column 'sulphates': must be a finite number (not NaN or infinity)" in problem(path)


@pytest.mark.parametrize(
    ("grade", "expected"),
    [
        ("5.5", "5.5 is not a whole quality grade"),
        ("11", "grade 11 is outside 0-10"),
        ("-1", "grade -1 is outside 0-10"),
    ],
)
def test_bad_grade(tmp_path, grade, expected):
    path = write(tmp_path, rows_csv(with_value("quality", grade)))
    assert f"line 2, column 'quality': {expected}" in problem(path)


def test_row_with_too_few_values(tmp_path):
    path = write(tmp_path, rows_csv(ROW, ROW[:-1]))
    assert "line 3: found 11 values, expected 12" in problem(path)


def test_every_problem_is_counted_and_the_first_ones_listed(tmp_path):
    bad = [with_value("alcohol", "x")] * 15
    message = problem(write(tmp_path, rows_csv(ROW, *bad)))
    assert "15 problem(s)" in message
    lines = message.splitlines()
    assert lines[1].strip() == "line 3, column 'alcohol': 'x' is not a number"
    assert lines[10].strip().startswith("line 12, ")
    assert lines[11].strip() == "... and 5 more"


def test_missing_file(tmp_path):
    assert "file not found" in problem(tmp_path / "absent.csv")


# --------------------------------------------------------------------------- fetching


def test_fetch_from_a_local_folder_verifies_and_keeps_good_files(data_source, tmp_path):
    dest = tmp_path / "data"
    paths = fetch(dest, str(data_source))
    assert [p.name for p in paths] == ["winequality-red.csv", "winequality-white.csv"]
    for path in paths:
        assert sha256_of(path) == SHA256[path.name]
    before = paths[0].stat().st_mtime_ns
    fetch(dest, str(data_source), ("red",))
    assert paths[0].stat().st_mtime_ns == before  # already verified: not copied again
    assert sorted(p.name for p in dest.iterdir()) == sorted(SHA256)  # no temporary files left


def test_fetch_refuses_a_corrupt_file_and_keeps_nothing(data_source, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    original = (data_source / "winequality-red.csv").read_bytes()
    (source / "winequality-red.csv").write_bytes(original[:-100])  # truncated
    dest = tmp_path / "data"
    with pytest.raises(DataError) as caught:
        fetch(dest, str(source), ("red",))
    message = str(caught.value)
    assert str(source / "winequality-red.csv") in message
    assert "sha256 mismatch" in message and SHA256["winequality-red.csv"] in message
    assert list(dest.iterdir()) == []


def test_fetch_replaces_a_corrupt_file_in_dest(data_source, tmp_path):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "winequality-red.csv").write_text("garbage")
    (path,) = fetch(dest, str(data_source), ("red",))
    assert sha256_of(path) == SHA256["winequality-red.csv"]


def test_fetch_from_a_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"winequality-red\.csv: file not found"):
        fetch(tmp_path / "data", str(tmp_path / "nowhere"), ("red",))


@pytest.fixture
def http_server(data_source) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving the data folder (stands in for the UCI site)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(data_source))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_fetch_downloads_over_http(http_server, tmp_path):
    paths = fetch(tmp_path / "data", http_server)
    assert all(sha256_of(p) == SHA256[p.name] for p in paths)


def test_download_failure_names_the_url(http_server, tmp_path):
    with pytest.raises(DataError) as caught:
        fetch(tmp_path / "data", http_server + "missing/", ("red",))
    assert f"{http_server}missing/winequality-red.csv: download failed" in str(caught.value)


def test_data_command_uses_the_source_env(data_source, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WINE_QUALITY_DATA_SOURCE", str(data_source))
    assert cli.main(["data", "--dest", str(tmp_path / "data"), "--wine", "white"]) == 0
    assert "winequality-white.csv: sha256 verified" in capsys.readouterr().out


def test_data_command_fails_clearly_on_a_corrupt_source(data_source, tmp_path, capsys):
    source = tmp_path / "source"
    shutil.copytree(data_source, source)
    (source / "winequality-red.csv").chmod(0o644)
    with (source / "winequality-red.csv").open("a") as handle:
        handle.write("7.4;0.7;0;1.9;0.076;11;34;0.9978;3.51;0.56;9.4;5\n")
    code = cli.main(["data", "--dest", str(tmp_path / "data"), "--source", str(source)])
    assert code == cli.EXIT_BAD_INPUT
    assert "sha256 mismatch" in capsys.readouterr().err
    assert not (tmp_path / "data" / "winequality-red.csv").exists()
