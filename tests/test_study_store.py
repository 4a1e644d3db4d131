"""Study storage, validation, assignment, building and analysis on temporary databases."""

from __future__ import annotations

import json
import sqlite3
import threading

import numpy as np
import pytest

from gazemix.cli import main
from gazemix.study import (Answer, ItemRecord, StudyInputError, add_items, check_comprehension, create_study,
                           get_study, init_db, next_assignment, progress, record_consent, start_annotator,
                           submit_answer)
from gazemix.study.analysis import agreement, krippendorff_alpha_interval, load_tables, per_mixer, write_report
from gazemix.study.build import build_study


def _study(tmp_path, mode="infer", n=6, checks=1, **cfg):
    db = init_db(tmp_path / "s.sqlite")
    study = create_study(db, "t", mode, config={"seed": 3, "repeats": 1, **cfg})
    items = [ItemRecord(key=f"i{k}", class1="cat", class2="dog", lam=k / (n - 1), mixer="mixup" if k % 2 else "cutmix",
                        height=10, width=20, gaze_lam=0.5, choices=["cat", "dog", "owl"]) for k in range(n)]
    items += [ItemRecord(key=f"c{k}", class1="cat", class2="dog", lam=1.0, mixer="none", height=10, width=20,
                         is_check=True, choices=["cat", "dog", "owl"], check_answer={"weight1": 1.0, "class": "cat",
                                                                                     "box": [0, 0, 5, 5]})
              for k in range(checks)]
    add_items(db, study, items)
    return db, study


def _answer_all(db, study, ann, weight=None):
    """Answer every assignment; ``weight(item)`` gives the weight of image 1 to report."""
    while (asg := next_assignment(db, ann)) is not None:
        w = weight(asg.item) if weight else asg.item["lam"]
        slider = round((1 - w) * 100 if asg.left_is_image1 else w * 100)
        submit_answer(db, study, ann, asg.position, asg.item["id"], Answer(slider=slider, slider_touched=True,
                                                                           confidence=80))


def test_schema_wal_and_resume(tmp_path):
    db, study = _study(tmp_path)
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ann = start_annotator(db, study, "alice")
    assert start_annotator(db, study, "alice") == ann  # resume: same annotator, same assignment
    assert progress(db, ann).total == 6 + 1 + 1  # items + check + 1 repeat
    first = next_assignment(db, ann)
    submit_answer(db, study, ann, first.position, first.item["id"], Answer(slider=10, confidence=60))
    assert str(progress(db, ann)) == "1 / 8"
    assert next_assignment(db, ann).position == first.position + 1


def test_assignment_is_randomised_per_annotator_and_balanced(tmp_path):
    db, study = _study(tmp_path, n=8, checks=0, items_per_annotator=4)
    orders = []
    for name in ("a", "b"):
        ann = start_annotator(db, study, name)
        con = sqlite3.connect(db)
        rows = con.execute("SELECT item_id, repeat, left_is_image1 FROM assignments WHERE annotator_id = ? "
                           "ORDER BY position", (ann,)).fetchall()
        orders.append([r[0] for r in rows if r[1] == 0])
        assert rows[-1][1] == 1 and rows[-1][0] in orders[-1]  # the repeat comes last, of a shown item
    assert not set(orders[0]) & set(orders[1])  # least-assigned first: b gets the 4 items a did not


def test_weights_relative_to_image1_whatever_the_side(tmp_path):
    db, study = _study(tmp_path, n=12, checks=0)
    ann = start_annotator(db, study, "bob")
    _answer_all(db, study, ann, weight=lambda item: 0.9)
    rows = sqlite3.connect(db).execute("SELECT weight1, slider, left_is_image1 FROM responses").fetchall()
    assert {r[2] for r in rows} == {0, 1}  # both sides were used
    assert all(abs(r[0] - 0.9) < 1e-9 for r in rows)


def test_duplicate_submission_stored_once(tmp_path):
    db, study = _study(tmp_path)
    ann = start_annotator(db, study, "carol")
    asg = next_assignment(db, ann)
    args = (db, study, ann, asg.position, asg.item["id"], Answer(slider=30, confidence=50))
    assert submit_answer(*args) is True
    assert submit_answer(*args) is False
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 1


@pytest.mark.parametrize("answer, match", [
    (Answer(slider=50, confidence=60), "move the mixing slider"),
    (Answer(slider=101, confidence=60), r"slider must be in \[0, 100\]"),
    (Answer(slider=float("nan"), confidence=60), "slider must be in"),
    (Answer(slider="1; DROP TABLE responses", confidence=60), "slider must be a number"),
    (Answer(slider=20, confidence=-1), "confidence must be in"),
])
def test_infer_validation(tmp_path, answer, match):
    db, study = _study(tmp_path)
    ann = start_annotator(db, study, "dan")
    asg = next_assignment(db, ann)
    with pytest.raises(StudyInputError, match=match):
        submit_answer(db, study, ann, asg.position, asg.item["id"], answer)


def test_untouched_confidence_is_flagged_not_rejected(tmp_path):
    db, study = _study(tmp_path)
    ann = start_annotator(db, study, "erin")
    asg = next_assignment(db, ann)
    submit_answer(db, study, ann, asg.position, asg.item["id"], Answer(slider=50, slider_touched=True, confidence=50))
    assert sqlite3.connect(db).execute("SELECT flags, slider_touched FROM responses").fetchone() == \
        ("confidence_untouched", 1)


def test_hostile_ids_and_foreign_items(tmp_path):
    db, study = _study(tmp_path)
    for bad, match in (("x'; DROP TABLE responses; --", "may only contain"), ("a" * 5000, "at most 64"),
                       ("", "enter your participant id"), (None, "must be text"), ("=HYPERLINK(1)", "may only")):
        with pytest.raises(StudyInputError, match=match):
            start_annotator(db, study, bad)
    a, b = start_annotator(db, study, "ann_a"), start_annotator(db, study, "ann_b")
    asg_b = next_assignment(db, b)
    asg_a = next_assignment(db, a)
    other = asg_b.item["id"] if asg_b.item["id"] != asg_a.item["id"] else next(
        x for x in range(1, 8) if x != asg_a.item["id"])
    with pytest.raises(StudyInputError, match="not assigned to this annotator"):
        submit_answer(db, study, a, asg_a.position, other, Answer(slider=20, confidence=5))
    with pytest.raises(StudyInputError, match="unknown item id 9999"):
        submit_answer(db, study, a, asg_a.position, 9999, Answer(slider=20, confidence=5))
    with pytest.raises(StudyInputError, match="unknown annotator"):
        submit_answer(db, study, 777, 0, asg_a.item["id"], Answer(slider=20, confidence=5))
    with pytest.raises(StudyInputError, match="session must be text"):
        submit_answer(db, study, a, asg_a.position, asg_a.item["id"], Answer(slider=20, confidence=5), session="s" * 10_000)
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 0


def test_softlabel_and_click_validation(tmp_path):
    (tmp_path / "s").mkdir()
    db, study = _study(tmp_path / "s", mode="softlabel")
    ann = start_annotator(db, study, "f")
    asg = next_assignment(db, ann)
    sub = lambda a: submit_answer(db, study, ann, asg.position, asg.item["id"], a)
    with pytest.raises(StudyInputError, match="most likely class must be one of"):
        sub(Answer(choice1="zebra", prob1=60))
    with pytest.raises(StudyInputError, match="must not exceed the first"):
        sub(Answer(choice1="cat", prob1=30, choice2="dog", prob2=40))
    with pytest.raises(StudyInputError, match="must differ"):
        sub(Answer(choice1="cat", prob1=50, choice2="cat", prob2=40))
    sub(Answer(choice1="dog", prob1=60, choice2="cat", prob2=20))
    row = sqlite3.connect(db).execute("SELECT weight1, prob1, choice2 FROM responses").fetchone()
    assert row[0] == pytest.approx(0.2 / (0.2 + 0.6)) and row[1] == pytest.approx(0.6) and row[2] == "cat"
    (tmp_path / "c").mkdir()
    db, study = _study(tmp_path / "c", mode="click")
    ann = start_annotator(db, study, "g")
    asg = next_assignment(db, ann)
    sub = lambda a: submit_answer(db, study, ann, asg.position, asg.item["id"], a)
    for clicks, match in (([], "at least once"), ([[19.6, 3]], r"clicks\[0\] at \(19.6, 3\) lies outside the 20 x 10"),
                          ([[3, -0.6]], r"clicks\[0\] at"), ([[1, 2, 3]], "pair"), ([[1, 1]] * 21, "at most 20"),
                          ([[True, 1]], "must be a number"), ([["1", 1]], "must be a number"), ("1,2", "list"),
                          ([[float("nan"), 1]], "must be in")):
        with pytest.raises(StudyInputError, match=match):
            sub(Answer(clicks=clicks))
    sub(Answer(clicks=[[19.5, 9.5], [-0.5, 0]]))  # the outer edges of the picture are on it
    assert json.loads(sqlite3.connect(db).execute("SELECT clicks FROM responses").fetchone()[0]) == \
        [[19.5, 9.5], [-0.5, 0]]


def test_concurrent_writers_lose_nothing(tmp_path):
    db, study = _study(tmp_path, n=10)
    anns = [start_annotator(db, study, f"w{k}") for k in range(6)]
    errors = []

    def work(ann):
        try:
            for _ in range(2):  # the second pass re-submits everything: all duplicates
                con = sqlite3.connect(db)
                rows = con.execute("SELECT position, item_id FROM assignments WHERE annotator_id = ?", (ann,)).fetchall()
                con.close()
                for pos, item in rows:
                    submit_answer(db, study, ann, pos, item, Answer(slider=(pos * 7) % 100 + 1, slider_touched=True,
                                                                    confidence=40))
        except Exception as err:  # noqa: BLE001 - surfaced below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(a,)) for a in anns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 6 * 12
    assert con.execute("SELECT COUNT(*) FROM (SELECT DISTINCT annotator_id, item_id, repeat FROM responses)"
                       ).fetchone()[0] == 6 * 12


def test_krippendorff_alpha_hand_computed():
    # units (1, 2) and (3, 3): n = 4, D_o = (2*1/1 + 0)/4 = 0.5; pooled 1,2,3,3: sum_{i!=j} d^2 = 2*(4*23 - 81) = 22
    # D_e = 22 / 12; alpha = 1 - 0.5 / (22/12) = 1 - 6/22
    alpha, lo, hi = krippendorff_alpha_interval([np.array([1.0, 2.0]), np.array([3.0, 3.0]), np.array([5.0])])
    assert alpha == pytest.approx(1 - 6 / 22)
    assert krippendorff_alpha_interval([np.array([1.0, 1.0]), np.array([2.0, 2.0]), np.array([4.0, 4.0])])[0] == 1.0
    assert np.isnan(krippendorff_alpha_interval([np.array([1.0])])[0])
    assert lo <= hi


def test_analysis_gaps_agreement_and_checks(tmp_path):
    db, study = _study(tmp_path, n=6, checks=2)
    for name, offset in (("h1", 0.1), ("h2", 0.1), ("h3", 0.1)):
        ann = start_annotator(db, study, name)
        fail = name == "h3"
        _answer_all(db, study, ann, weight=lambda it: (0.0 if fail else 1.0) if it["is_check"]
                    else min(1.0, it["lam"] + offset) if it["lam"] < 0.9 else it["lam"])
    t = load_tables(db)
    pm = per_mixer(t).set_index("mixer")
    assert set(pm.index) == {"mixup", "cutmix"}
    cut = t.responses[(t.responses["mixer"] == "cutmix")]
    expect = (cut["weight1"] - cut["lam"]).mean()
    assert pm.loc["cutmix", "bias_label"] == pytest.approx(expect)
    assert pm.loc["cutmix", "mae_gaze"] == pytest.approx((cut["weight1"] - 0.5).abs().mean())
    ag = agreement(t).set_index("scope")
    assert ag.loc["all", "alpha"] == pytest.approx(1.0)  # all three annotators agree exactly
    s = write_report(db, tmp_path / "rep")
    assert s["attention_checks"]["n"] == 6 and s["attention_checks"]["pass_rate"] == pytest.approx(4 / 6)
    assert {f["annotator"] for f in s["attention_checks"]["failed"]} == {"h3"}
    for f in ("per_item.csv", "per_lambda.csv", "per_mixer.csv", "agreement.csv", "checks.csv", "calibration.png"):
        assert (tmp_path / "rep" / f).stat().st_size > 0


def test_build_study_provenance_and_cli(tmp_path, capsys):
    study = build_study(tmp_path / "b.sqlite", data="samples", mixers=["mixup", "cutmix"], n=5, size=32, pool=8,
                        checks=2, practice=1, seed=1)
    t = load_tables(tmp_path / "b.sqlite")
    reg = t.items[t.items["is_check"] == 0]
    assert len(reg) == 5 and sorted(reg["mixer"].unique()) == ["cutmix", "mixup"]
    assert (reg["class1"] != reg["class2"]).all() and reg["lam"].between(0, 1).all()
    for row in reg.itertuples():
        assert (tmp_path / row.image_path).is_file()
        p = json.loads(row.params)
        assert p["weight_own"] == pytest.approx(row.lam, abs=1e-6) and "sampled" in p
    checks = t.items[t.items["is_check"] == 1]
    assert len(checks) == 2 and set(checks["lam"]) <= {0.0, 1.0}
    assert get_study(tmp_path / "b.sqlite").name == study.name
    assert study.config["items_per_annotator"] == 5 and study.config["minutes"] >= 4
    assert main(["study", "build", "--data", "samples", "--mixers", "mixup", "--pairs", "3", "--img-size", "32", "--pool", "6",
                 "--checks", "1", "--db", str(tmp_path / "c.sqlite")]) == 0
    assert main(["humans", "export", "--db", str(tmp_path / "c.sqlite"), "--out", str(tmp_path / "e")]) == 0
    assert {p.name for p in (tmp_path / "e").iterdir()} == {"items.csv", "annotators.csv", "responses.csv",
                                                            "events.csv", ".gazemix-output"}
    assert main(["humans", "report", "--db", str(tmp_path / "nope.sqlite"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _enrol(db, study, name):
    ann = start_annotator(db, study, name)
    record_consent(db, study, ann, True)
    assert check_comprehension(db, study, ann, [q["answer"] for q in study.questions]) == []
    return ann


def test_demo_click_study_clicks_vs_gaze(tmp_path, capsys):
    db = tmp_path / "d.sqlite"
    build_study(db, data="demo", mixers=["mixup", "cutmix"], n=4, size=32, pool=8, checks=1, practice=0, mode="click",
                repeats=0)
    t = load_tables(db)
    assert t.items.loc[t.items["is_check"] == 0, "gaze_lam"].between(0, 1).all()
    study = get_study(db)
    ann = _enrol(db, study, "clicker")
    while (asg := next_assignment(db, ann)) is not None:
        if asg.item["gaze_path"]:  # click at the gaze map's peak
            g = np.load(tmp_path / asg.item["gaze_path"])
            y, x = np.unravel_index(np.argmax(g), g.shape)
        else:
            y1, x1, y2, x2 = json.loads(asg.item["check_answer"])["box"]
            y, x = (y1 + y2 - 1) / 2, (x1 + x2 - 1) / 2
        submit_answer(db, study, ann, asg.position, asg.item["id"], Answer(clicks=[[float(x), float(y)]]))
    s = write_report(db, tmp_path / "rep")
    assert s["attention_checks"]["pass_rate"] == 1.0
    cg = s["click_vs_gaze"]
    assert cg["n_items"] == 4 and cg["nss_mean"] > 1.0 and cg["auc_judd_mean"] > 0.9  # clicks on the gaze peaks
    t = load_tables(db)
    for _, r in t.responses[t.responses["is_check"] == 0].iterrows():  # human weight: share of image 1 at the click
        share = np.load(tmp_path / r["share_path"]).astype(np.float64)
        (x, y), = json.loads(r["clicks"])
        assert r["weight1"] == pytest.approx(share[int(round(y)), int(round(x))])
    pm = {m["mixer"]: m for m in s["per_mixer"]}
    assert pm["mixup"]["human_mean"] == pytest.approx(pm["mixup"]["label_mean"], abs=1e-3)  # a blend: share == lam
    assert pm["cutmix"]["nss_mean"] is not None and pm["cutmix"]["auc_judd_mean"] is not None
    assert main(["humans", "report", "--db", str(db), "--out", str(tmp_path / "rep2")]) == 0
    out = capsys.readouterr().out
    assert "NSS" in out and "AUC" in out and "cutmix" in out and "human" in out
