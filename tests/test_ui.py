"""The Gradio page driven by a real headless Chromium (Debian's /usr/bin/chromium), and its API
through gradio_client: every painting in the photo outlined and numbered, and why each match."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from playwright.sync_api import expect, sync_playwright
from whatart.client.rest_client import WhatartClient
from whatart.client.ui import NOT_AN_IMAGE, NOT_IN_GALLERY, build_ui
from whatart.client.ui_drawing import colour
from whatart.retrieval_service.evaluation.protocols import make_wall_query

from tests.helpers import WHATART, abstract_painting, distorted_copy, free_port, stop, wait_for_http

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic"]


SMALL_LIMIT = 2**20
README_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "ui.png"
"""the README's picture of the page, taken by the wall test below"""


@contextmanager
def _whatart_ui(service_url: str, temp_dir: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """`whatart ui` on a free port, its Gradio files under `temp_dir`, until the block ends."""
    port = free_port()
    process = subprocess.Popen([WHATART, "ui", "--server", service_url, "--port", str(port)],
                               env={**os.environ, "GRADIO_TEMP_DIR": str(temp_dir), **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url, process)
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def ui_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gradio-temp")


@pytest.fixture(scope="module")
def ui_url(service_url: str, ui_temp_dir: Path) -> str:
    with _whatart_ui(service_url, ui_temp_dir) as url:
        yield url


@pytest.fixture(scope="module")
def small_limit_ui(service_url: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A page whose upload limit (WHATART_MAX_UPLOAD_BYTES) is 1 MiB: (its URL, its temp folder)."""
    temp_dir = tmp_path_factory.mktemp("gradio-temp-small")
    with _whatart_ui(service_url, temp_dir, {"WHATART_MAX_UPLOAD_BYTES": str(SMALL_LIMIT)}) as url:
        yield url, temp_dir


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


WALL = ("met-436440", "met-459052")
"""two demo paintings whose wall (seed 0, index 2) the service is known to separate"""


@pytest.fixture(scope="module")
def wall(met_images: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    by_id = {f"met-{path.stem}": path for path in met_images}
    path = tmp_path_factory.mktemp("wall") / "wall.jpg"
    path.write_bytes(make_wall_query([Image.open(by_id[i]) for i in WALL], seed=0, index=2))
    return path


def _title(service_url: str, artwork_id: str) -> str:
    return httpx.get(f"{service_url}/v1/artworks/{artwork_id}", timeout=30).json()["title"]


def _shown(page, selector: str) -> np.ndarray:
    """A screenshot of the element, as RGB pixels."""
    return np.asarray(Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("RGB")).astype(int)


def _coloured(pixels: np.ndarray, number: int, tolerance: int = 60) -> np.ndarray:
    """Where the pixels have painting `number`'s outline colour: a mask."""
    return np.abs(pixels - np.array(colour(number))).max(axis=2) < tolerance


def _keep_as_readme_screenshot(png: bytes) -> None:
    """Rewrite docs/ui.png (960 px wide, 256 colours: ~0.5 MB) when the page looks different from
    it, so the README shows today's page without a new file for every run's rendering noise."""
    page = Image.open(io.BytesIO(png)).convert("RGB")
    shown = page.resize((960, round(page.height * 960 / page.width)), Image.Resampling.LANCZOS).quantize(256)
    if README_SCREENSHOT.exists():
        kept, now = (np.asarray(image.convert("RGB"), int) for image in (Image.open(README_SCREENSHOT), shown))
        if kept.shape == now.shape and np.abs(kept - now).mean() < 2:
            return
    shown.save(README_SCREENSHOT, optimize=True)


def _painting_cards(page):
    return page.locator(".painting:visible")


def test_uploading_a_photo_shows_the_painting_first(browser, ui_url: str, met_images: list[Path], tmp_path: Path) -> None:
    original = next(p for p in met_images if p.stem == "435809")  # The Harvesters
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(distorted_copy(original, np.random.default_rng(0)))
    page = _upload(browser, ui_url, photo)
    card = page.locator("#painting-1-card")
    expect(card).to_contain_text("The Harvesters", timeout=60_000)
    expect(card).to_contain_text("1. The Harvesters")
    expect(card).to_contain_text("Pieter Bruegel the Elder")
    expect(card).to_contain_text("1565")
    expect(card).to_contain_text("Confidence")
    expect(card).not_to_contain_text(NOT_IN_GALLERY)
    expect(_painting_cards(page)).to_have_count(1)  # one painting in the photo: one card, one outline
    expect(page.locator("#status")).to_contain_text("1 painting found")
    expect(page.locator("#status")).to_contain_text("this server has no style/genre heads"), "the demo serves no heads, and says so"
    evidence = page.locator("#painting-1-evidence img")
    expect(evidence).to_be_visible()
    width, height = evidence.evaluate("image => [image.naturalWidth, image.naturalHeight]")
    assert width > height > 0, "the photo and the gallery image side by side"
    expect(page.locator("#other-matches img")).to_have_count(4, timeout=30_000)
    expect(page.locator("#paintings-found img")).to_be_visible()
    annotated = _shown(page, "#paintings-found img")
    assert _coloured(annotated, 1).sum() > 200, "painting 1 is outlined in its colour"
    assert _coloured(annotated, 2).sum() < 50, "and there is no painting 2"
    page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)


def test_a_wall_of_two_paintings_shows_both_outlined_numbered_and_explained(browser, ui_url: str, service_url: str,
                                                                            wall: Path) -> None:
    page = _upload(browser, ui_url, wall)
    expect(page.locator("#status")).to_contain_text("2 paintings found", timeout=120_000)
    expect(_painting_cards(page)).to_have_count(2)
    cards = [page.locator(f"#painting-{number}-card") for number in (1, 2)]
    for number, card in enumerate(cards, start=1):
        expect(card).to_contain_text(f"{number}. ")
        expect(card).not_to_contain_text(NOT_IN_GALLERY)
    shown = " ".join(card.inner_text() for card in cards)
    for artwork_id in WALL:
        assert _title(service_url, artwork_id) in shown and artwork_id in shown, (artwork_id, shown)
    evidence = page.locator(".evidence:visible img")
    expect(evidence).to_have_count(2)
    for number in (1, 2):
        image = page.locator(f"#painting-{number}-evidence img")
        expect(image).to_be_visible()
        served = np.asarray(Image.open(io.BytesIO(httpx.get(image.evaluate("image => image.src"), timeout=30).content))
                            .convert("RGB")).astype(int)
        line = (served == colour(number)).all(axis=2)
        gap = ((served == 255).all(axis=2) | line).all(axis=0)  # the columns between photo and gallery image: white
        assert gap.sum() >= 10 and line[:, gap].sum() > 20, "matching points joined by lines across the gap"
    annotated = _shown(page, "#paintings-found img")
    masks = [_coloured(annotated, number) for number in (1, 2)]
    assert all(mask.sum() > 200 for mask in masks), "each painting outlined in its own colour"
    centres = [np.nonzero(mask)[1].mean() for mask in masks]
    assert abs(centres[0] - centres[1]) > annotated.shape[1] / 4, "two outlines side by side, not one twice"
    _keep_as_readme_screenshot(page.screenshot(full_page=True))


def test_the_api_has_one_identify_endpoint_that_names_the_paintings(ui_url: str, service_url: str, wall: Path) -> None:
    client = Client(ui_url, verbose=False, download_files=str(wall.parent / "downloads"))
    api = client.view_api(return_format="dict", print_info=False)
    assert list(api["named_endpoints"]) == ["/identify"] and not api["unnamed_endpoints"], api
    endpoint = api["named_endpoints"]["/identify"]
    parameters = [p["label"] for p in endpoint["parameters"]]
    assert len(parameters) == 2 and parameters[0].startswith("Your photo") and parameters[1] == "Matches to show", parameters
    labels = [r["label"] for r in endpoint["returns"]]
    assert labels[:3] == ["Paintings found, numbered", "Summary", "Painting 1"] and "Other matches" in labels, labels
    outputs = client.predict(handle_file(wall), 3, api_name="/identify")
    assert len(outputs) == len(labels)
    texts = " ".join(o for o in outputs if isinstance(o, str))
    for artwork_id in WALL:
        assert _title(service_url, artwork_id) in texts, texts
    assert Path(outputs[0]).is_file(), "the annotated photo"
    assert "2 paintings found" in outputs[1]


def test_a_work_outside_the_gallery_is_announced_as_such(browser, ui_url: str, tmp_path: Path) -> None:
    photo = tmp_path / "unknown.jpg"
    photo.write_bytes(abstract_painting(seed=5))
    page = _upload(browser, ui_url, photo)
    card = page.locator("#painting-1-card")
    expect(card).to_contain_text(f"1. {NOT_IN_GALLERY}", timeout=60_000)
    expect(card).to_contain_text("Closest work")
    expect(_painting_cards(page)).to_have_count(1)
    page.screenshot(path=str(tmp_path / "ui-unknown.png"), full_page=True)


def _files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def _assert_no_internals(text: str, temp_dir: Path) -> None:
    for internal in ("/tmp", str(temp_dir), "gradio/", "Traceback", "UnidentifiedImageError", "cannot identify"):
        assert internal not in text, f"the page shows {internal!r}: {text}"


@pytest.mark.parametrize("name, content", [("notes.png", b"a text file, renamed\n" * 20),
                                           ("noise.jpg", np.random.default_rng(1).bytes(5000))])
def test_a_file_that_is_no_image_gets_a_plain_message(browser, ui_url: str, ui_temp_dir: Path, tmp_path: Path,
                                                      name: str, content: bytes) -> None:
    upload = tmp_path / name
    upload.write_bytes(content)
    page = _upload(browser, ui_url, upload)
    expect(page.locator("body")).to_contain_text(NOT_AN_IMAGE, timeout=30_000)
    _assert_no_internals(page.locator("body").inner_text(), ui_temp_dir)
    assert not [path for path in _files(ui_temp_dir) if path.name == name], "nothing to retry with: it is deleted"


def test_a_photo_over_the_limit_is_refused_before_it_is_stored(browser, small_limit_ui: tuple[str, Path],
                                                               tmp_path: Path) -> None:
    url, temp_dir = small_limit_ui
    photo = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (900, 900, 3), dtype=np.uint8)).save(photo)
    assert photo.stat().st_size > SMALL_LIMIT
    page = _upload(browser, url, photo)
    expect(page.locator("body")).to_contain_text("Your photo (up to 1 MB)")
    expect(page.locator("body")).to_contain_text("exceed the maximum allowed size of 1.0 Mb", timeout=30_000)
    expect(_painting_cards(page)).to_have_count(0)
    expect(page.locator("#paintings-found img")).to_have_count(0)
    # a client other than the page's own script is refused by the server itself
    response = httpx.post(f"{url}/gradio_api/upload", files={"files": ("big.png", photo.read_bytes())})
    assert response.status_code == 413, response.text
    assert not _files(temp_dir), "an oversized upload leaves nothing behind"


def test_the_photo_leaves_the_server_once_identified(browser, ui_url: str, ui_temp_dir: Path,
                                                     met_images: list[Path], tmp_path: Path) -> None:
    photo = tmp_path / "visitor-photo.jpg"
    photo.write_bytes(distorted_copy(met_images[0], np.random.default_rng(3)))
    page = _upload(browser, ui_url, photo)
    expect(page.locator("#status")).to_contain_text("matches from model", timeout=60_000)
    assert not [path for path in _files(ui_temp_dir) if path.read_bytes() == photo.read_bytes()]
    preview = page.locator("#photo img").first
    assert preview.evaluate("image => image.naturalWidth") > 0, "the visitor still sees the photo sent"
    page.locator("#identify").click()  # once more: it is gone, and the page says so plainly
    expect(page.locator("body")).to_contain_text("upload it again", timeout=30_000)


def test_gradio_removes_the_images_it_served(browser, service_url: str, met_images: list[Path],
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """delete_cache at work, with a 1 s age instead of CACHE_CLEANUP's 10 min."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    ui = build_ui(WhatartClient(service_url), 5, 20, SMALL_LIMIT, cache_cleanup=(1, 1))
    ui.queue()
    port = free_port()
    ui.launch(server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        photo = tmp_path / "photo.jpg"
        photo.write_bytes(distorted_copy(met_images[1], np.random.default_rng(4)))
        page = _upload(browser, f"http://127.0.0.1:{port}", photo)
        expect(page.locator("#paintings-found img")).to_be_visible(timeout=60_000)
        deadline = time.monotonic() + 15
        while _files(tmp_path / "gradio") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _files(tmp_path / "gradio")
    finally:
        ui.close()
