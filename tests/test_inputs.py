"""Parsing and validation of request bodies (wine_quality.app.inputs): no model needed."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from support import PAPER_ROW
from wine_quality.app.inputs import (
    MAX_DETAILS,
    InputError,
    json_item_budget,
    number_from_text,
    parse_csv,
    parse_json,
    rows_from_json,
    rows_from_records,
    validate_rows,
)
from wine_quality.core.features import FEATURE_KEYS, FEATURE_NAMES, FEATURES

WINE = dict(zip(FEATURE_NAMES, PAPER_ROW, strict=True))
ROW = list(WINE.values())


def problems(error: InputError) -> set[tuple]:
    return {(d["row"], d["field"], d["problem"]) for d in error.details}


def fields_of(error: InputError) -> set:
    return {(d["row"], d["field"]) for d in error.details}


def test_single_object_gives_one_row_in_feature_order():
    rows, single = rows_from_json(dict(reversed(WINE.items())), max_rows=10)
    assert single
    assert rows.dtype == np.float64
    assert rows.tolist() == [ROW]


def test_snake_case_and_mixed_spellings_are_accepted():
    snake = dict(zip(FEATURE_KEYS, ROW, strict=True))
    mixed = {**dict(list(WINE.items())[:5]), **dict(list(snake.items())[5:])}
    rows, single = rows_from_json({"instances": [snake, mixed]}, max_rows=10)
    assert not single
    assert rows.tolist() == [ROW, ROW]


def test_every_key_order_gives_the_row_in_feature_order_also_past_the_remembered_orders():
    rng = np.random.default_rng(0)
    orders = [rng.permutation(len(ROW)) for _ in range(300)]  # more than the 256 remembered
    for order in [*orders, *orders[:5]]:
        spelled = [FEATURE_KEYS[i] if i % 2 else FEATURE_NAMES[i] for i in order]
        record = {name: ROW[i] for name, i in zip(spelled, order, strict=True)}
        rows, _ = rows_from_json({"instances": [record, record]}, max_rows=10)
        assert rows.tolist() == [ROW, ROW]


def test_every_problem_of_every_row_is_listed():
    bad = dict(WINE)
    bad["pH"] = "3.5"
    bad["alcohol"] = True
    bad["density"] = None
    del bad["chlorides"]
    bad["colour"] = 1
    other = {**WINE, "sulphates": 99.0, "fixed_acidity": 7.4}
    with pytest.raises(InputError) as caught:
        rows_from_records([WINE, bad, other], max_rows=10)
    error = caught.value
    assert error.status == 422
    assert fields_of(error) == {
        (1, "pH"),
        (1, "alcohol"),
        (1, "density"),
        (1, "chlorides"),
        (1, "colour"),
        (2, "sulphates"),
        (2, "fixed acidity"),
    }
    assert (1, "pH", "must be a number, got a string") in problems(error)
    assert (1, "alcohol", "must be a number, got a boolean") in problems(error)
    assert (1, "density", "must be a number, got null") in problems(error)
    assert (1, "chlorides", "missing") in problems(error)
    assert (1, "colour", "unknown feature") in problems(error)
    assert "7 problems" in error.message


def test_uniform_batches_give_the_same_rows_and_errors_as_mixed_ones():
    snake = dict(zip(FEATURE_KEYS, ROW, strict=True))
    shuffled = dict(reversed(list(snake.items())))  # same keys, another order: one key order
    uniform = [shuffled] * 3
    mixed = [WINE, snake, shuffled]  # differently spelled records: resolved row by row
    assert np.array_equal(rows_from_records(uniform, 10), rows_from_records(mixed, 10))
    assert rows_from_records(uniform, 10).tolist() == [ROW] * 3

    out_of_bounds = [dict(shuffled), dict(shuffled), {**shuffled, "ph": 15.0, "alcohol": math.nan}]
    errors = []
    for batch in (out_of_bounds, [WINE, *out_of_bounds[1:]]):
        with pytest.raises(InputError) as caught:
            rows_from_records(batch, max_rows=10)
        errors.append(problems(caught.value))
    assert (
        errors[0]
        == errors[1]
        == {
            (2, "pH", "15 is outside the physical bounds [0, 14] pH"),
            (2, "alcohol", "must be a finite number (not NaN or infinity)"),
        }
    )


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_rejected(value):
    with pytest.raises(InputError) as caught:
        rows_from_json({**WINE, "alcohol": value}, max_rows=10)
    assert caught.value.status == 422
    assert fields_of(caught.value) == {(0, "alcohol")}
    assert "finite" in caught.value.details[0]["problem"]


@pytest.mark.parametrize(("name", "value"), [("alcohol", 25.01), ("pH", -0.1), ("density", 0.5)])
def test_values_outside_physical_bounds_are_rejected_with_the_bounds(name, value):
    with pytest.raises(InputError) as caught:
        rows_from_json({**WINE, name: value}, max_rows=10)
    feature = next(f for f in FEATURES if f.name == name)
    assert f"[{feature.minimum:g}, {feature.maximum:g}]" in caught.value.details[0]["problem"]


def test_huge_integer_is_an_input_error_not_a_crash():
    with pytest.raises(InputError) as caught:
        rows_from_json({**WINE, "alcohol": 10**400}, max_rows=10)
    assert caught.value.status == 422


@pytest.mark.parametrize("payload", [[WINE], "text", 3, None])
def test_body_must_be_an_object(payload):
    with pytest.raises(InputError) as caught:
        rows_from_json(payload, max_rows=10)
    assert caught.value.status == 422


@pytest.mark.parametrize(
    "payload",
    [
        {"instances": []},
        {"instances": {"a": 1}},
        {"instances": [WINE], "extra": 1},
        {"instances": [1]},
    ],
)
def test_malformed_batches_are_rejected(payload):
    with pytest.raises(InputError) as caught:
        rows_from_json(payload, max_rows=10)
    assert caught.value.status == 422
    assert caught.value.details


def test_too_many_rows_is_413():
    with pytest.raises(InputError) as caught:
        rows_from_json({"instances": [WINE] * 4}, max_rows=3)
    assert caught.value.status == 413
    assert "limit is 3" in caught.value.message


def test_details_are_capped_and_the_message_counts_all():
    with pytest.raises(InputError) as caught:
        rows_from_records([{"pH": "x"}] * 20, max_rows=100)
    assert len(caught.value.details) == MAX_DETAILS
    assert "220 problems" in caught.value.message


def test_errors_never_echo_string_values():
    secret = "s3cr3t-" * 50
    with pytest.raises(InputError) as caught:
        rows_from_json({**WINE, "alcohol": secret}, max_rows=10)
    assert "s3cr3t" not in str(caught.value.details) + caught.value.message


def test_validate_rows_rejects_wrong_shape_and_accepts_clean_rows():
    validate_rows(np.array([ROW, ROW]))
    with pytest.raises(InputError):
        validate_rows(np.zeros((2, 10)))


# ---------------------------------------------------------------- CSV


def test_the_uci_file_parses_like_numpy_reads_it(data_source):
    path = data_source / "winequality-red.csv"
    rows = parse_csv(path.read_text(), max_rows=10_000)
    expected = np.loadtxt(path, delimiter=";", skiprows=1)[:, :11]
    assert rows.shape == (1599, 11)
    np.testing.assert_array_equal(rows, expected)


def test_comma_csv_with_snake_case_header_in_another_order():
    order = list(reversed(range(11)))
    header = ",".join(FEATURE_KEYS[i] for i in order)
    line = ",".join(str(ROW[i]) for i in order)
    rows = parse_csv(f"{header}\n{line}\n{line}\n", max_rows=10)
    assert rows.tolist() == [ROW, ROW]


def test_quoted_header_and_a_quality_column_as_in_the_data_set():
    header = ";".join(f'"{n}"' for n in FEATURE_NAMES) + ';"quality"'
    rows = parse_csv(f"{header}\n" + ";".join(map(str, ROW)) + ";5\n", max_rows=10)
    assert rows.tolist() == [ROW]


def test_csv_header_problems_are_all_named():
    header = ",".join([*FEATURE_NAMES[:9], "colour", "pH"])
    with pytest.raises(InputError) as caught:
        parse_csv(header + "\n" + ",".join(["1"] * 11), max_rows=10)
    assert fields_of(caught.value) == {(1, "colour"), (1, "pH"), (1, "sulphates"), (1, "alcohol")}


def test_csv_header_problems_name_the_header_line_after_blank_lines():
    header = ",".join([*FEATURE_NAMES[:10], "colour"])
    with pytest.raises(InputError) as caught:
        parse_csv("\n\n" + header + "\n" + ",".join(["1"] * 11), max_rows=10)
    assert fields_of(caught.value) == {(3, "colour"), (3, "alcohol")}


def test_csv_cell_problems_name_the_file_line_and_column():
    header = ",".join(FEATURE_NAMES)
    good = ",".join(map(str, ROW))
    text_cell = good.replace("9.4", "strong")
    empty_cell = good.replace("0.56", "")
    out_of_bounds = good.replace("3.51", "15")
    ragged = good + ",1"
    body = "\n".join([header, good, text_cell, empty_cell, out_of_bounds, ragged])
    with pytest.raises(InputError) as caught:
        parse_csv(body, max_rows=10)
    assert caught.value.status == 422
    assert fields_of(caught.value) == {(6, None)}  # ragged rows are reported first, alone
    with pytest.raises(InputError) as caught:
        parse_csv("\n".join([header, good, text_cell, empty_cell]), max_rows=10)
    assert problems(caught.value) == {
        (3, "alcohol", "must be a number, got text that is not a number"),
        (4, "sulphates", "must be a number, got an empty cell"),
    }
    with pytest.raises(InputError) as caught:
        parse_csv("\n".join([header, good, out_of_bounds]), max_rows=10)
    assert fields_of(caught.value) == {(3, "pH")}


# What Python's float() also reads, JSON never: underscores, other scripts' digits, Unicode spaces.
NOT_PLAIN_NUMBERS = [
    "1_0",
    "1_0.5",
    "\uff11\uff10",  # full-width 10
    "\u0661\u0660",  # Arabic-Indic 10
    "\u00a010\u00a0",  # between non-breaking spaces
    "10\u2003",  # em space
]
PLAIN_NUMBERS = [(" 10 ", 10.0), ("\t+10", 10.0), ("1e1", 10.0), ("10.", 10.0), (".5E1", 5.0)]


def csv_with_alcohol(*cells: str) -> bytes:
    lines = [",".join(FEATURE_NAMES)] + [",".join([*map(str, ROW[:10]), c]) for c in cells]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("cell", NOT_PLAIN_NUMBERS)
def test_csv_cells_that_only_python_reads_as_numbers_are_named_by_line_and_column(cell):
    for lines in ([cell], ["9.4"] * 20 + [cell]):  # alone, and after rows of plain numbers
        with pytest.raises(InputError) as caught:
            parse_csv(csv_with_alcohol(*lines), max_rows=100)
        assert (caught.value.status, caught.value.code) == (422, "invalid_input")
        line = len(lines) + 1
        assert problems(caught.value) == {
            (line, "alcohol", "must be a number, got text that is not a number")
        }


@pytest.mark.parametrize(("cell", "value"), PLAIN_NUMBERS)
def test_csv_cells_take_plain_decimal_numbers_with_spaces_around(cell, value):
    assert parse_csv(csv_with_alcohol(cell, "9.4"), max_rows=10)[:, 10].tolist() == [value, 9.4]
    quoted = csv_with_alcohol(f'"{cell}"')
    assert parse_csv(quoted, max_rows=10)[:, 10].tolist() == [value]
    assert parse_csv(quoted.decode(), max_rows=10)[:, 10].tolist() == [value]  # as the CLI reads


@pytest.mark.parametrize("cell", ['"\n10"', '"10\r\n"', '"10\x0c"'])
def test_a_quoted_cell_holding_a_line_break_around_a_number_is_named(cell):
    with pytest.raises(InputError) as caught:
        parse_csv(csv_with_alcohol(cell), max_rows=10)
    assert caught.value.status == 422
    assert fields_of(caught.value) == {(cell.count("\n") + 2, "alcohol")}  # the line it ends on


@pytest.mark.parametrize("cell", ["nan", "NaN", "-inf", "Infinity", " inf "])
def test_csv_nan_and_infinity_text_is_refused_as_not_finite(cell):
    with pytest.raises(InputError) as caught:
        parse_csv(csv_with_alcohol("9.4", cell), max_rows=10)
    assert problems(caught.value) == {
        (3, "alcohol", "must be a finite number (not NaN or infinity)")
    }


def test_number_from_text_is_json_number_syntax_with_spaces_around():
    assert [number_from_text(text) for text, _ in PLAIN_NUMBERS] == [v for _, v in PLAIN_NUMBERS]
    assert [number_from_text(text) for text in NOT_PLAIN_NUMBERS] == [None] * len(NOT_PLAIN_NUMBERS)
    assert [number_from_text(text) for text in ("", " ", "1e", "0x10", "1 0", "\n10")] == [None] * 6


def test_an_integer_literal_past_the_digit_limit_is_described_not_python_advice():
    with pytest.raises(InputError) as caught:
        parse_json(b'{"alcohol": ' + b"1" * 5000 + b"}", max_rows=10)
    assert (caught.value.status, caught.value.code) == (400, "malformed_json")
    assert caught.value.message == (
        f"malformed JSON: an integer literal with more than {sys.get_int_max_str_digits()} digits"
    )


def test_the_cli_describes_an_integer_literal_past_the_digit_limit(tmp_path, capsys):
    from wine_quality import cli

    path = tmp_path / "wine.json"
    path.write_text('{"alcohol": ' + "1" * 5000 + "}")
    assert cli.main(["predict", str(path), "--model-dir", str(tmp_path)]) == cli.EXIT_BAD_INPUT
    limit = sys.get_int_max_str_digits()
    expected = f"invalid JSON (an integer literal with more than {limit} digits)"
    assert capsys.readouterr().err == f"error: {path}: {expected}\n"


@pytest.mark.parametrize("body", ["", "\n\n", '""\n', ",".join(FEATURE_NAMES) + "\n"])
def test_empty_csv_is_rejected(body):
    with pytest.raises(InputError) as caught:
        parse_csv(body, max_rows=10)
    assert caught.value.status == 422


def test_csv_row_limit_is_413():
    body = ",".join(FEATURE_NAMES) + "\n" + ("\n".join([",".join(map(str, ROW))] * 11))
    with pytest.raises(InputError) as caught:
        parse_csv(body, max_rows=10)
    assert caught.value.status == 413


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('{"alcohol": 9.4, "pH": 3.5, "alcohol": 10.0}', "alcohol"),
        ('{"instances": [{"pH": 3.5}, {"density": 1.0, "density": 0.99}]}', "density"),
        ('{"inputs": [{"name": "x", "data": [[{"a": {"deep": 1, "deep": 2}}]]}]}', "deep"),
        ('{"instances": [], "instances": []}', "instances"),
    ],
)
def test_a_key_given_twice_in_one_object_is_400_naming_it_at_any_depth(body, key):
    with pytest.raises(InputError) as caught:
        parse_json(body.encode(), max_rows=10)
    assert caught.value.status == 400
    assert caught.value.code == "duplicate_key"
    assert repr(key) in caught.value.message
    assert [d["field"] for d in caught.value.details] == [key]


def test_the_same_key_in_different_objects_is_not_a_duplicate():
    body = json.dumps({"instances": [WINE, WINE]}).encode()
    assert parse_json(body, max_rows=10) == {"instances": [WINE, WINE]}


def test_the_value_count_precheck_refuses_one_value_over_the_budget_before_parsing():
    budget = json_item_budget(10)
    at_budget = b"[" + b"0," * (budget - 1) + b"0]"  # one '[' and budget - 1 commas
    assert len(parse_json(at_budget, max_rows=10)) == budget
    with pytest.raises(InputError) as caught:
        parse_json(b"[" + b"0," * budget + b"0]", max_rows=10)
    assert (caught.value.status, caught.value.code) == (413, "too_many_values")
    assert "WINE_QUALITY_MAX_BATCH_ROWS" in caught.value.message
    # bytes that are not even JSON are refused by the count alone: nothing was parsed
    with pytest.raises(InputError) as caught:
        parse_json(b"{" * (budget + 1), max_rows=10)
    assert caught.value.status == 413


@pytest.mark.parametrize("max_rows", [1, 10, 1000])
def test_a_full_batch_fits_the_value_budget_in_every_accepted_shape(max_rows):
    objects = json.dumps({"instances": [WINE] * max_rows}).encode()
    assert rows_from_json(parse_json(objects, max_rows), max_rows)[0].shape == (max_rows, 11)
    tensor = {"inputs": [{"name": "x", "shape": [max_rows, 11], "data": [ROW] * max_rows}]}
    assert parse_json(json.dumps(tensor).encode(), max_rows)["inputs"][0]["shape"][0] == max_rows


def csv_body(rows: int, blank_after: int = 0, newline: str = "\n", end: bool = True) -> str:
    line = ",".join(map(str, ROW))
    lines = [",".join(FEATURE_NAMES), *[line] * rows, *[""] * blank_after]
    return newline.join(lines) + (newline if end else "")


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("end", [True, False])
def test_csv_at_the_row_limit_passes_and_one_line_more_is_413(newline, end):
    assert parse_csv(csv_body(10, newline=newline, end=end), max_rows=10).shape == (10, 11)
    blank_eleventh = csv_body(10, 1, newline, end=True)  # the 11th line after the header: ""
    for body in (csv_body(11, newline=newline, end=end), blank_eleventh):
        with pytest.raises(InputError) as caught:
            parse_csv(body, max_rows=10)
        assert (caught.value.status, caught.value.code) == (413, "too_many_rows")
        assert "more than 10 lines after the header" in caught.value.message


def test_blank_lines_after_the_header_count_toward_the_row_limit():
    line = ",".join(map(str, ROW))
    header = ",".join(FEATURE_NAMES)
    inside = header + "\n" + (line + "\n\n") * 5  # 5 rows, 5 blank lines: 10 lines
    assert parse_csv(inside, max_rows=10).shape == (5, 11)
    with pytest.raises(InputError) as caught:
        parse_csv(inside + "\n", max_rows=10)
    assert caught.value.status == 413
    with pytest.raises(InputError) as caught:
        parse_csv((header + "\n" + "\n" * 1_000_000).encode(), max_rows=10)
    assert caught.value.status == 413


def test_blank_lines_before_the_header_do_not_count():
    body = "\n\n\n" + csv_body(10)
    rows = parse_csv(body.encode(), max_rows=10)
    assert rows.shape == (10, 11)


def test_a_line_of_separators_is_413_before_it_is_split():
    body = ",".join(FEATURE_NAMES) + "\n" + "," * 1_000_000 + "\n"
    with pytest.raises(InputError) as caught:
        parse_csv(body.encode(), max_rows=10)
    assert (caught.value.status, caught.value.code) == (413, "too_many_cells")
