"""CSV answers (the API's text/csv and the web page's download) neutralise text cells that a
spreadsheet would run as a formula (OWASP's CSV-injection advice); numbers stay numbers."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from wine_quality.app.state import Prediction, spreadsheet_safe


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("0.1.0+m4607f7b9", "0.1.0+m4607f7b9"),
        ("alcohol 15.5 is above the training range", "alcohol 15.5 is above the training range"),
        ("", ""),
        (-0.5, -0.5),
        (7, 7),
    ],
)
def test_spreadsheet_safe(cell, shown):
    assert spreadsheet_safe(cell) == shown


def test_prediction_csv_neutralises_text_cells_in_api_and_web_layouts():
    prediction = Prediction(
        quality=np.array([5.0, 6.0]),
        grade=np.array([5, 6]),
        warnings=[["=cmd|' /C calc'!A0"], []],
        outside=np.zeros((2, 11), dtype=bool),
        model_version="@evil",
        low=np.array([4.0, 5.0]),
        high=np.array([6.0, 7.0]),
        level=0.8,
    )
    inputs = np.full((2, 11), -1.5)  # negative numbers are numbers, not formulas
    for text in (prediction.csv(), prediction.csv(inputs=inputs)):
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [row["model_version"] for row in rows] == ["'@evil", "'@evil"]
        assert rows[0]["warnings"] == "'=cmd|' /C calc'!A0" and rows[1]["warnings"] == ""
    web = list(csv.reader(io.StringIO(prediction.csv(inputs=inputs))))
    assert web[1][0] == "-1.5"
