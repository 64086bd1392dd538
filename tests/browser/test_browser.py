"""The web page in a real browser: gunicorn on a free local port, driven by headless Chromium.

Chromium is Debian's (`scripts/install-tools.sh`), driven through Playwright; Playwright's own
browser download is never used. Screenshots of the form, a batch result and an error go to
docs/images/ when WINE_QUALITY_DOCS_IMAGES=1 (that is how the docs' images are made), else to a
temporary folder.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from gunicorn_server import GunicornServer
from support import REPO, require_tool
from wine_quality.core.artifact import LoadedModel, load_artifact
from wine_quality.core.features import FEATURES

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def base_url(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service under gunicorn (its own config, two workers), with no secret key configured."""
    server = GunicornServer.start(
        model_dir,
        tmp_path_factory.mktemp("gunicorn"),
        WINE_QUALITY_SECRET_KEY=None,
        GUNICORN_SHUTDOWN_DELAY="0",
    )
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    """A headless Chromium with a fresh profile, accepting downloads."""
    chromium = require_tool("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            accept_downloads=True,
            viewport=DESKTOP,
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@dataclass
class Console:
    """Errors the page logged: a CSP violation or a failed asset load shows up here."""

    errors: list[str] = field(default_factory=list)


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.set_viewport_size(DESKTOP)
    try:
        yield page
    finally:
        page.close()


@pytest.fixture
def console(page) -> Console:
    console = Console()
    page.on(
        "console", lambda message: message.type == "error" and console.errors.append(message.text)
    )
    page.on("pageerror", lambda error: console.errors.append(str(error)))
    return console


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("WINE_QUALITY_DOCS_IMAGES") == "1":
        folder = REPO / "docs" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def model(model_dir: Path) -> LoadedModel:
    """The served artifact as `load_artifact` loads it: the reference for what the page shows
    (the promoted model, as in the screenshots in docs/images)."""
    return load_artifact(model_dir)


@pytest.fixture(scope="module")
def red_file(data_source: Path) -> Path:
    return data_source / "winequality-red.csv"


@pytest.fixture(scope="module")
def red_rows(red_file: Path) -> np.ndarray:
    reader = csv.reader(io.StringIO(red_file.read_text()), delimiter=";")
    next(reader)
    return np.array([[float(v) for v in record[:11]] for record in reader])


def no_horizontal_overflow(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_fill_the_form_and_read_the_prediction(
    page, console, base_url, model, red_file, red_rows, screenshots
) -> None:
    page.goto(base_url + "/")
    assert page.locator("form.features-form input[type=number]").count() == 11
    first_wine = red_file.read_text().splitlines()[1].split(";")  # as typed: 7.4, 0.7, 0, ...
    for feature, text in zip(FEATURES, first_wine, strict=False):
        page.fill(f"#f-{feature.key}", text)
    page.click("text=Predict quality")
    expected = float(model.predict(red_rows[:1])[0])
    assert page.text_content("#prediction") == f"{expected:.2f}"
    assert page.text_content("#grade") == str(int(np.floor(expected + 0.5)))
    assert model.version in page.text_content("#model-version")
    page.screenshot(path=screenshots / "web-form.png", full_page=True)
    assert console.errors == []


def test_the_interval_and_the_reasons_under_the_content_security_policy(
    page, console, base_url, model, red_file, red_rows, screenshots
) -> None:
    """The range beside the grade, and with the toggle on, the contributions as bars drawn by
    the server (no script, no inline style: a CSP violation would be a console error)."""
    page.goto(base_url + "/")
    first_wine = red_file.read_text().splitlines()[1].split(";")
    for feature, text in zip(FEATURES, first_wine, strict=False):
        page.fill(f"#f-{feature.key}", text)
    page.check("#explain")
    page.click("text=Predict quality")
    quality = model.predict(red_rows[:1])
    low, high = model.facts.intervals.bounds(red_rows[:1], quality)
    assert page.text_content("#interval-low") == f"{low[0]:.1f}"
    assert page.text_content("#interval-high") == f"{high[0]:.1f}"
    bars = page.locator("#contributions svg rect")
    assert bars.count() == 11
    widths = [bars.nth(i).bounding_box()["width"] for i in range(11)]
    assert widths[0] == max(widths) > 0  # drawn, largest first
    assert page.is_checked("#explain")
    page.locator("#result").screenshot(path=screenshots / "web-explain.png")
    assert console.errors == []


def test_the_form_works_with_the_keyboard_alone(page, base_url) -> None:
    page.goto(base_url + "/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(10):  # skip link, brand, four navigation links, then the first input
        if page.evaluate("document.activeElement.id") == "f-fixed_acidity":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "f-fixed_acidity"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Control+A")
    page.keyboard.type("8.1")
    page.keyboard.press("Enter")  # submits the form with the medians elsewhere
    page.wait_for_selector("#prediction")
    assert page.input_value("#f-fixed_acidity") == "8.1"


def test_the_browser_refuses_values_outside_the_bounds(page, base_url) -> None:
    page.goto(base_url + "/")
    page.fill("#f-alcohol", "30")
    page.click("text=Predict quality")
    # client-side validation (min/max from features.py) keeps the form from being sent
    assert page.evaluate("document.querySelector('#f-alcohol').validity.rangeOverflow")
    assert page.locator("#prediction").count() == 0


def test_upload_the_red_wine_file(
    page, console, base_url, model, red_file, red_rows, screenshots
) -> None:
    page.goto(base_url + "/")
    page.set_input_files("#csv-file", str(red_file))
    page.click("text=Upload and predict")
    assert page.text_content("#row-count") == "1599"
    expected = model.predict(red_rows)
    first_row = page.locator("#results-table tbody tr").first.locator("td")
    assert first_row.nth(11).text_content() == f"{expected[0]:.2f}"
    counts = [
        int(text.split()[0]) for text in page.locator(".histogram td.count").all_text_contents()
    ]
    assert sum(counts) == 1599
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=screenshots / "web-batch.png")

    with page.expect_download() as download_info:
        page.click("#download")
    download = download_info.value
    assert download.suggested_filename == "winequality-red-predictions.csv"
    records = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert len(records) == 1599
    predicted = np.array([float(r["predicted_quality"]) for r in records])
    np.testing.assert_allclose(predicted, expected, atol=1e-6)
    inputs = np.array([[float(r[f.name]) for f in FEATURES] for r in records])
    np.testing.assert_array_equal(inputs, red_rows)
    assert console.errors == []


def test_upload_a_broken_file_and_read_the_error(
    page, console, base_url, red_file, screenshots
) -> None:
    lines = red_file.read_text().splitlines()[:40]
    for line, column, text in ((17, 10, "strong"), (23, 8, "")):  # file lines; the header is 1
        cells = lines[line - 1].split(";")
        cells[column] = text
        lines[line - 1] = ";".join(cells)
    content = ("\n".join(lines) + "\n").encode()
    page.goto(base_url + "/")
    page.set_input_files(
        "#csv-file", {"name": "broken.csv", "mimeType": "text/csv", "buffer": content}
    )
    page.click("text=Upload and predict")
    assert "Invalid CSV: 2 problems" in page.text_content("#batch-error")
    rows = [
        [cell.strip() for cell in row.locator("td").all_text_contents()]
        for row in page.locator("#problems tbody tr").all()
    ]
    assert rows == [
        ["17", "alcohol", "must be a number, got text that is not a number"],
        ["23", "pH", "must be a number, got an empty cell"],
    ]
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=screenshots / "web-error.png")
    # the page itself comes with status 422, which Chromium logs; nothing else may fail
    assert [e for e in console.errors if "status of 422" not in e] == []


def test_an_upload_above_the_limit_gets_the_readable_413_page(page, base_url, red_file) -> None:
    """The server answers before reading a too-large body; the browser must still show the page."""
    lines = red_file.read_text().splitlines()
    rows = lines[1:] * 110  # about 9.2 MB, above the default 8 MiB; the row check never runs
    content = ("\n".join([lines[0], *rows]) + "\n").encode()
    assert len(content) > 8 * 1024 * 1024
    page.goto(base_url + "/")
    page.set_input_files(
        "#csv-file", {"name": "huge.csv", "mimeType": "text/csv", "buffer": content}
    )
    page.click("text=Upload and predict")
    assert page.text_content("h1") == "The file is too large"
    assert "larger than the limit of 8 MiB" in page.text_content("#page-error")


def test_phone_width(page, console, base_url, red_file, screenshots) -> None:
    page.set_viewport_size(PHONE)
    page.goto(base_url + "/")
    assert no_horizontal_overflow(page)
    page.screenshot(path=screenshots / "web-form-phone.png")
    page.set_input_files("#csv-file", str(red_file))
    page.click("text=Upload and predict")
    assert page.text_content("#row-count") == "1599"
    assert no_horizontal_overflow(page)  # the wide table scrolls inside its own box
    page.screenshot(path=screenshots / "web-batch-phone.png")
    assert console.errors == []


def test_https_through_a_trusted_proxy_gets_hsts_and_a_secure_cookie(base_url) -> None:
    """gunicorn trusts X-Forwarded-Proto from FORWARDED_ALLOW_IPS (default: this host only)."""
    import requests

    plain = requests.get(f"{base_url}/", timeout=30)
    assert "Strict-Transport-Security" not in plain.headers
    assert "Secure" not in plain.headers["Set-Cookie"]
    proxied = requests.get(f"{base_url}/", headers={"X-Forwarded-Proto": "https"}, timeout=30)
    assert proxied.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert "; Secure" in proxied.headers["Set-Cookie"]


def test_the_api_docs_page_loads_under_the_content_security_policy(page, console, base_url) -> None:
    page.goto(base_url + "/")
    page.click("nav >> text=API docs")
    page.wait_for_url(base_url + "/docs")
    assert page.locator("h1").count() >= 1
    assert console.errors == []
