"""The `vtr serve` page in a real browser: headless Chromium (Debian's package) driven by Playwright.

Loads the page over a small library, types a query, finds the library's best clip among the hits with its
thumbnail, clicks it and checks that the page's video plays from the segment's start. Saves screenshots of the
results page (desktop and phone width) into the test's output folder, and into $VTR_SCREENSHOT_DIR when set.
Run with `pytest -m browser` (.ci/run does, after installing chromium and the `browser` extra).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("VTR_REQUIRE_BROWSER"):  # CI: a missing browser is a failure, not a skip
        raise RuntimeError("no chromium on PATH: apt-get install chromium")
    pytest.skip("no chromium on PATH (apt-get install chromium)", allow_module_level=True)

from serve_helpers import small_library  # noqa: E402

from vtr.library import Library  # noqa: E402
from vtr.serve.server import build_app  # noqa: E402

QUERY = "a red circle moves left"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home, paths, _ = small_library(tmp_path_factory.mktemp("browser"), num_videos=16, segment=1.0)  # 1 s windows
    port = _free_port()
    config = uvicorn.Config(build_app(home, device="cpu"), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", home
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()


def _shown(seconds: float) -> str:
    """The page's m:ss.s (JavaScript's toFixed rounds the exact binary value half up)."""
    tenths = int(Decimal(seconds).quantize(Decimal("0.1"), ROUND_HALF_UP) * 10)
    return f"{tenths // 600}:{(tenths % 600) // 10:02d}.{tenths % 10}"


def _save(page, tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    page.screenshot(path=str(out), full_page=False)
    if os.environ.get("VTR_SCREENSHOT_DIR"):
        dest = Path(os.environ["VTR_SCREENSHOT_DIR"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(out, dest / name)
    print(f"screenshot: {out}")
    return out


def test_search_click_and_play_from_the_segment_start(server, browser, tmp_path):
    url, home = server
    with Library(home=home, device="cpu") as lib:
        expected = lib.search(QUERY, k=20)[0]
        segments = lib.status()["segments"]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    page.wait_for_selector("#status:not(:has-text('loading'))")
    assert f"16 videos, {segments} segments" in page.inner_text("#status")
    page.fill("#q", QUERY)
    page.keyboard.press("Enter")
    page.wait_for_selector("#results .hit")
    cards = page.locator("#results .hit")
    assert cards.count() == len(expected) <= min(20, segments)  # neighbouring windows collapse into one hit
    # the hits in the library's order: file name, start-end and score of each
    for i, hit in enumerate(expected):
        text = cards.nth(i).inner_text()
        assert Path(hit.path).name in text and f"{hit.score:.3f}" in text, (i, text)
        assert f"{_shown(hit.start_s)}–{_shown(hit.end_s)}" in text, (i, text)
    page.wait_for_function("() => [...document.querySelectorAll('#results img')].every(i => i.complete "
                           "&& i.naturalWidth > 0)")
    first_img = cards.nth(0).locator("img").get_attribute("src")
    assert first_img.endswith("/thumbnail.jpg")
    _save(page, tmp_path, "serve-results.png")

    # play the best hit that does not start at 0 s: the video must start there, not at the beginning
    i, target = next((i, h) for i, h in enumerate(expected) if h.start_s >= 0.9)
    cards.nth(i).locator(".play").click()
    page.wait_for_function("() => { const v = document.querySelector('#video'); "
                           "return v.readyState >= 2 && !v.paused && v.currentTime > 0; }", timeout=20000)
    t = page.evaluate("document.querySelector('#video').currentTime")
    assert abs(t - target.start_s) < 0.5, (t, target.start_s)
    assert page.locator("#player").is_visible() and page.locator(".hit.playing").count() == 1
    assert Path(target.path).name in page.inner_text("#now-playing")
    duration = page.evaluate("document.querySelector('#video').duration")
    left, width = page.evaluate("[document.querySelector('#span').style.left, document.querySelector('#span')"
                                ".style.width]")
    assert float(left.rstrip("%")) == pytest.approx(100 * target.start_s / duration, abs=0.5)  # the segment is
    assert float(width.rstrip("%")) == pytest.approx(100 * (target.end_s - target.start_s) / duration, abs=0.5)
    _save(page, tmp_path, "serve-playing.png")
    if target.end_s < duration - 0.3:  # the page pauses once at the segment's end
        page.wait_for_function("() => document.querySelector('#video').paused", timeout=20000)
        t = page.evaluate("document.querySelector('#video').currentTime")
        assert target.end_s - 0.05 <= t < target.end_s + 0.6, (t, target.end_s)

    page.keyboard.press("Escape")
    assert not page.locator("#player").is_visible()
    page.keyboard.press("m")  # more like this on the focused (played) hit
    page.wait_for_selector("#message:has-text('segments like')")
    assert cards.count() > 0 and errors == []
    page.close()


def test_phone_width_and_empty_library(server, browser, tmp_path):
    url, _ = server
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page.goto(url + "/?q=" + QUERY.replace(" ", "+"))
    page.wait_for_selector("#results .hit img")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing wider than the phone
    box = page.locator("#results .hit").nth(0).bounding_box()
    assert 120 < box["width"] < 200  # two columns
    _save(page, tmp_path, "serve-phone.png")
    page.close()

    empty_home = tmp_path / "empty"
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(build_app(empty_home, device="cpu"), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.05)
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#empty:not([hidden])")
        assert "vtr index" in page.inner_text("#empty-hint")
        page.close()
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
