"""The UCI Wine Quality files: fetching them with checksum verification, and validating a CSV.

`fetch()` downloads the files from the UCI repository (or copies them from a local folder) and
refuses any file whose sha256 differs from the published one. `load_dataset()` reads one CSV and
validates it strictly before training sees it: exact header, numeric values, no missing values,
physically plausible ranges (from `features.py`), integer grades. Every problem is reported with the
file, the line and the column.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wine_quality.core.artifact import sha256_of
from wine_quality.core.features import (
    CSV_COLUMNS,
    FEATURES,
    TARGET,
    TARGET_MAXIMUM,
    TARGET_MINIMUM,
)
from wine_quality.core.problems import Problems

WINES: tuple[str, ...] = ("red", "white")

UCI_BASE_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/wine-quality/"
SOURCE_ENV = "WINE_QUALITY_DATA_SOURCE"

# Published checksums of the UCI files (Cortez et al. 2009, UCI data set 186).
SHA256: dict[str, str] = {
    "winequality-red.csv": "4a402cf041b025d4566d954c3b9ba8635a3a8a01e039005d97d6a710278cf05e",
    "winequality-white.csv": "76c3f809815c17c07212622f776311faeb31e87610d52c26d87d6e361b169836",
}

SEPARATOR = ";"
DOWNLOAD_TIMEOUT_SECONDS = 60
MAX_DOWNLOAD_BYTES = 10 * 1024 * 1024
MAX_REPORTED_PROBLEMS = 10


class DataError(ValueError):
    """A data file is missing, corrupt or malformed; the message names the file and the problem."""


def file_name(wine: str) -> str:
    if wine not in WINES:
        raise DataError(f"unknown wine {wine!r}; choose one of {', '.join(WINES)}")
    return f"winequality-{wine}.csv"


# --------------------------------------------------------------------------- fetching


def fetch(dest: Path, source: str | None = None, wines: tuple[str, ...] = WINES) -> list[Path]:
    """Put the verified UCI files for `wines` into `dest`; return their paths.

    `source` is a local folder or an http(s) URL prefix; by default env WINE_QUALITY_DATA_SOURCE,
    else the UCI repository. A file already in `dest` with the right checksum is kept as is. A
    file is written under a temporary name and renamed only once its checksum matched, so `dest`
    never holds a partial or unverified file.
    """
    source = source or os.environ.get(SOURCE_ENV) or UCI_BASE_URL
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for wine in wines:
        name = file_name(wine)
        target = dest / name
        if target.is_file() and sha256_of(target) == SHA256[name]:
            paths.append(target)
            continue
        handle, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=dest)
        os.close(handle)
        partial = Path(temporary)
        try:
            _copy_or_download(source, name, partial)
            _verify_checksum(partial, name, origin=_describe(source, name))
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        paths.append(target)
    return paths


def _describe(source: str, name: str) -> str:
    return source.rstrip("/") + "/" + name if _is_url(source) else str(Path(source) / name)


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _copy_or_download(source: str, name: str, target: Path) -> None:
    if _is_url(source):
        _download(source.rstrip("/") + "/" + name, target)
        return
    origin = Path(source) / name
    if not origin.is_file():
        raise DataError(f"{origin}: file not found (is {source} the folder holding the UCI files?)")
    shutil.copyfile(origin, target)


def _download(url: str, target: Path) -> None:
    import requests  # only needed when downloading

    try:
        with requests.get(url, stream=True, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
            response.raise_for_status()
            size = 0
            with target.open("wb") as out:
                for chunk in response.iter_content(chunk_size=1 << 16):
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise DataError(
                            f"{url}: larger than {MAX_DOWNLOAD_BYTES} bytes; not a UCI file"
                        )
                    out.write(chunk)
    except requests.RequestException as error:
        raise DataError(f"{url}: download failed: {error}") from error


def _verify_checksum(path: Path, name: str, origin: str) -> None:
    actual = sha256_of(path)
    if actual != SHA256[name]:
        raise DataError(
            f"{origin}: sha256 mismatch: got {actual}, expected {SHA256[name]} "
            "(the file is corrupt, truncated or not the published UCI file)"
        )


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Dataset:
    """A validated data file: inputs in FEATURES order, integer grades, duplicate report."""

    path: Path
    sha256: str
    X: np.ndarray  # float64 [n, 11]
    y: np.ndarray  # float64 [n], integral grades
    duplicates: int  # rows that exactly repeat an earlier row (inputs and grade)

    @property
    def rows(self) -> int:
        return len(self.y)

    @property
    def is_published(self) -> bool:
        """True when the file is byte-for-byte the published UCI file."""
        return self.sha256 in SHA256.values()

    def first_occurrences(self) -> np.ndarray:
        """Boolean mask keeping the first copy of every distinct row."""
        return first_occurrences(self.X, self.y)


def first_occurrences(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    table = np.column_stack([X, y])
    _, first = np.unique(table, axis=0, return_index=True)
    mask = np.zeros(len(table), dtype=bool)
    mask[first] = True
    return mask


def _raise_if_any(path: Path, problems: Problems) -> None:
    if not problems:
        return
    lines = [f"{path}: {problems.count} problem(s):"]
    for problem in problems.kept:
        where = f"line {problem.row}" + (f", column {problem.field!r}" if problem.field else "")
        lines.append(f"  {where}: {problem.text}")
    if problems.left_out:
        lines.append(f"  ... and {problems.left_out} more")
    raise DataError("\n".join(lines))


def load_dataset(path: Path) -> Dataset:
    """Read and validate one UCI-format CSV; raise DataError naming file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    # utf-8-sig: a byte-order mark (as spreadsheet programs write) is not part of the header.
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    if not text.strip():
        raise DataError(f"{path}: the file is empty (expected a header line and data rows)")
    records = list(csv.reader(text.splitlines(), delimiter=SEPARATOR))
    _check_header(path, records[0])
    body = [(number, row) for number, row in enumerate(records[1:], start=2) if row]
    if not body:
        raise DataError(f"{path}: the file has a header but no data rows")
    problems = Problems(MAX_REPORTED_PROBLEMS)
    values = np.full((len(body), len(CSV_COLUMNS)), np.nan)
    for index, (line, row) in enumerate(body):
        _parse_row(problems, line, row, values[index])
    _raise_if_any(path, problems)
    X = np.ascontiguousarray(values[:, : len(FEATURES)])
    y = np.ascontiguousarray(values[:, len(FEATURES)])
    duplicates = int(len(y) - first_occurrences(X, y).sum())
    return Dataset(path=path, sha256=sha256_of(path), X=X, y=y, duplicates=duplicates)


def _check_header(path: Path, header: list[str]) -> None:
    names = [name.strip() for name in header]
    if len(names) == 1 and len(CSV_COLUMNS) > 1:
        guess = next((sep for sep in (",", "\t", "|") if sep in names[0]), None)
        hint = f" (it looks separated by {guess!r})" if guess else ""
        raise DataError(
            f"{path}: line 1 (header): found 1 column, expected {len(CSV_COLUMNS)} columns "
            f"separated by {SEPARATOR!r}{hint}"
        )
    if names == list(CSV_COLUMNS):
        return
    missing = [name for name in CSV_COLUMNS if name not in names]
    unexpected = [name for name in names if name not in CSV_COLUMNS]
    details = []
    if missing:
        details.append("missing column(s) " + ", ".join(repr(n) for n in missing))
    if unexpected:
        details.append("unexpected column(s) " + ", ".join(repr(n) for n in unexpected))
    if not details:
        expected = SEPARATOR.join(CSV_COLUMNS)
        details.append(f"columns are out of order or repeated; expected {expected}")
    raise DataError(f"{path}: line 1 (header): " + "; ".join(details))


def _parse_row(problems: Problems, line: int, row: list[str], out: np.ndarray) -> None:
    if len(row) != len(CSV_COLUMNS):
        problems.add(line, None, f"found {len(row)} values, expected {len(CSV_COLUMNS)}")
        return
    for column, (name, text) in enumerate(zip(CSV_COLUMNS, row, strict=True)):
        cell = text.strip()
        if not cell:
            problems.add(line, name, "missing value")
            continue
        try:
            value = float(cell)
        except ValueError:
            problems.add(line, name, f"{cell!r} is not a number")
            continue
        if math.isnan(value):
            problems.add(line, name, "missing value (NaN)")
            continue
        problem = (
            _grade_problem(value) if column == len(FEATURES) else FEATURES[column].problem(value)
        )
        if problem:
            problems.add(line, name, problem)
            continue
        out[column] = value


def _grade_problem(value: float) -> str | None:
    if not math.isfinite(value) or value != round(value):
        return f"{value:g} is not a whole {TARGET} grade"
    if not TARGET_MINIMUM <= value <= TARGET_MAXIMUM:
        return f"grade {value:g} is outside {TARGET_MINIMUM}-{TARGET_MAXIMUM}"
    return None
