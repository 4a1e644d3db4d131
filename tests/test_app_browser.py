"""A real browser (Debian's chromium via Playwright) answers study items as a person would."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
from pathlib import Path

import pytest

from apps.judgment_app import build_app
from gazemix.study.build import build_study

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
# the README's screenshot is refreshed only on request, so a test run leaves the checkout clean
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "app_screenshot.png"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chromium_browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def _serve(tmp_path, mode, size, data="samples"):
    db = tmp_path / f"{mode}.sqlite"
    build_study(db, data=data, mixers=["mixup", "cutmix"], n=4, size=size, pool=8, checks=0, seed=2, mode=mode,
                repeats=0)
    demo = build_app(db)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=_port(), quiet=True)
    return db, demo, url


def test_browser_answers_infer_items(chromium_browser, tmp_path):
    db, demo, url = _serve(tmp_path, "infer", 128, data="demo")
    shot = DOCS_SCREENSHOT if os.environ.get("GAZEMIX_UPDATE_SCREENSHOT") == "1" else tmp_path / "app.png"
    page = chromium_browser.new_page(viewport={"width": 1100, "height": 720})
    try:
        page.goto(url, wait_until="domcontentloaded", timeout=20_000)
        page.locator("#start").wait_for(timeout=20_000)
        page.locator("#annotator textarea, #annotator input").first.fill("browser_1")
        page.locator("#start").click()
        page.locator("#progress-text").filter(has_text="0 / 4").wait_for(timeout=10_000)
        for k, value in enumerate(("30", "85")):
            page.locator("#mix input[type=range]").fill(value)
            page.locator("#conf input[type=range]").fill("70")
            if k == 1:
                shot.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(shot))
            page.locator("#submit").click()
            page.locator("#progress-text").filter(has_text=f"{k + 1} / 4").wait_for(timeout=10_000)
    finally:
        page.close()
        demo.close()
    con = sqlite3.connect(db)
    rows = con.execute("SELECT slider, confidence, slider_touched, left_is_image1, weight1, rt_ms FROM responses "
                       "ORDER BY position").fetchall()
    assert [r[0] for r in rows] == [30, 85] and all(r[1] == pytest.approx(0.7) for r in rows)
    for slider, _, touched, left1, w1, rt in rows:
        assert touched == 1 and rt > 0
        assert w1 == pytest.approx(1 - slider / 100 if left1 else slider / 100)
    assert shot.stat().st_size > 10_000


def test_browser_clicks_are_stored_in_image_pixels(chromium_browser, tmp_path):
    db, demo, url = _serve(tmp_path, "click", 64)
    page = chromium_browser.new_page(viewport={"width": 1100, "height": 720})
    try:
        page.goto(url, wait_until="domcontentloaded", timeout=20_000)
        page.locator("#start").wait_for(timeout=20_000)
        page.locator("#annotator textarea, #annotator input").first.fill("clicker")
        page.locator("#start").click()
        img = page.locator("#stimulus img").first
        img.wait_for(timeout=10_000)
        box = img.bounding_box()
        # the 64 x 64 stimulus is shown 4x (256 px, natural size, centred in the element): clicking 64 display
        # px right of and above its centre hits image pixel (48, 16)
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.click(cx + 64, cy - 64)
        page.locator("#clicks").filter(has_text="1 click").wait_for(timeout=10_000)
        page.locator("#submit").click()
        page.locator("#progress-text").filter(has_text="1 / 4").wait_for(timeout=10_000)
    finally:
        page.close()
        demo.close()
    (clicks,), = sqlite3.connect(db).execute("SELECT clicks FROM responses").fetchall()
    (x, y), = json.loads(clicks)
    assert abs(x - 48) <= 1 and abs(y - 16) <= 1  # stored in the 64 x 64 image's own pixel frame
