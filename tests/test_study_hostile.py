"""Hostile and careless input to studies (issue 20): rebuilds that must not touch a study, blinded file names,
outputs written whole, silently wrong mixers, user errors without tracebacks, slider and click edge cases,
durability, and the consent/comprehension gates."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_adapters.base import AdapterError
from data_adapters.hmix import INFER_CSV
from gazemix.cli import main
from gazemix.study import (Answer, ItemRecord, StudyInputError, check_comprehension, create_study, get_study, init_db,
                           next_assignment, practice_feedback, record_consent, start_annotator, submit_answer)
from gazemix.study.analysis import write_report
from gazemix.study.build import build_mixers, build_study
from gazemix.study.db import connect
from gazemix.study.export import export_csv
from gazemix.study.hmix import import_hmix
from gazemix.study.output import neutralise_formulas

SMALL = dict(data="samples", mixers=["mixup", "cutmix"], n=4, size=32, pool=8, checks=1, practice=1, repeats=0)


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------- 1: rebuilds
def test_refused_rebuild_never_touches_the_existing_study(tmp_path, capsys):
    db = tmp_path / "sb" / "s.sqlite"
    build_study(db, name="s", **SMALL)
    media = tmp_path / "sb" / "s_media"
    before, items = _files(media), sqlite3.connect(db).execute("SELECT * FROM items").fetchall()
    for change in ({"size": 48}, {"mixers": ["mixup"]}, {"seed": 5}):
        with pytest.raises(StudyInputError, match="already exists"):
            build_study(db, name="s", **{**SMALL, **change})
    err = _cli_error(capsys, ["study", "build", "--data", "samples", "--mixers", "mixup", "--pairs", "3", "--img-size", "48",
                              "--pool", "12", "--name", "s", "--db", str(db)])
    assert "already exists" in err and "files are kept" in err
    assert _files(media) == before  # not one byte rewritten, no folder added
    assert sqlite3.connect(db).execute("SELECT * FROM items").fetchall() == items
    build_study(db, name="t", **SMALL)  # another name: a new folder beside the first, which stays as it was
    assert {k: v for k, v in _files(media).items() if k in before} == before
    assert len([p for p in media.iterdir()]) == 2


def test_interrupted_build_leaves_no_study_and_no_files(tmp_path, monkeypatch):
    import gazemix.study.build as build

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "_practice", boom)  # interrupted after the stimuli were written
    db = tmp_path / "i.sqlite"
    with pytest.raises(KeyboardInterrupt):
        build_study(db, **SMALL)
    media = tmp_path / "i_media"
    assert not any(media.iterdir())
    assert not db.exists() or sqlite3.connect(db).execute("SELECT COUNT(*) FROM studies").fetchone()[0] == 0


def test_a_failed_commit_removes_the_fresh_folder(tmp_path, monkeypatch):
    import gazemix.study.build as build

    real = build.create_study

    def fail_after_move(*args, before_commit=None, **kwargs):
        def move_then_fail(con, study_id):
            before_commit(con, study_id)
            raise sqlite3.OperationalError("disk I/O error")
        return real(*args, before_commit=move_then_fail, **kwargs)

    monkeypatch.setattr(build, "create_study", fail_after_move)
    with pytest.raises(sqlite3.OperationalError):
        build_study(tmp_path / "f.sqlite", **SMALL)
    assert not any((tmp_path / "f_media").iterdir())
    assert sqlite3.connect(tmp_path / "f.sqlite").execute("SELECT COUNT(*) FROM studies").fetchone()[0] == 0


# ------------------------------------------------------------------------------- 2: blinding
def test_stimulus_names_are_salted_per_study(tmp_path):
    db = tmp_path / "n.sqlite"
    build_study(db, name="a", **SMALL)
    build_study(db, name="b", **SMALL)  # same data, same keys
    con = sqlite3.connect(db)
    paths = {name: dict(con.execute("SELECT i.key, i.image_path FROM items i JOIN studies s ON s.id = i.study_id "
                                    "WHERE s.name = ?", (name,)).fetchall()) for name in ("a", "b")}
    secrets = [s for s, in con.execute("SELECT secret FROM studies")]
    assert len(set(secrets)) == 2 and all(len(s) == 32 for s in secrets)
    for key, path in paths["a"].items():
        stem = Path(path).stem
        assert stem != Path(paths["b"][key]).stem  # nothing to match across studies
        assert key not in path and "mixup" not in path and "check" not in path
        unsalted = hashlib.sha256(f"{Path(path).parent}/{key}".encode()).hexdigest()[:16]
        assert not stem.startswith(unsalted)
    assert Path(paths["a"]["mixup_0000"]).parent.name not in ("a", "b")  # the folder does not name the study
    export_csv(db, tmp_path / "e", study="a")
    assert not any(s in (tmp_path / "e" / f).read_text() for s in secrets for f in os.listdir(tmp_path / "e"))


# ------------------------------------------------------------------------------- 4: outputs whole
def _answered_study(tmp_path: Path) -> Path:
    db = tmp_path / "r.sqlite"
    study = build_study(db, **SMALL)
    for name in ("u1", "u2"):
        ann = start_annotator(db, study, name)
        record_consent(db, study, ann, True)
        check_comprehension(db, study, ann, [q["answer"] for q in study.questions])
        while (asg := next_assignment(db, ann)) is not None:
            submit_answer(db, study, ann, asg.position, asg.item["id"], Answer(slider=30, confidence=70))
    return db


@pytest.mark.parametrize("command", ["report", "export"])
def test_report_and_export_are_written_whole_or_not_at_all(tmp_path, monkeypatch, command):
    db = _answered_study(tmp_path)
    out = tmp_path / "out"
    write = write_report if command == "report" else export_csv
    write(db, out)
    (out / "stale.csv").write_text("from an older run")  # replaced with the folder, not left beside new files
    before = _files(out)
    calls = {"n": 0}
    real = pd.DataFrame.to_csv

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write(db, out)
    monkeypatch.setattr(pd.DataFrame, "to_csv", real)
    assert _files(out) == before  # the old output, whole
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []  # no temporary left
    write(db, out)
    assert not (out / "stale.csv").exists() and (out / ".gazemix-output").is_file()


def test_outputs_refuse_a_file_or_a_foreign_folder(tmp_path, capsys):
    db = _answered_study(tmp_path)
    (tmp_path / "afile").write_text("x")
    for cmd in ("report", "export"):
        err = _cli_error(capsys, ["humans", cmd, "--db", str(db), "--out", str(tmp_path / "afile")])
        assert "is a file; pass a folder" in err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    err = _cli_error(capsys, ["humans", "export", "--db", str(db), "--out", str(tmp_path / "mine")])
    assert "holds other files" in err and (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


# ------------------------------------------------------------------------------- 5: silently wrong data
def test_mixers_a_study_cannot_run_are_refused_from_the_built_instance():
    for name, match in (("transmix", "relabels after the forward pass"), ("mixpro", "relabels after the forward"),
                        ("tdattenmix", "needs model=")):
        with pytest.raises(StudyInputError, match=match):
            build_mixers([name], num_classes=3, seed=0, has_gaze=True)
    assert [m.name for m in build_mixers(["lumix"], num_classes=3, seed=0)] == ["lumix"]  # pred_weight 0: fine
    with pytest.raises(StudyInputError, match="lumix sets its label from the model"):  # the instance decides
        build_mixers(["lumix"], num_classes=3, seed=0, mixer_opts={"lumix": {"pred_weight": 0.5}})
    with pytest.raises(StudyInputError, match="empty"):
        build_mixers([], num_classes=3, seed=0)
    with pytest.raises(StudyInputError, match="unknown mixer"):
        build_mixers(["nosuchmix"], num_classes=3, seed=0)


def test_transmix_study_refused_by_the_cli(tmp_path, capsys):
    err = _cli_error(capsys, ["study", "build", "--data", "samples", "--mixers", "mixup,transmix", "--pairs", "4",
                              "--img-size", "32", "--pool", "12", "--db", str(tmp_path / "t.sqlite")])
    assert "transmix" in err and "relabels" in err
    assert not (tmp_path / "t.sqlite").exists() and not (tmp_path / "t_media").exists()  # refused before writing


def test_hmix_ids_validated_and_formula_cells_neutralised(tmp_path):
    header = "subject,filename,task,responses,mixtureCoeff,label1,label2,rt,trial_index,condition\n"
    resp = json.dumps({"mixingcoeff": 20, "confidence": 70}).replace('"', '""')
    for bad in ('"=HYPERLINK(""http://x"",""a"")"', "<script>", "+1", "a b"):
        (tmp_path / INFER_CSV).write_text(header + f'{bad},mixed_0.25_Cat_1_Dog_2.png,rate_mixture,"{resp}",0.25,Cat,'
                                                   "Dog,1500,5,3\n")
        with pytest.raises(AdapterError, match="line 2, field 'subject'"):
            import_hmix(tmp_path, tmp_path / "h.sqlite")
    db = init_db(tmp_path / "x.sqlite")
    study = create_study(db, "x", "softlabel", items=[
        ItemRecord(key=k, class1=c, class2="dog", lam=0.5, mixer="mixup", height=4, width=4, choices=[c, "dog"])
        for k, c in (("k1", "=1+2"), ("k2", "+cmd|' /C calc'!A0"), ("k3", "-2+3"), ("k4", "@SUM(A1)"),
                     ("k5", "\tx"), ("k6", "\rx"), ("k7", "cat"))])
    export_csv(db, tmp_path / "ex", study=study.name)
    items = pd.read_csv(tmp_path / "ex" / "items.csv", keep_default_na=False)
    assert sorted(items["class1"]) == sorted(["'=1+2", "'+cmd|' /C calc'!A0", "'-2+3", "'@SUM(A1)", "'\tx", "'\rx",
                                              "cat"])
    df = neutralise_formulas(pd.DataFrame({"v": [-0.5, 1.0], "s": ["-x", "ok"]}))
    assert df["v"].tolist() == [-0.5, 1.0] and df["s"].tolist() == ["'-x", "ok"]  # numbers stay numbers


# ------------------------------------------------------------------------------- 6: user errors
@pytest.mark.parametrize("argv, message", [
    (["--img-size", "100000"], "--img-size must be a whole number from 8 to 1024, got 100000"),
    (["--img-size", "1024", "--pool", "256"], "needs about 5.0 GiB"),
    (["--items-per-annotator", "-2"], "--items-per-annotator must be a whole number >= 1, got -2"),
    (["--items-per-annotator", "0"], "--items-per-annotator must be a whole number >= 1, got 0"),
    (["--mixers", ","], "--mixers is empty"),
    (["--pairs", "0"], "--pairs must be a whole number from 1"),
    (["--redirect-url", "javascript:alert(1)"], "--redirect-url must be an http(s)://"),
    (["--data", "folder"], "--data folder needs --root"),
    (["--data", "cub-gha"], "needs --root and --fixations"),
])
def test_study_build_user_errors(tmp_path, capsys, argv, message):
    db = tmp_path / "u.sqlite"
    err = _cli_error(capsys, ["study", "build", "--data", "samples", "--img-size", "32", "--pool", "12", "--db", str(db),
                              *argv])
    assert message in err
    assert not (tmp_path / "u_media").exists()  # refused before anything was written


def test_db_user_errors(tmp_path, capsys):
    (tmp_path / "text.sqlite").write_text("not a database at all " * 50)
    (tmp_path / "afile").write_text("x")
    cases = [(str(tmp_path), "is a folder"), (str(tmp_path / "text.sqlite"), "not an SQLite database"),
             (str(tmp_path / "afile" / "s.sqlite"), "is a file, not a folder")]
    for db, message in cases:
        err = _cli_error(capsys, ["study", "build", "--data", "samples", "--img-size", "32", "--pool", "12", "--db", db])
        assert message in err, err
    for db, message in cases[:2]:
        for cmd in ("report", "export"):
            assert message in _cli_error(capsys, ["humans", cmd, "--db", db, "--out", str(tmp_path / "o")])
    assert (tmp_path / "text.sqlite").read_text().startswith("not a database")  # left as it was


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: permissions cannot be tested as root")
def test_unwritable_db_folder(tmp_path, capsys):
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o555)
    try:
        err = _cli_error(capsys, ["study", "build", "--data", "samples", "--img-size", "32", "--pool", "12", "--db",
                                  str(tmp_path / "ro" / "s.sqlite")])
        assert "not writable" in err
    finally:
        os.chmod(tmp_path / "ro", 0o755)


# ------------------------------------------------------------------------------- 7: slider and clicks
def _gated_study(tmp_path: Path, mode: str = "infer"):
    db = init_db(tmp_path / "g.sqlite")
    questions = [{"question": "q?", "options": ["a", "b"], "answer": "a"}]
    study = create_study(db, "g", mode, config={"consent": "Agree?", "questions": questions, "repeats": 0},
                         items=[ItemRecord(key=f"i{k}", class1="cat", class2="dog", lam=0.5, mixer="mixup", height=10,
                                           width=20, choices=["cat", "dog"]) for k in range(3)])
    return db, study


@pytest.mark.parametrize("answer, match", [
    (Answer(slider=True, confidence=60), "slider must be a number"),
    (Answer(slider=50.0000001, confidence=60), "whole number"),
    (Answer(slider=30.5, confidence=60), "whole number"),
    (Answer(slider="30", confidence=60), "must be a number"),
    (Answer(slider=50, confidence=60), "press 50/50"),
    (Answer(slider=30, confidence=True), "confidence must be a number"),
    (Answer(slider=30, confidence=60.25), "confidence must be a whole number"),
])
def test_slider_edge_cases(tmp_path, answer, match):
    db, study = _gated_study(tmp_path)
    ann = start_annotator(db, study, "e")
    record_consent(db, study, ann, True)
    check_comprehension(db, study, ann, ["a"])
    asg = next_assignment(db, ann)
    with pytest.raises(StudyInputError, match=match):
        submit_answer(db, study, ann, asg.position, asg.item["id"], answer)
    submit_answer(db, study, ann, asg.position, asg.item["id"], Answer(slider=np.int64(50), slider_touched=True,
                                                                       confidence=np.float64(40)))
    assert sqlite3.connect(db).execute("SELECT slider, confidence FROM responses").fetchall() == [(50.0, 0.4)]


def test_consent_and_comprehension_gate_the_items(tmp_path):
    db, study = _gated_study(tmp_path)
    ann = start_annotator(db, study, "gate", url_params={"PROLIFIC_PID": "gate", "STUDY_ID": "s1",
                                                        "SESSION_ID": "x9", "other": "ignored"})
    asg = next_assignment(db, ann)
    args = (db, study, ann, asg.position, asg.item["id"], Answer(slider=20, confidence=60))
    with pytest.raises(StudyInputError, match="accept the consent"):
        submit_answer(*args)
    with pytest.raises(StudyInputError, match="tick the box"):
        record_consent(db, study, ann, "yes")  # only True is consent
    with pytest.raises(StudyInputError, match="accept the consent form first"):
        check_comprehension(db, study, ann, ["a"])
    record_consent(db, study, ann, True)
    with pytest.raises(StudyInputError, match="comprehension questions"):
        submit_answer(*args)
    assert check_comprehension(db, study, ann, ["b"]) == [0]
    with pytest.raises(StudyInputError, match="comprehension questions"):
        submit_answer(*args)
    assert check_comprehension(db, study, ann, ["a"]) == []
    assert submit_answer(*args) is True
    row = sqlite3.connect(db).execute("SELECT url_params, consented_at, qualified_at FROM annotators").fetchone()
    assert json.loads(row[0]) == {"PROLIFIC_PID": "gate", "STUDY_ID": "s1", "SESSION_ID": "x9"} and all(row[1:])
    with pytest.raises(StudyInputError, match="may only contain"):
        start_annotator(db, study, "other", url_params={"STUDY_ID": "=cmd()"})


def test_practice_feedback_never_uses_a_mixer_label():
    item = {"class1": "cat", "class2": "dog", "height": 10, "width": 20, "choices": ["cat", "dog", "owl"],
            "answer": {"class": "cat", "box": [2, 2, 6, 8]}, "position": 0}
    right, text = practice_feedback("infer", item, Answer(slider=10, confidence=80), left_is_image1=True)
    assert right and "only a **cat**" in text
    right, text = practice_feedback("infer", item, Answer(slider=10, confidence=80), left_is_image1=False)
    assert not right and "belongs at the *cat* end" in text
    with pytest.raises(StudyInputError, match="press 50/50"):  # the same rules as the real items
        practice_feedback("infer", item, Answer(slider=50, confidence=80), left_is_image1=True)
    assert practice_feedback("softlabel", item, Answer(choice1="owl", prob1=60), left_is_image1=True)[0] is False
    assert practice_feedback("click", item, Answer(clicks=[[4, 3]]), left_is_image1=True)[0] is True
    assert practice_feedback("click", item, Answer(clicks=[[15, 9]]), left_is_image1=True)[0] is False


# ------------------------------------------------------------------------------- 8: durability
def test_durability_full_by_default_normal_on_request(tmp_path):
    full = build_study(tmp_path / "full.sqlite", **SMALL)
    normal = build_study(tmp_path / "normal.sqlite", synchronous="NORMAL", **SMALL)
    assert full and normal
    for name, level in (("full", 2), ("normal", 1)):
        con = connect(tmp_path / f"{name}.sqlite")
        assert con.execute("PRAGMA synchronous").fetchone()[0] == level
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        con.close()
    build_study(tmp_path / "normal.sqlite", name="second", **SMALL)  # an existing database keeps its setting
    assert connect(tmp_path / "normal.sqlite").execute("PRAGMA synchronous").fetchone()[0] == 1
    with pytest.raises(StudyInputError, match="--synchronous must be full or normal"):
        init_db(tmp_path / "x.sqlite", synchronous="OFF")


def test_schema_1_database_is_upgraded_in_place(tmp_path):
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE studies (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, mode TEXT NOT NULL,
            instructions TEXT NOT NULL DEFAULT '', config TEXT NOT NULL DEFAULT '{}', created_at TEXT);
        CREATE TABLE items (id INTEGER PRIMARY KEY, study_id INTEGER, key TEXT NOT NULL, image_path TEXT,
            gaze_path TEXT, height INTEGER, width INTEGER, mixer TEXT NOT NULL, params TEXT NOT NULL DEFAULT '{}',
            source1 TEXT, source2 TEXT, class1 TEXT NOT NULL, class2 TEXT NOT NULL, lam REAL NOT NULL,
            gaze_lam REAL, choices TEXT NOT NULL DEFAULT '[]', is_check INTEGER NOT NULL DEFAULT 0,
            check_answer TEXT, seed INTEGER, UNIQUE (study_id, key));
        CREATE TABLE annotators (id INTEGER PRIMARY KEY, study_id INTEGER, external_id TEXT NOT NULL,
            created_at TEXT, UNIQUE (study_id, external_id));
        CREATE TABLE assignments (annotator_id INTEGER, position INTEGER, item_id INTEGER, repeat INTEGER,
            left_is_image1 INTEGER, choice_order TEXT, PRIMARY KEY (annotator_id, position));
        CREATE TABLE responses (id INTEGER PRIMARY KEY, annotator_id INTEGER, item_id INTEGER, repeat INTEGER,
            position INTEGER, weight1 REAL, confidence REAL, slider REAL, slider_start REAL, slider_touched INTEGER,
            confidence_touched INTEGER, left_is_image1 INTEGER, choice1 TEXT, prob1 REAL, choice2 TEXT, prob2 REAL,
            clicks TEXT, excluded TEXT, flags TEXT NOT NULL DEFAULT '', rt_ms REAL, session TEXT, created_at TEXT,
            UNIQUE (annotator_id, item_id, repeat));
        INSERT INTO studies(name, mode, config) VALUES ('old', 'infer', '{"repeats": 0}');
        INSERT INTO items(study_id, key, mixer, class1, class2, lam) VALUES (1, 'k', 'mixup', 'a', 'b', 0.5);
    """)
    con.close()
    study = get_study(init_db(db))
    ann = start_annotator(db, study, "later")
    asg = next_assignment(db, ann)
    assert submit_answer(db, study, ann, asg.position, asg.item["id"], Answer(slider=20, confidence=50))
    assert sqlite3.connect(db).execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "2"


def test_old_option_spellings_still_work_with_a_deprecation_line(tmp_path, capsys):
    from gazemix.cli import main

    rc = main(["study", "build", "--data", "samples", "--mixers", "mixup", "--n", "3", "--size", "32", "--pool", "6",
               "--checks", "0", "--practice", "1", "--db", str(tmp_path / "old.sqlite")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "--n is deprecated; write --pairs" in err and "--size is deprecated; write --img-size" in err
