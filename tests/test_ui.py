"""The Gradio page driven by a real headless Chromium (Debian's /usr/bin/chromium)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.helpers import WHATART, abstract_painting, distorted_copy, free_port, stop, wait_for_http

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic"]


@pytest.fixture(scope="module")
def ui_url(service_url: str) -> str:
    port = free_port()
    process = subprocess.Popen([WHATART, "ui", "--server", service_url, "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url, process)
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), f"Chromium is missing at {CHROMIUM}: `make test` installs it (apt-get install chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def _upload(browser, ui_url: str, photo: Path):
    page = browser.new_page()
    page.goto(ui_url)
    page.locator("input[type=file]").first.set_input_files(str(photo))
    return page


def test_uploading_a_photo_shows_the_painting_first(browser, ui_url: str, met_images: list[Path], tmp_path: Path) -> None:
    original = next(p for p in met_images if p.stem == "435809")  # The Harvesters
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(distorted_copy(original, np.random.default_rng(0)))
    page = _upload(browser, ui_url, photo)
    top = page.locator("#top-match")
    expect(top).to_contain_text("The Harvesters", timeout=60_000)
    expect(top).to_contain_text("Pieter Bruegel the Elder")
    expect(top).to_contain_text("1565")
    expect(top).not_to_contain_text("Not in the gallery")
    expect(top).to_contain_text("this server has no style/genre heads"), "the demo serves no heads, and says so"
    expect(page.locator("#top-image img")).to_be_visible()
    expect(page.locator("#other-matches img")).to_have_count(4, timeout=30_000)
    page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)


def test_a_work_outside_the_gallery_is_announced_as_such(browser, ui_url: str, tmp_path: Path) -> None:
    photo = tmp_path / "unknown.jpg"
    photo.write_bytes(abstract_painting(seed=5))
    page = _upload(browser, ui_url, photo)
    expect(page.locator("#top-match")).to_contain_text("Not in the gallery — closest works:", timeout=60_000)
    page.screenshot(path=str(tmp_path / "ui-unknown.png"), full_page=True)
