"""The judgment app driven through gradio_client on loopback: flow, hostile input, load, and a server
killed mid-run and restarted (a subprocess)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from apps.judgment_app import build_app, parse_auth
from gazemix.study.build import build_study

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@pytest.fixture(scope="module")
def study_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("app") / "study.sqlite"
    build_study(db, data="samples", mixers=["mixup", "cutmix"], n=16, size=32, pool=12, checks=2, seed=0, repeats=2)
    return db


@pytest.fixture(scope="module")
def server(study_db):
    demo = build_app(study_db)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    yield url
    demo.close()


def rows(db, sql, *args):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def progress_of(out) -> str:
    return str(out[0]["value"] if isinstance(out[0], dict) else out[0])  # gr.State outputs are not returned


def test_flow_resume_and_interaction_rule(server, study_db):
    c = Client(server, verbose=False, download_files=False)
    with pytest.raises(AppError, match="Start first"):
        c.predict(30, 60, None, 50, "None", 0, api_name="/submit")
    out = c.predict("flow_1", api_name="/start")
    assert "0 / 20" in progress_of(out)  # 16 items + 2 checks + 2 repeats
    with pytest.raises(AppError, match="move the mixing slider"):
        c.predict(50, 60, None, 50, "None", 0, api_name="/submit")
    c.predict(api_name="/touch_mix")  # the person moved the slider away and back to 50
    out = c.predict(50, 60, None, 50, "None", 0, api_name="/submit")
    assert "1 / 20" in progress_of(out) and out[-1] == "Saved."
    out = Client(server, verbose=False, download_files=False).predict("flow_1", api_name="/start")  # a new tab resumes
    assert "1 / 20" in progress_of(out)
    (touched, start, rt), = rows(study_db, "SELECT r.slider_touched, r.slider_start, r.rt_ms FROM responses r "
                                 "JOIN annotators a ON a.id = r.annotator_id WHERE a.external_id = 'flow_1'")
    assert touched == 1 and start == 50 and rt > 0


@pytest.mark.parametrize("args, match", [
    ((300, 60, None, 50, "None", 0), "greater than maximum"),
    ((-5, 60, None, 50, "None", 0), "less than minimum"),
    ((30, "1 OR 1=1", None, 50, "None", 0), ""),
])
def test_out_of_range_and_malformed_rejected(server, study_db, args, match):
    c = Client(server, verbose=False, download_files=False)
    c.predict("hostile_1", api_name="/start")
    before = rows(study_db, "SELECT COUNT(*) FROM responses")[0][0]
    with pytest.raises(AppError, match=match):
        c.predict(*args, api_name="/submit")
    assert rows(study_db, "SELECT COUNT(*) FROM responses")[0][0] == before


@pytest.mark.parametrize("ident, match", [
    ("x'); DROP TABLE responses; --", "may only contain"),
    ("a" * 100_000, "."),
    ("", "may only contain"),
])
def test_hostile_annotator_ids(server, study_db, ident, match):
    with pytest.raises(AppError, match=match):
        Client(server, verbose=False, download_files=False).predict(ident, api_name="/start")
    assert rows(study_db, "SELECT COUNT(*) FROM annotators WHERE length(external_id) > 64")[0][0] == 0
    assert rows(study_db, "SELECT name FROM sqlite_master WHERE name = 'responses'")


def test_concurrent_annotators_and_double_tabs(server, study_db):
    """6 annotators, each in two tabs answering the same items concurrently: no loss, no duplicate."""
    n_ann, errors = 6, []

    def annotator(k: int) -> None:
        try:
            tabs = [Client(server, verbose=False, download_files=False) for _ in range(2)]
            for tab in tabs:
                tab.predict(f"load_{k}", api_name="/start")
            done = False
            while not done:
                for tab in tabs:  # both tabs submit the item they show; one of them is a duplicate
                    out = tab.predict(20 + k, 70, None, 50, "None", 0, api_name="/submit")
                    done = done or "20 / 20" in progress_of(out)
        except Exception as err:  # noqa: BLE001 - surfaced below
            errors.append(err)

    threads = [threading.Thread(target=annotator, args=(k,)) for k in range(n_ann)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:1]
    counts = rows(study_db, "SELECT a.external_id, COUNT(*), COUNT(DISTINCT r.item_id || '-' || r.repeat) "
                  "FROM responses r JOIN annotators a ON a.id = r.annotator_id WHERE a.external_id LIKE 'load_%' "
                  "GROUP BY a.external_id")
    assert len(counts) == n_ann and all(n == 20 and d == 20 for _, n, d in counts)


def test_server_killed_mid_run_keeps_committed_answers(study_db, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "apps.judgment_app", "--db", str(study_db), "--port", str(port)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    acknowledged = 0
    try:
        wait_http(url)
        c = Client(url, verbose=False, download_files=False)
        c.predict("crash_1", api_name="/start")
        stop = threading.Event()

        def hammer() -> None:
            nonlocal acknowledged
            while not stop.is_set():
                try:
                    c.predict(33, 66, None, 50, "None", 0, api_name="/submit")
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
        out = Client(url, verbose=False, download_files=False).predict("crash_1", api_name="/start")
        assert f"{stored} / 20" in progress_of(out)  # resumed where the database says
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_login_makes_the_user_the_annotator(study_db, tmp_path):
    auth = tmp_path / "auth.txt"
    auth.write_text("# annotators\nlogin_u:pw1\n")
    creds = parse_auth([], auth)
    with pytest.raises(ValueError, match="expected user:password"):
        parse_auth(["nopassword"])
    demo = build_app(study_db, require_login=True)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
                            auth=creds)
    try:
        with pytest.raises(Exception, match="(?i)credentials|auth"):
            Client(url, verbose=False, download_files=False)
        out = Client(url, auth=("login_u", "pw1"), verbose=False, download_files=False).predict("someone_else", api_name="/start")
        assert "login_u" in out[-1]
        assert rows(study_db, "SELECT COUNT(*) FROM annotators WHERE external_id = 'someone_else'")[0][0] == 0
    finally:
        demo.close()


def test_softlabel_study_through_the_client(tmp_path):
    db = tmp_path / "soft.sqlite"
    build_study(db, data="samples", mixers=["mixup"], n=3, size=32, pool=8, checks=0, seed=1, mode="softlabel",
                repeats=0, distractors=2)
    demo = build_app(db)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    try:
        c = Client(url, verbose=False, download_files=False)
        out = c.predict("soft_1", api_name="/start")
        choice1_update = next(o for o in out if isinstance(o, dict) and "choices" in o)  # gr.State is not returned
        shown = [ch[0] for ch in choice1_update["choices"]]  # 2 true classes + 2 distractors, per-annotator order
        assert len(shown) == 4
        with pytest.raises(AppError):
            c.predict(50, 50, "not_a_class", 60, "None", 0, api_name="/submit")
        with pytest.raises(AppError, match="must not exceed prob1"):
            c.predict(50, 50, shown[0], 30, shown[1], 40, api_name="/submit")
        c.predict(50, 50, shown[0], 70, shown[1], 20, api_name="/submit")
    finally:
        demo.close()
    (c1, p1, c2, p2, w1, cls1, cls2), = rows(db, "SELECT r.choice1, r.prob1, r.choice2, r.prob2, r.weight1, i.class1, "
                                              "i.class2 FROM responses r JOIN items i ON i.id = r.item_id")
    assert (c1, c2) == (shown[0], shown[1]) and p1 == pytest.approx(0.7) and p2 == pytest.approx(0.2)
    probs = {c1: 0.7, c2: 0.2}
    m1, m2 = probs.get(cls1, 0.0), probs.get(cls2, 0.0)
    assert (w1 is None and m1 + m2 == 0) or w1 == pytest.approx(m1 / (m1 + m2))


def test_app_cli_errors(tmp_path, capsys):
    from gazemix.cli import main

    assert main(["app", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "auth.txt").write_text("bad line\n")
    assert main(["app", "--db", str(tmp_path / "none.sqlite"), "--auth-file", str(tmp_path / "auth.txt")]) == 2
    assert "auth.txt, line 1: expected user:password" in capsys.readouterr().err
