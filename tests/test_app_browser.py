"""A real browser (Debian's chromium via Playwright) goes through studies as a crowd worker would: every
rejection path of every mode is shown next to its control and then corrected and submitted; a second tab, a
reload mid-study and a phone-sized screen do not lose the person.

``GAZEMIX_UPDATE_SCREENSHOTS=1`` writes the pages' screenshots to ``docs/app/`` and the README's
``docs/app_screenshot.png`` (otherwise to a temporary folder, so a test run leaves the checkout clean)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from apps.judgment_app import build_app, serve
from gazemix.study.build import build_study
from gazemix.study.protocol import QUESTIONS
from tests.app_helpers import free_port, rows

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="Debian's chromium is not installed (apt-get install chromium)")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "app"
UPDATE = os.environ.get("GAZEMIX_UPDATE_SCREENSHOTS") == "1"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
WAIT = 15_000


@pytest.fixture(scope="module")
def chromium_browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path):
    """``shot(page, name)``: a small palette PNG of the page, in docs/app/ when updating screenshots."""
    folder = DOCS if UPDATE else tmp_path / "shots"
    folder.mkdir(parents=True, exist_ok=True)

    def shot(page, name: str, full_page: bool = False) -> Path:
        path = folder / f"{name}.png"
        page.wait_for_timeout(600)  # let Gradio's pending fade of the outputs end
        page.screenshot(path=str(path), full_page=full_page)
        Image.open(path).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path,
                                                                                                 optimize=True)
        assert 5_000 < path.stat().st_size < 200_000, (name, path.stat().st_size)
        return path
    return shot


@pytest.fixture
def study(tmp_path):
    """``study(mode, **options)`` → ``(db, url)`` of a small demo study served on loopback."""
    demos = []

    def make(mode: str, **kw):
        db = tmp_path / f"{mode}.sqlite"
        opts = dict(data="demo", mixers=["mixup", "cutmix"], n=3, size=96, pool=16, checks=1, practice=1, repeats=0,
                    seed=3, mode=mode, completion_code="GZM-7Q4K", title="Blended pictures (demo study)")
        build_study(db, **{**opts, **kw})
        demo = build_app(db)
        demos.append(demo)
        return db, serve(demo, port=free_port(), block=False)
    yield make
    for d in demos:
        d.close()


def _open(browser, url: str, query: str = "", width: int = 1000, height: int = 760):
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url + query, wait_until="domcontentloaded", timeout=WAIT)
    page.locator("#title").wait_for(timeout=WAIT)
    return page


def _see(page, selector: str, text: str) -> None:
    page.locator(selector).filter(has_text=text).first.wait_for(timeout=WAIT)


def _consent(page, shot=None) -> None:
    page.locator("#agree").wait_for(timeout=WAIT)
    if shot:
        shot(page, "consent")
    page.locator("#consent-continue").click()  # not ticked: told so under the button, the page stays
    _see(page, "#consent-msg", "tick the box")
    page.locator("#agree input").check()
    page.locator("#consent-continue").click()
    page.locator("#instructions-continue").wait_for(timeout=WAIT)


def _quiz(page, mode: str, wrong_first: bool = False, shot=None) -> None:
    page.locator("#quiz-submit").wait_for(timeout=WAIT)
    qs = QUESTIONS[mode]
    if wrong_first:  # a wrong answer sends the person back to the instructions, with the reason
        for k, q in enumerate(qs):
            page.locator(f"#q{k}").get_by_label(next(o for o in q["options"] if o != q["answer"]), exact=True).check()
        page.locator("#quiz-submit").click()
        _see(page, "#instructions-msg", "answers were not right")
        if shot:
            shot(page, "comprehension_failed")
        page.locator("#instructions-continue").click()  # practice is not repeated
        page.locator("#quiz-submit").wait_for(timeout=WAIT)
    for k, q in enumerate(qs):
        page.locator(f"#q{k}").get_by_label(q["answer"], exact=True).check()
    if shot:
        shot(page, "comprehension")
    page.locator("#quiz-submit").click()
    page.locator("#progress-text").wait_for(timeout=WAIT)


def _set_slider(page, elem: str, value: int) -> None:
    page.locator(f"#{elem} input[type=range]").fill(str(value))


def _submit_and_see_progress(page, done: int, total: int) -> None:
    page.locator("#submit").click()
    if done == total:
        _see(page, "#end-text", "Thank you")
    else:
        _see(page, "#progress-text", f"{done} / {total}")


# ------------------------------------------------------------------------------------------ infer
def test_infer_flow_with_every_rejection_then_completion_code(chromium_browser, study, shots):
    db, url = study("infer", redirect_url="https://app.prolific.com/submissions/complete?cc=GZM-7Q4K")
    page = _open(chromium_browser, url, "?PROLIFIC_PID=P0017&STUDY_ID=S-demo&SESSION_ID=sess42")
    try:
        _consent(page, shots)
        page.locator("#example img").wait_for(timeout=WAIT)  # the worked example's picture
        shots(page, "instructions", full_page=True)
        page.locator("#instructions-continue").click()
        _see(page, "#banner", "Practice 1 of 1")
        page.locator("#submit").click()  # the practice item is checked like a real one
        _see(page, "#mix-msg", "press 50/50")
        _set_slider(page, "mix", 100)
        _set_slider(page, "mix", 0)
        page.locator("#submit").click()
        page.locator("#feedback").filter(has_text="picture shows only").wait_for(timeout=WAIT)
        shots(page, "practice_feedback")
        page.locator("#next").click()
        _quiz(page, "infer", wrong_first=True, shot=shots)
        _see(page, "#progress-text", "0 / 4")
        page.locator("#stimulus img").wait_for(timeout=WAIT)
        page.locator("#submit").click()  # untouched slider: refused next to the slider, nothing else changes
        _see(page, "#mix-msg", "move the mixing slider to your answer, or press 50/50")
        shots(page, "rejected_inline")
        assert page.locator("#submit").is_enabled() and not page.locator(".error").count()
        _set_slider(page, "mix", 30)
        _set_slider(page, "conf", 80)
        infer_shot = shots(page, "infer")
        if UPDATE:  # the README's picture of the app
            shutil.copyfile(infer_shot, DOCS.parent / "app_screenshot.png")
        _submit_and_see_progress(page, 1, 4)
        page.locator("#even").click()  # a deliberate 50/50
        _see(page, "#mix-msg", "50/50 set")
        _submit_and_see_progress(page, 2, 4)
        _set_slider(page, "mix", 90)
        _submit_and_see_progress(page, 3, 4)
        _set_slider(page, "mix", 5)
        _submit_and_see_progress(page, 4, 4)
        _see(page, "#end-text", "GZM-7Q4K")
        assert page.locator("#redirect").is_visible()
        shots(page, "end")
    finally:
        page.close()
    got = rows(db, "SELECT r.slider, r.slider_touched, r.confidence, r.confidence_touched, r.flags FROM responses r "
                   "ORDER BY r.position")
    assert [g[0] for g in got] == [30, 50, 90, 5] and all(g[1] == 1 for g in got)
    assert got[0][2:] == (0.8, 1, "") and got[1][3:] == (0, "confidence_untouched")
    (params, consented, qualified), = rows(db, "SELECT url_params, consented_at, qualified_at FROM annotators")
    assert json.loads(params) == {"PROLIFIC_PID": "P0017", "STUDY_ID": "S-demo", "SESSION_ID": "sess42"}
    assert consented and qualified
    kinds = [k for k, in rows(db, "SELECT kind FROM events ORDER BY id")]
    assert kinds == ["visit", "consent", "practice", "comprehension", "comprehension"]


def test_typed_id_rejections_then_start(chromium_browser, study, shots):
    _, url = study("infer", practice=0)
    page = _open(chromium_browser, url)
    try:
        page.locator("#start").click()  # empty id: told next to the box
        _see(page, "#annotator-msg", "enter your participant id")
        page.locator("#annotator textarea, #annotator input").first.fill("x'); DROP TABLE responses; --")
        page.locator("#start").click()
        _see(page, "#annotator-msg", "may only contain")
        shots(page, "login_rejected")
        page.locator("#annotator textarea, #annotator input").first.fill("typed_7")
        page.locator("#start").click()
        _consent(page)
    finally:
        page.close()


# ------------------------------------------------------------------------------------------ soft labels
def test_softlabel_every_rejection_then_stored(chromium_browser, study, shots):
    db, url = study("softlabel", practice=0)
    page = _open(chromium_browser, url, "?id=soft_9")
    try:
        _consent(page)
        page.locator("#instructions-continue").click()
        _quiz(page, "softlabel")
        page.locator("#choice1 label").first.wait_for(timeout=WAIT)
        names = page.locator("#choice1 label").all_inner_texts()
        assert len(names) == 4  # the two true classes hidden among two distractors
        page.locator("#submit").click()  # no class chosen
        _see(page, "#choice1-msg", "choose the most likely class")
        page.locator("#choice1").get_by_label(names[0], exact=True).check()
        _set_slider(page, "prob1", 30)
        page.locator("#choice2").get_by_label(names[1], exact=True).check()
        _set_slider(page, "prob2", 40)
        page.locator("#submit").click()  # second more likely than the first
        _see(page, "#choice2-msg", "must not exceed")
        _set_slider(page, "prob1", 70)
        page.locator("#submit").click()  # together over 100 %
        _see(page, "#choice2-msg", "add up to 110 %")
        shots(page, "softlabel_rejected")
        page.locator("#choice2").get_by_label(names[0], exact=True).check()
        _set_slider(page, "prob2", 20)
        page.locator("#submit").click()  # the same class twice
        _see(page, "#choice2-msg", "must differ")
        page.locator("#choice2").get_by_label(names[1], exact=True).check()
        shots(page, "softlabel")
        _submit_and_see_progress(page, 1, 4)
    finally:
        page.close()
    assert rows(db, "SELECT choice1, prob1, choice2, prob2 FROM responses") == [(names[0], 0.7, names[1], 0.2)]


# ------------------------------------------------------------------------------------------ clicks
def _picture_rect(page) -> dict:
    """Where the picture is drawn inside its <img> (drawn at natural size, centred, never enlarged)."""
    img = page.locator("#stimulus img").first
    box = img.bounding_box()
    nw, nh = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    s = min(1.0, box["width"] / nw, box["height"] / nh)
    return {"x": box["x"] + (box["width"] - nw * s) / 2, "y": box["y"] + (box["height"] - nh * s) / 2,
            "w": nw * s, "h": nh * s, "s": s}


def _click(page, x: float, y: float, expect: str, where: str = "#clicks", redraws: bool = True) -> None:
    """Click, wait for ``expect`` and (``redraws``) for the new picture with its marker to have loaded, so the
    next click lands on a settled page (Gradio ignores a click while the last one is being answered)."""
    img = page.locator("#stimulus img").first
    before = img.get_attribute("src")
    page.mouse.click(x, y)
    page.locator(where).filter(has_text=expect).first.wait_for(timeout=WAIT)
    if redraws:
        page.wait_for_function("src => { const i = document.querySelector('#stimulus img');"
                               " return i && i.src !== src && i.complete && i.naturalWidth > 0; }", arg=before,
                               timeout=WAIT)
    page.wait_for_timeout(50)


def test_click_every_rejection_marker_and_limit(chromium_browser, study, shots):
    db, url = study("click", practice=1)
    page = _open(chromium_browser, url, "?PROLIFIC_PID=clicker")
    try:
        _consent(page)
        page.locator("#instructions-continue").click()
        _see(page, "#banner", "Practice 1 of 1")
        page.locator("#submit").click()
        _see(page, "#clicks-msg", "click on the picture (at least once)")
        r = _picture_rect(page)
        _click(page, r["x"] + 3, r["y"] + 3, "1 click")
        page.locator("#submit").click()
        page.locator("#feedback").filter(has_text="box").wait_for(timeout=WAIT)  # the object's box, in green
        page.locator("#next").click()
        _quiz(page, "click")
        page.locator("#stimulus img").wait_for(timeout=WAIT)
        page.locator("#submit").click()  # no click yet
        _see(page, "#clicks-msg", "click on the picture (at least once)")
        r = _picture_rect(page)
        before = page.locator("#stimulus img").get_attribute("src")
        page.mouse.click(r["x"] - 20, r["y"] + r["h"] / 2)  # beside the picture: nothing is stored or moved onto it
        page.wait_for_timeout(700)
        assert "No clicks yet" in page.locator("#clicks").inner_text()
        k = 256 // 96  # the 96 px picture is shown 2x
        cx, cy = r["x"] + (70.5 * k) * r["s"], r["y"] + (20.5 * k) * r["s"]  # the centre of image pixel (70, 20)
        _click(page, cx, cy, "1 click(s): (70, 20)")
        assert page.locator("#stimulus img").get_attribute("src") != before  # the marker is drawn on the picture
        shots(page, "click")
        for n in range(2, 21):
            _click(page, r["x"] + 10 + 8 * n, r["y"] + r["h"] - 12, f"{n} click(s)")
        # the 21st click is refused as it is made
        _click(page, r["x"] + 5, r["y"] + 5, "at most 20 clicks", "#clicks-msg", redraws=False)
        page.locator("#clear").click()
        _see(page, "#clicks", "No clicks yet")
        _click(page, cx, cy, "1 click(s)")
        _submit_and_see_progress(page, 1, 4)
    finally:
        page.close()
    (clicks,), = rows(db, "SELECT clicks FROM responses")
    (x, y), = json.loads(clicks)
    assert abs(x - 70) <= 0.5 and abs(y - 20) <= 0.5  # stored in the 96 x 96 picture's own pixels


# ------------------------------------------------------------------------------------------ tabs
def test_second_tab_and_reload_mid_study(chromium_browser, study):
    db, url = study("infer", practice=0)
    query = "?PROLIFIC_PID=tabby"
    a = _open(chromium_browser, url, query)
    b = None
    try:
        _consent(a)
        a.locator("#instructions-continue").click()
        _quiz(a, "infer")
        _set_slider(a, "mix", 20)
        _submit_and_see_progress(a, 1, 4)
        b = _open(chromium_browser, url, query)  # a second tab goes straight to the current item
        _see(b, "#progress-text", "1 / 4")
        _set_slider(b, "mix", 70)
        _submit_and_see_progress(b, 2, 4)
        _set_slider(a, "mix", 40)
        a.locator("#submit").click()  # tab A still shows item 2: told, and moved on, not stuck
        _see(a, "#status", "already been answered in another tab")
        _see(a, "#progress-text", "2 / 4")
        _set_slider(a, "mix", 40)
        _submit_and_see_progress(a, 3, 4)
        a.reload(wait_until="domcontentloaded")  # a reload resumes where the database says, without consent again
        _see(a, "#progress-text", "3 / 4")
        assert not a.locator("#agree").is_visible()
        _set_slider(a, "mix", 60)
        _submit_and_see_progress(a, 4, 4)
    finally:
        a.close()
        if b is not None:
            b.close()
    got = rows(db, "SELECT position, slider FROM responses ORDER BY position")
    assert got == [(0, 20), (1, 70), (2, 40), (3, 60)]  # one answer per item, the stale one not stored


# ------------------------------------------------------------------------------------------ phone
def test_phone_width_submit_reachable(chromium_browser, study, shots):
    db, url = study("infer", practice=0)
    page = _open(chromium_browser, url, "?id=phone_1", width=390, height=844)
    try:
        _consent(page)
        page.locator("#instructions-continue").click()
        _quiz(page, "infer")
        assert page.evaluate("document.documentElement.scrollWidth") <= 392  # no sideways scrolling
        img = page.locator("#stimulus img").first.bounding_box()
        assert img["x"] >= 0 and img["x"] + img["width"] <= 390
        _set_slider(page, "mix", 35)
        page.locator("#submit").scroll_into_view_if_needed()
        box = page.locator("#submit").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["height"] >= 30
        shots(page, "phone")
        _submit_and_see_progress(page, 1, 4)
    finally:
        page.close()
    assert rows(db, "SELECT slider FROM responses") == [(35,)]


def test_no_api_link_and_title_heading(chromium_browser, study):
    _, url = study("softlabel", practice=0)
    page = _open(chromium_browser, url)
    try:
        assert page.locator("#title h1").inner_text() == "Blended pictures (demo study)"
        assert page.title() == "Blended pictures (demo study)"
        assert page.get_by_text("Use via API").count() == 0 and page.locator("footer").count() == 0
        assert not page.locator("#mix").count()  # soft-label mode sends no mixing slider at all
    finally:
        page.close()
