"""The judgment app driven through gradio_client on loopback: the crowd-sourcing flow and its gates, every
rejection answered inline (never an error), hostile input, blinding, session takeover, a deleted stimulus,
load, and a server killed mid-run and restarted (a subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from gradio_client.exceptions import AppError

from apps.judgment_app import build_app, parse_auth, parse_click, serve
from gazemix.study import StudyInputError
from gazemix.study.build import build_study
from tests.app_helpers import Session, free_port, rows, text, wait_http

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("app") / "study.sqlite"
    build_study(db, data="samples", mixers=["mixup", "cutmix"], n=16, size=32, pool=12, checks=2, practice=0, seed=0,
                repeats=2, items_per_annotator=16)
    return db


@pytest.fixture(scope="module")
def server(study_db):
    demo = build_app(study_db)
    url = serve(demo, port=free_port(), block=False)
    yield url, demo.output_ids
    demo.close()


def test_flow_gates_inline_rejections_and_resume(server, study_db):
    url, ids = server
    s = Session(url, ids)
    out = s.call("/submit", 30, 60)  # before Start: told inline, nothing stored
    assert "press Start first" in text(out["annotator-msg"])
    out = s.call("/start", "")
    assert "enter your participant id" in text(out["annotator-msg"])
    s.call("/start", "flow_1")
    assert "tick the box" in text(s.call("/consent", False)["consent-msg"])
    s.call("/consent", True)
    s.call("/instructions_done")
    out = s.call("/quiz", "In the middle", "Move the slider to the right end", "How long I looked")
    assert "3 of 3 answers were not right" in text(out["instructions-msg"])  # back to the instructions
    s.call("/instructions_done")
    out = s.call("/quiz", "At the left end", "Press 50/50 (or move the slider to 50), then Submit",
                 "How sure I am of my answer")
    assert "0 / 20" in text(out["progress"])  # 16 items + 2 checks + 2 repeats
    out = s.call("/submit", 50, 60)  # untouched mixing slider: refused next to the slider, page stays usable
    assert "press 50/50" in text(out["mix-msg"]) and rows(study_db, "SELECT COUNT(*) FROM responses")[0][0] == 0
    s.call("/even")  # a deliberate 50/50
    out = s.call("/submit", 50, 60)
    assert "1 / 20" in text(out["progress"]) and text(out["status"]) == "Saved."
    out = Session(url, ids).call("/start", "flow_1")  # a new tab resumes at the items: no consent again
    assert "1 / 20" in text(out["progress"])
    (touched, start, rt), = rows(study_db, "SELECT r.slider_touched, r.slider_start, r.rt_ms FROM responses r "
                                 "JOIN annotators a ON a.id = r.annotator_id WHERE a.external_id = 'flow_1'")
    assert touched == 1 and start == 50 and rt > 0
    (consented, qualified), = rows(study_db, "SELECT consented_at, qualified_at FROM annotators WHERE "
                                   "external_id = 'flow_1'")
    assert consented and qualified
    kinds = [k for k, in rows(study_db, "SELECT e.kind FROM events e JOIN annotators a ON a.id = e.annotator_id "
                                        "WHERE a.external_id = 'flow_1' ORDER BY e.id")]
    assert kinds == ["visit", "consent", "comprehension", "comprehension", "visit"]


@pytest.mark.parametrize("slider, message", [
    (True, "must be a number"),             # JSON true is not 1.0
    (50.0000001, "whole number"),           # not a way around the untouched rule
    (30.5, "whole number"),                 # between the slider's steps
])
def test_slider_edge_cases_are_refused(server, study_db, slider, message):
    url, ids = server
    s = Session(url, ids)
    s.enrol(f"edge_{str(slider).replace('.', '_')}")
    before = rows(study_db, "SELECT COUNT(*) FROM responses")[0][0]
    out = s.call("/submit", slider, 60)
    assert message in text(out["mix-msg"])
    assert rows(study_db, "SELECT COUNT(*) FROM responses")[0][0] == before
    assert "Saved." == text(s.call("/submit", 31, 60)["status"])  # the corrected answer goes through


def test_out_of_range_is_refused_by_the_component(server, study_db):
    url, ids = server
    s = Session(url, ids)
    s.enrol("range_1")
    for bad in (300, -5, "1 OR 1=1"):
        with pytest.raises(AppError):
            s.call("/submit", bad, 60)
    assert rows(study_db, "SELECT COUNT(*) FROM responses r JOIN annotators a ON a.id = r.annotator_id "
                          "WHERE a.external_id = 'range_1'")[0][0] == 0


@pytest.mark.parametrize("ident, match", [
    ("x'); DROP TABLE responses; --", "may only contain"),
    ("a" * 100_000, "at most 64"),
    ("", "enter your participant id"),
])
def test_hostile_annotator_ids(server, study_db, ident, match):
    url, ids = server
    out = Session(url, ids).call("/start", ident)
    assert match in text(out["annotator-msg"])
    assert rows(study_db, "SELECT COUNT(*) FROM annotators WHERE length(external_id) > 64")[0][0] == 0
    assert rows(study_db, "SELECT name FROM sqlite_master WHERE name = 'responses'")


@pytest.mark.parametrize("mode", ["infer", "softlabel"])
def test_blinding_nothing_but_the_picture_leaves_the_server(tmp_path, mode):
    """No key, mixer, path, gaze map, label weight or completion code reaches the client; the study's files are
    not served; soft-label mode sends no hidden slider naming the two true classes."""
    db = tmp_path / "blind.sqlite"
    build_study(db, data="demo", mixers=["mixup", "cutmix"], n=4, size=32, pool=12, checks=1, practice=0,
                repeats=0, mode=mode)
    demo = build_app(db)
    url = serve(demo, port=free_port(), block=False)
    try:
        s = Session(url, demo.output_ids)
        out = s.enrol("blind_1", mode)
        items = rows(db, "SELECT key, image_path, gaze_path, mixer, lam FROM items")
        code = json.loads(rows(db, "SELECT config FROM studies")[0][0])["completion_code"]
        secret = rows(db, "SELECT secret FROM studies")[0][0]
        config = httpx.get(url + "config").text
        seen = config + json.dumps(out, default=str)
        for key, image_path, gaze_path, mixer, lam in items:
            assert key not in seen and Path(image_path).stem not in seen
            assert gaze_path is None or Path(gaze_path).stem not in seen
        for word in (code, secret, "_media", str(tmp_path), ".npy", "cutmix", "mixup", "gaze"):
            assert word not in seen, word
        if mode == "softlabel":
            assert '"elem_id":"mix"' not in config.replace(" ", "") and "mix" not in out
        img = out["stimulus"]
        assert img["url"].endswith("/image.png")  # a content-addressed copy in Gradio's cache, not a study path
        assert httpx.get(img["url"]).status_code == 200
        for rel in (items[0][1], items[0][2]):
            for path in (str(db.parent / rel), rel, f"../{rel}"):
                r = httpx.get(f"{url}gradio_api/file={path}")
                assert r.status_code in (403, 404), (path, r.status_code)
    finally:
        demo.close()


def test_concurrent_annotators_and_double_tabs(server, study_db):
    """4 annotators, each in two tabs answering the same items concurrently: no loss, no duplicate."""
    url, ids = server
    n_ann, errors = 4, []

    def annotator(k: int) -> None:
        try:
            tabs = [Session(url, ids) for _ in range(2)]
            for tab in tabs:
                tab.enrol(f"load_{k}")
            done = False
            while not done:
                for tab in tabs:  # both tabs submit the item they show; one of them is stale or a duplicate
                    out = tab.call("/submit", 20 + k, 70)
                    done = done or "Thank you" in text(out["end-text"])
        except Exception as err:  # noqa: BLE001 - surfaced below
            errors.append(err)

    threads = [threading.Thread(target=annotator, args=(k,)) for k in range(n_ann)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not errors, errors[:1]
    counts = rows(study_db, "SELECT a.external_id, COUNT(*), COUNT(DISTINCT r.item_id || '-' || r.repeat) "
                  "FROM responses r JOIN annotators a ON a.id = r.annotator_id WHERE a.external_id LIKE 'load_%' "
                  "GROUP BY a.external_id")
    assert len(counts) == n_ann and all(n == 20 and d == 20 for _, n, d in counts)


def test_completion_code_only_at_the_end(tmp_path):
    db = tmp_path / "end.sqlite"
    build_study(db, data="samples", mixers=["mixup"], n=2, size=32, pool=8, checks=0, practice=0, repeats=0,
                completion_code="C0DE42", redirect_url="https://app.prolific.com/submissions/complete?cc=C0DE42")
    demo = build_app(db)
    url = serve(demo, port=free_port(), block=False)
    try:
        s = Session(url, demo.output_ids)
        assert "C0DE42" not in httpx.get(url + "config").text
        out = s.enrol("ender")
        assert "C0DE42" not in json.dumps(out, default=str)
        s.call("/submit", 10, 50)
        out = s.call("/submit", 90, 50)
        assert "<code id='code'>C0DE42</code>" in text(out["end-text"]) and "all 2 items" in text(out["end-text"])
    finally:
        demo.close()


def test_deleted_stimulus_is_skipped_without_showing_a_path(tmp_path, caplog):
    db = tmp_path / "del.sqlite"
    build_study(db, data="samples", mixers=["mixup"], n=3, size=32, pool=8, checks=0, practice=0, repeats=0)
    demo = build_app(db)
    url = serve(demo, port=free_port(), block=False)
    try:
        s = Session(url, demo.output_ids)
        s.enrol("del_1")
        order = rows(db, "SELECT i.image_path FROM assignments a JOIN items i ON i.id = a.item_id ORDER BY a.position")
        (db.parent / order[1][0]).unlink()  # the next picture vanishes while the study runs
        out = s.call("/submit", 20, 50)
        assert "could not be loaded and was skipped" in text(out["status"])
        assert "2 / 3" in text(out["progress"])  # the annotator goes on with item 3
        assert str(tmp_path) not in json.dumps(out, default=str) and "_media" not in json.dumps(out, default=str)
        out = s.call("/submit", 20, 50)
        assert "Thank you" in text(out["end-text"])
    finally:
        demo.close()
    assert rows(db, "SELECT flags FROM responses WHERE weight1 IS NULL") == [("stimulus_missing",)]


def test_softlabel_rejections_inline_then_stored(tmp_path):
    db = tmp_path / "soft.sqlite"
    build_study(db, data="samples", mixers=["mixup"], n=3, size=32, pool=8, checks=0, practice=0, seed=1,
                mode="softlabel", repeats=0, distractors=2)
    demo = build_app(db)
    url = serve(demo, port=free_port(), block=False)
    try:
        s = Session(url, demo.output_ids)
        out = s.enrol("soft_1", "softlabel")
        shown = [ch[0] for ch in out["choice1"]["choices"]]  # 2 true classes + 2 distractors, per-annotator order
        assert len(shown) == 4
        assert "choose the most likely class" in text(s.call("/submit", None, 60, "None", 0)["choice1-msg"])
        with pytest.raises(AppError):  # not among the choices: Gradio's Radio refuses it
            s.call("/submit", "not_a_class", 60, "None", 0)
        assert "must not exceed" in text(s.call("/submit", shown[0], 30, shown[1], 40)["choice2-msg"])
        assert "at most 100" in text(s.call("/submit", shown[0], 70, shown[1], 40)["choice2-msg"])
        assert "must differ" in text(s.call("/submit", shown[0], 70, shown[0], 20)["choice2-msg"])
        assert "whole number" in text(s.call("/submit", shown[0], 70.5, shown[1], 20)["choice1-msg"])
        assert text(s.call("/submit", shown[0], 70, shown[1], 20)["status"]) == "Saved."
    finally:
        demo.close()
    (c1, p1, c2, p2, w1, cls1, cls2), = rows(db, "SELECT r.choice1, r.prob1, r.choice2, r.prob2, r.weight1, i.class1, "
                                              "i.class2 FROM responses r JOIN items i ON i.id = r.item_id")
    assert (c1, c2) == (shown[0], shown[1]) and p1 == pytest.approx(0.7) and p2 == pytest.approx(0.2)
    probs = {c1: 0.7, c2: 0.2}
    m1, m2 = probs.get(cls1, 0.0), probs.get(cls2, 0.0)
    assert (w1 is None and m1 + m2 == 0) or w1 == pytest.approx(m1 / (m1 + m2))


def _raw_select(url: str, session_hash: str, fn_index: int, trigger_id: int, event_data) -> list:
    """Send an Image.select event with arbitrary event data, as a hostile client could, and read the answer."""
    body = {"data": [None], "event_data": event_data, "fn_index": fn_index, "trigger_id": trigger_id,
            "session_hash": session_hash}
    assert httpx.post(url + "gradio_api/queue/join", json=body, timeout=10).status_code == 200
    with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session_hash}, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed":
                    return msg["output"]["data"] if msg.get("success") else [msg.get("output")]
    raise AssertionError("no answer")


def test_click_study_refuses_malformed_outside_and_too_many_clicks(tmp_path):
    db = tmp_path / "click.sqlite"
    build_study(db, data="samples", mixers=["cutmix"], n=2, size=32, pool=8, checks=0, practice=0, mode="click",
                repeats=0)
    demo = build_app(db)
    url = serve(demo, port=free_port(), block=False)
    try:
        s = Session(url, demo.output_ids)
        s.enrol("click_1", "click")
        assert "click on the picture (at least once)" in text(s.call("/submit")["clicks-msg"])
        cfg = httpx.get(url + "config").json()
        click_dep = next(d for d in cfg["dependencies"] if d.get("api_name") == "click")
        dep, trigger = click_dep["id"], click_dep["targets"][0][0]
        names = {c["id"]: c.get("props", {}).get("elem_id") for c in cfg["components"]}
        raw_ids = [names.get(i) for i in click_dep["outputs"]]
        h = s.client.session_hash
        for data, message in (({"index": "abc", "value": None}, "could not read where you clicked"),
                              ({"index": [1, 2, 3]}, "could not read"), ({}, "could not read"),
                              ({"index": [True, 5]}, "could not read"),
                              ({"index": [-1, 5]}, "outside the picture"),
                              ({"index": [5, 256]}, "outside the picture")):
            out = dict(zip(raw_ids, _raw_select(url, h, dep, trigger, data)))
            assert message in text(out["clicks-msg"]), (data, out["clicks-msg"])
        for k in range(20):  # 32 px shown 8x: display position 8k+3.5 is the centre of image pixel k
            out = dict(zip(raw_ids, _raw_select(url, h, dep, trigger, {"index": [8 * k + 3.5, 99.5]})))
            assert f"{k + 1} click(s)" in text(out["clicks"])
        out = dict(zip(raw_ids, _raw_select(url, h, dep, trigger, {"index": [10, 10], "value": None})))
        assert "at most 20 clicks" in text(out["clicks-msg"])  # refused as it is made, not at submit
        assert text(s.call("/submit")["status"]) == "Saved."
    finally:
        demo.close()
    (clicks,), = rows(db, "SELECT clicks FROM responses")
    assert json.loads(clicks) == [[float(k), 12.0] for k in range(20)]


def test_parse_click_pixel_frame():
    assert parse_click([0, 3.5], 32, 32, 8) == [-0.438, 0.0]  # display pixel 0 lies on image pixel 0's left half
    assert parse_click([255, 255], 32, 32, 8) == [31.438, 31.438]
    for bad in ([256, 0], [0, -0.5], ["1", 2], [float("nan"), 1], None, [1]):
        with pytest.raises(StudyInputError):
            parse_click(bad, 32, 32, 8)


def test_server_killed_mid_run_keeps_committed_answers(study_db):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "apps.judgment_app", "--db", str(study_db), "--port", str(port)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    acknowledged = 0
    try:
        wait_http(url)
        ids = build_app(study_db).output_ids
        s = Session(url, ids)
        s.enrol("crash_1")
        stop = threading.Event()

        def hammer() -> None:
            nonlocal acknowledged
            while not stop.is_set():
                try:
                    s.call("/submit", 33, 66)
                except Exception:  # noqa: BLE001 - the server dies under us
                    return
                acknowledged += 1

        t = threading.Thread(target=hammer)
        t.start()
        while acknowledged < 5:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # killed at an arbitrary moment, mid-request
        proc.wait(timeout=10)
        stop.set()
        t.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stored = rows(study_db, "SELECT COUNT(*) FROM responses r JOIN annotators a ON a.id = r.annotator_id "
                  "WHERE a.external_id = 'crash_1'")[0][0]
    assert acknowledged <= stored <= acknowledged + 1  # every acknowledged answer survived (+ one in flight)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(url)
        out = Session(url, ids).call("/start", "crash_1")
        assert f"{stored} / 20" in text(out["progress"])  # resumed where the database says
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_login_makes_the_user_the_annotator_and_stops_session_takeover(study_db, tmp_path):
    auth = tmp_path / "auth.txt"
    auth.write_text("# annotators\nlogin_u:pw1\nlogin_v:pw2\n")
    creds = parse_auth([], auth)
    with pytest.raises(ValueError, match="expected user:password"):
        parse_auth(["nopassword"])
    demo = build_app(study_db, require_login=True)
    url = serve(demo, port=free_port(), auth=creds, block=False)
    try:
        with pytest.raises(Exception, match="(?i)credentials|auth"):
            Session(url, demo.output_ids)
        u = Session(url, demo.output_ids, auth=("login_u", "pw1"))
        out = u.call("/start", "someone_else")  # the typed id is ignored: the login is the annotator
        assert "0 / 20" not in text(out["progress"])
        u.call("/consent", True)
        assert rows(study_db, "SELECT COUNT(*) FROM annotators WHERE external_id = 'someone_else'")[0][0] == 0
        assert rows(study_db, "SELECT consented_at IS NOT NULL FROM annotators WHERE external_id = 'login_u'") == [(1,)]
        v = Session(url, demo.output_ids, auth=("login_v", "pw2"))
        v.client.session_hash = u.client.session_hash  # v replays u's session id
        out = v.call("/instructions_done")
        assert "belongs to another login" in text(out["status"])
        out = v.call("/quiz", "At the left end", "Press 50/50 (or move the slider to 50), then Submit",
                     "How sure I am of my answer")
        assert "belongs to another login" in text(out["quiz-msg"])
        assert rows(study_db, "SELECT qualified_at FROM annotators WHERE external_id = 'login_u'") == [(None,)]
    finally:
        demo.close()


def test_app_cli_errors(tmp_path, capsys):
    from gazemix.cli import main

    def err(*argv: str) -> str:
        assert main(["app", *argv]) == 2
        msg = capsys.readouterr().err
        assert msg.count("\n") == 1 and "Traceback" not in msg
        return msg

    assert "does not exist" in err("--db", str(tmp_path / "none.sqlite"))
    assert "is a folder" in err("--db", str(tmp_path))
    (tmp_path / "notdb.sqlite").write_text("hello, not a database " * 100)
    assert "not an SQLite database" in err("--db", str(tmp_path / "notdb.sqlite"))
    assert "--port must be from 1 to 65535, got -1" in err("--db", str(tmp_path / "none.sqlite"), "--port", "-1")
    (tmp_path / "auth.txt").write_text("bad line\n")
    assert "auth.txt, line 1: expected user:password" in err("--db", str(tmp_path / "none.sqlite"), "--auth-file",
                                                             str(tmp_path / "auth.txt"))
    db = tmp_path / "gone.sqlite"
    build_study(db, data="samples", mixers=["mixup"], n=2, size=32, pool=8, checks=0, practice=0, repeats=0)
    first = rows(db, "SELECT image_path FROM items ORDER BY id")[0][0]
    (tmp_path / first).unlink()
    assert "picture files are missing" in err("--db", str(db))
