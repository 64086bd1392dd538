"""Turn request bodies into model rows, and say exactly what is wrong when that is impossible.

Every entry point returns a float64 array of shape [n, 11] with the columns in `FEATURES` order,
or raises `InputError` naming every offending row and field. Problems never echo the payload back
(a string value is described by its type, not repeated). The HTTP API and the web page share
these functions, so both accept and reject exactly the same inputs:

- `parse_json(data, max_rows)`: the JSON body, refusing duplicate keys and, before parsing, more
  values than a batch of `max_rows` rows can hold (so memory stays near the body's size); read
  by orjson when that is certain to give the json module's result (app/jsoncodec.py);
- `rows_from_json(payload, max_rows)`: one object with the 11 features, or {"instances": [...]};
- `parse_csv(data, max_rows)`: a header row of feature names, ',' or ';' separated, read line by
  line with every line after the header (blank ones too) counted against `max_rows`;
- `validate_rows(rows)`: finite values inside the physical bounds of `features.py`;
- `number_from_text(text)`: a CSV cell's or web form field's number, in plain decimal syntax.

Feature names are accepted in both spellings ("fixed acidity" and "fixed_acidity").
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import operator
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from wine_quality.app.jsoncodec import NOT_PLAIN, loads_plain
from wine_quality.core.features import FEATURES, TARGET, Feature, index_of, resolve, within
from wine_quality.core.problems import Problems, kind_of

N_FEATURES = len(FEATURES)
MAX_DETAILS = 100
"""At most this many problems are listed in one error; the message says how many were left out."""

_PLAIN_NUMBERS = {int, float}
# A plain decimal number (JSON's syntax, with '+', '5.' and '.5' too) between spaces or tabs, or
# Python's spellings of NaN and infinity (read, then refused by validate_rows as not finite).
_NUMBER_TEXT = re.compile(
    r"[ \t]*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|infinity|inf)[ \t]*",
    re.ASCII | re.IGNORECASE,
)
# Every character _NUMBER_TEXT can match. Over these, float() and numpy accept exactly what it
# does: the '_', Unicode digits and other white space they also take are not among them.
_NUMBER_CHARS = b"0123456789+-.eE \tnaiftyNAIFTY"
_MINIMA = np.array([f.minimum for f in FEATURES])
_MAXIMA = np.array([f.maximum for f in FEATURES])
_MINIMA_LIST, _MAXIMA_LIST = _MINIMA.tolist(), _MAXIMA.tolist()


@dataclass
class InputError(Exception):
    """A request body that cannot be turned into model rows.

    status: 400 malformed (not JSON / not CSV), 413 too many rows, 422 well-formed but invalid.
    details: [{"row": int | None, "field": str | None, "problem": str}], at most MAX_DETAILS.
    """

    status: int
    code: str
    message: str
    details: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)


class _Problems(Problems):
    """The shared collector, raising one InputError (422) that lists every kept problem."""

    def __init__(self) -> None:
        super().__init__(MAX_DETAILS)

    def raise_if_any(self, what: str = "invalid input") -> None:
        if not self:
            return
        message = f"{what}: {self.count} problem{'s' if self.count != 1 else ''}"
        if self.left_out:
            message += f" (first {len(self.kept)} listed)"
        details = [{"row": p.row, "field": p.field, "problem": p.text} for p in self.kept]
        raise InputError(422, "invalid_input", message, details)


def json_item_budget(max_rows: int) -> int:
    """Most JSON values (counted by their separators) a body for `max_rows` rows needs: a row is
    an object of 11 numbers, or 11 numbers of a tensor and its brackets; the rest is slack."""
    return max_rows * (N_FEATURES + 2) + 1024


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def parse_json(data: bytes, max_rows: int) -> Any:
    """The parsed JSON body (UTF-8, a BOM allowed). InputError 400 when it is not JSON or an
    object has a key twice (the key is named); 413 when it holds more values than
    `json_item_budget(max_rows)`, checked before parsing."""
    items = data.count(b",") + data.count(b"[") + data.count(b"{")
    if items > json_item_budget(max_rows):
        raise InputError(
            413,
            "too_many_values",
            f"the JSON body holds about {items} values, more than a batch of {max_rows} rows "
            "needs (WINE_QUALITY_MAX_BATCH_ROWS)",
        )
    payload = loads_plain(data)
    return _parse_json_exactly(data) if payload is NOT_PLAIN else payload


def _parse_json_exactly(data: bytes) -> Any:
    """parse_json's answer, from the json module: it decides every document that
    jsoncodec.loads_plain leaves to it (duplicate keys, NaN, huge integers, errors)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            400, "malformed_json", f"the body is not UTF-8 (undecodable byte at {exc.start})"
        ) from None
    try:
        return json.loads(text, object_pairs_hook=_object_without_duplicates)
    except _DuplicateKey as exc:
        raise InputError(
            400,
            "duplicate_key",
            f"malformed JSON: the key {exc.key[:64]!r} appears twice in one object",
            [{"row": None, "field": exc.key[:64], "problem": "key given twice in one object"}],
        ) from None
    except json.JSONDecodeError as exc:
        raise InputError(
            400,
            "malformed_json",
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
    except RecursionError:
        raise InputError(400, "malformed_json", "malformed JSON: nested too deeply") from None
    except ValueError:  # json's only other refusal: an integer past int()'s digit limit
        raise InputError(400, "malformed_json", f"malformed JSON: {too_many_digits()}") from None


def too_many_digits() -> str:
    """Why the json module refuses an integer literal longer than int() converts."""
    return f"an integer literal with more than {sys.get_int_max_str_digits()} digits"


def too_many_rows(rows: int, max_rows: int) -> InputError:
    return InputError(
        413,
        "too_many_rows",
        f"batch has {rows} rows; the limit is {max_rows} (WINE_QUALITY_MAX_BATCH_ROWS)",
    )


def _check_value(problems: _Problems, row: int, feature: Feature, value: float) -> None:
    problem = feature.problem(value)
    if problem:
        problems.add(row, feature.name, problem)


def _record_to_row(record: Any, row: int, problems: _Problems) -> list[float]:
    values = [math.nan] * N_FEATURES
    if not isinstance(record, Mapping):
        problems.add(
            row,
            None,
            f"must be an object of the {N_FEATURES} named features, got {kind_of(record)}",
        )
        return values
    seen: dict[int, str] = {}
    for key, value in record.items():
        feature = resolve(key) if isinstance(key, str) else None
        if feature is None:
            problems.add(row, str(key)[:64], "unknown feature")
            continue
        column = index_of(feature)
        if column in seen:
            problems.add(row, feature.name, f"given twice (as {seen[column]!r} and {key!r})")
            continue
        seen[column] = key
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.add(row, feature.name, f"must be a number, got {kind_of(value)}")
            continue
        try:
            number = float(value)
        except OverflowError:
            problems.add(row, feature.name, "is too large to be a number")
            continue
        _check_value(problems, row, feature, number)
        values[column] = number
    for column, feature in enumerate(FEATURES):
        if column not in seen:
            problems.add(row, feature.name, "missing")
    return values


def rows_from_records(records: Sequence[Any], max_rows: int) -> np.ndarray:
    """Rows from a list of feature objects; raises InputError listing every problem."""
    if len(records) == 0:
        raise InputError(
            422,
            "invalid_input",
            "the batch is empty",
            [{"row": None, "field": "instances", "problem": "must hold at least one row"}],
        )
    if len(records) > max_rows:
        raise too_many_rows(len(records), max_rows)
    rows = _uniform_rows(records)
    if rows is not None:
        validate_rows(rows)
        return rows
    problems = _Problems()
    rows = np.array(
        [_record_to_row(record, i, problems) for i, record in enumerate(records)], dtype=np.float64
    )
    problems.raise_if_any()
    return rows


def _uniform_rows(records: Sequence[Any]) -> np.ndarray | None:
    """The common batch, fast: every record an object with the same 11 feature keys holding plain
    numbers. The key names are resolved once per key order, not per row; None sends anything
    else through the row-by-row path, which names each problem (validate_rows names bounds and
    NaN ones)."""
    first = records[0]
    if type(first) is not dict or len(first) != N_FEATURES:
        return None
    keys = tuple(first)
    columns = _columns_of(keys)
    if columns is None:
        return None
    if not all(type(record) is dict and len(record) == N_FEATURES for record in records):
        return None
    try:
        values = list(map(operator.itemgetter(*keys), records))
    except KeyError:  # a record with other keys
        return None
    if not set(map(type, chain.from_iterable(values))) <= _PLAIN_NUMBERS:
        return None  # strings, booleans (their type is bool, not int), null, ...
    try:
        block = np.array(values, dtype=np.float64)
    except OverflowError:  # an integer beyond float range
        return None
    if columns == _IN_ORDER:
        return block
    rows = np.empty_like(block)
    rows[:, columns] = block
    return rows


_IN_ORDER = list(range(N_FEATURES))


@functools.lru_cache(maxsize=256)  # clients send one or a few key orders
def _columns_of(keys: tuple[Any, ...]) -> list[int] | None:
    """For an object's keys, in order, each one's FEATURES column (a shared list: never modify
    it); None unless they name the 11 features once each."""
    features = [resolve(key) if isinstance(key, str) else None for key in keys]
    if None in features or len(set(features)) != N_FEATURES:
        return None
    return [index_of(feature) for feature in features]


def rows_from_json(payload: Any, max_rows: int) -> tuple[np.ndarray, bool]:
    """Rows from a parsed JSON body, and whether it was a single object (not a batch).

    Accepted: {"fixed acidity": 7.4, ...} (one row) or {"instances": [{...}, ...]}.
    """
    if not isinstance(payload, Mapping):
        raise InputError(
            422,
            "invalid_input",
            f"the body must be a JSON object, got {kind_of(payload)}",
            [
                {
                    "row": None,
                    "field": None,
                    "problem": 'send the 11 features as an object, or {"instances": [...]}',
                }
            ],
        )
    if "instances" in payload:
        extra = [str(k)[:64] for k in payload if k != "instances"]
        if extra:
            raise InputError(
                422,
                "invalid_input",
                "unexpected fields next to 'instances'",
                [{"row": None, "field": k, "problem": "unknown field"} for k in extra],
            )
        instances = payload["instances"]
        if not isinstance(instances, list):
            raise InputError(
                422,
                "invalid_input",
                "'instances' must be an array of objects",
                [
                    {
                        "row": None,
                        "field": "instances",
                        "problem": f"must be an array, got {kind_of(instances)}",
                    }
                ],
            )
        return rows_from_records(instances, max_rows), False
    return rows_from_records([payload], max_rows), True


def validate_rows(rows: np.ndarray) -> None:
    """Check an [n, 11] float array: finite and inside the physical bounds, else InputError (422).

    Vectorised, so a clean 10,000-row batch costs microseconds; only offending cells are visited.
    """
    if rows.ndim != 2 or rows.shape[1] != N_FEATURES:
        raise InputError(
            422,
            "invalid_input",
            f"expected rows of {N_FEATURES} features, got shape {list(rows.shape)}",
        )
    if len(rows) == 1 and within(rows[0].tolist(), _MINIMA_LIST, _MAXIMA_LIST):
        return  # one wine: Python floats, as core/features.one_value_clipped explains
    inside = (rows >= _MINIMA) & (rows <= _MAXIMA)  # False for NaN and for +-inf too
    if inside.all():
        return
    bad = ~inside
    problems = _Problems()
    for row, column in zip(*np.nonzero(bad), strict=True):
        _check_value(problems, int(row), FEATURES[column], float(rows[row, column]))
    problems.raise_if_any()


def _sniff_delimiter(header_line: str) -> str:
    return ";" if header_line.count(";") > header_line.count(",") else ","


def _header_columns(header: list[str], line: int) -> list[int | None]:
    """For each CSV column, its FEATURES index (None for an ignored `quality` column). Problems
    are reported at `line`, the header's line number in the file."""
    problems = _Problems()
    columns: list[int | None] = []
    seen: set[int] = set()
    for position, raw_name in enumerate(header):
        name = raw_name.strip()
        if name == TARGET:
            columns.append(None)
            continue
        feature = resolve(name)
        if feature is None:
            problems.add(
                line, name[:64] or f"column {position + 1}", "unknown column in the header"
            )
            columns.append(None)
            continue
        column = index_of(feature)
        if column in seen:
            problems.add(line, feature.name, "column given twice in the header")
        seen.add(column)
        columns.append(column)
    for column, feature in enumerate(FEATURES):
        if column not in seen:
            problems.add(line, feature.name, "missing column in the header")
    problems.raise_if_any("invalid CSV header")
    return columns


def number_from_text(text: str) -> float | None:
    """The number a CSV cell or a form field spells, or None. Only plain decimal syntax: ASCII
    digits, an optional sign, decimal point and exponent, spaces or tabs around; `nan` and `inf`
    too, so that validate_rows names them. Never what float() alone also takes: '3_4',
    full-width and other scripts' digits, non-breaking spaces."""
    return float(text) if _NUMBER_TEXT.fullmatch(text) else None


def _csv_cell(problems: _Problems, line: int, feature: Feature, text: str) -> float:
    number = number_from_text(text)
    if number is None:
        shown = "an empty cell" if not text.strip() else "text that is not a number"
        problems.add(line, feature.name, f"must be a number, got {shown}")
        return math.nan
    return number


def _plain_block(data: bytes | str, records: list[list[str]]) -> np.ndarray | None:
    """All cells as floats in one numpy call when no cell can be more than a plain number (numpy
    reads a cell as float() does, which also takes '3_4', full-width digits and non-breaking
    spaces); None sends the body cell by cell through number_from_text.

    One pass over the body decides: the bytes outside `_NUMBER_CHARS`, quotes, separators and
    line breaks must all be the header line's. Quoted data cells, which could hold a line break,
    are checked themselves."""
    if isinstance(data, str):
        if not data.isascii():
            return None
        data = data.encode()
    allowed = _NUMBER_CHARS + b'",;\r\n'
    header_line = data[:65536].lstrip().split(b"\n", 1)[0]
    if len(data.translate(None, allowed)) != len(header_line.translate(None, allowed)):
        return None
    quoted = data.count(b'"') != header_line.count(b'"')
    if quoted and "".join(chain.from_iterable(records)).encode().translate(None, _NUMBER_CHARS):
        return None
    try:
        return np.array(records, dtype=np.float64)
    except ValueError:  # an empty cell, or characters in an order no number has
        return None


def _csv_lines(data: bytes | str) -> io.TextIOBase:
    """The CSV as a stream of text lines, decoded as they are read (no second copy of the body)."""
    if isinstance(data, str):
        return io.StringIO(data, newline="")
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")


def _too_many_lines(max_rows: int) -> InputError:
    return InputError(
        413,
        "too_many_rows",
        f"the CSV has more than {max_rows} lines after the header (blank lines count too); "
        f"the limit is {max_rows} rows (WINE_QUALITY_MAX_BATCH_ROWS)",
    )


def _csv_records(
    data: bytes | str, max_rows: int
) -> tuple[tuple[int, list[str]] | None, list[tuple[int, list[str]]]]:
    """The header (line number, cells) and the data records, read line by line. Every line after
    the header, blank ones too, counts against `max_rows` (InputError 413 as soon as it is
    passed); so do the cells, checked before reading (a line of commas cannot fill memory)."""
    newline = b"\n" if isinstance(data, bytes) else "\n"
    head = data[:65536]
    sample = head.lstrip()
    header_text = sample.split(newline, 1)[0]
    if isinstance(header_text, bytes):
        header_text = header_text.decode("utf-8-sig", errors="replace")
    delimiter = _sniff_delimiter(header_text)
    # lines after the header, counted without a copy (a cell holds a number, never a line break)
    leading = head[: len(head) - len(sample)].count(newline)
    if data.count(newline) - leading - data.endswith(newline) > max_rows:
        raise _too_many_lines(max_rows)
    separators = data.count(delimiter.encode() if isinstance(data, bytes) else delimiter)
    if separators > (max_rows + 1) * (N_FEATURES + 2):
        raise InputError(
            413,
            "too_many_cells",
            f"the CSV holds {separators + 1} or more cells, more than {max_rows} rows need "
            "(WINE_QUALITY_MAX_BATCH_ROWS)",
        )
    header: tuple[int, list[str]] | None = None
    body: list[tuple[int, list[str]]] = []
    reader = csv.reader(_csv_lines(data), delimiter=delimiter)
    lines_after_header = 0
    try:
        for record in reader:
            blank = not record or (len(record) == 1 and not record[0].strip())
            if header is None:
                if not blank:
                    header = (reader.line_num, record)
                continue
            lines_after_header += 1
            if lines_after_header > max_rows:
                raise _too_many_lines(max_rows)
            if not blank:
                body.append((reader.line_num, record))
    except csv.Error as exc:
        raise InputError(400, "malformed_csv", f"the body is not valid CSV: {exc}") from None
    except UnicodeDecodeError:
        raise InputError(
            400,
            "malformed_csv",
            "the body is not UTF-8 text (an undecodable byte); save the file as CSV in UTF-8",
        ) from None
    return header, body


def parse_csv(data: bytes | str, max_rows: int) -> np.ndarray:
    """Rows from a CSV body (UTF-8 bytes or text): a header row of feature names (either
    spelling, in any order) and one row per wine, separated by ',' or ';' (the UCI files use ';'
    and quote the header). A `quality` column, as in the data set itself, is ignored. Row
    numbers in errors are line numbers of the file (the header is line 1). Raises InputError:
    400 when the body is not CSV, 413 above `max_rows` lines after the header, 422 listing every
    bad header name, ragged row and bad cell.
    """
    if not data or data.isspace():
        raise InputError(
            422,
            "invalid_input",
            "the CSV body is empty",
            [{"row": None, "field": None, "problem": "expected a header row and data rows"}],
        )
    found, body = _csv_records(data, max_rows)
    if found is None:
        raise InputError(
            422,
            "invalid_input",
            "the CSV has no header row",
            [{"row": 1, "field": None, "problem": "expected a header row of feature names"}],
        )
    header_line_number, header = found
    columns = _header_columns(header, header_line_number)
    if not body:
        raise InputError(
            422,
            "invalid_input",
            "the CSV has a header but no rows",
            [{"row": None, "field": None, "problem": "must hold at least one row"}],
        )
    width = len(header)
    problems = _Problems()
    for line, record in body:
        if len(record) != width:
            problems.add(line, None, f"has {len(record)} cells; the header has {width}")
    problems.raise_if_any("invalid CSV")
    order = [p for p, c in enumerate(columns) if c is not None]
    targets = [columns[p] for p in order]
    block = _plain_block(data, [record for _, record in body])
    if block is not None:
        block = block[:, order]
    else:
        block = np.array(
            [
                [
                    _csv_cell(problems, line, FEATURES[t], record[p])
                    for p, t in zip(order, targets, strict=True)
                ]
                for line, record in body
            ]
        )
        problems.raise_if_any("invalid CSV")
    rows = np.empty((len(body), N_FEATURES))
    rows[:, targets] = block
    try:
        validate_rows(rows)
    except InputError as exc:  # report file line numbers, not 0-based row indices
        for detail in exc.details:
            detail["row"] = body[detail["row"]][0]
        raise
    return rows
