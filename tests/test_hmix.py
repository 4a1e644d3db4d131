"""H-Mix adapter and import: slider direction, malformed files, and the published per-stimulus figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_adapters.base import AdapterError
from data_adapters.hmix import (CIFAR10_CLASSES, INFER_CSV, SOFT_CSV, parse_stimulus, read_hmix_inferences,
                                read_hmix_soft_labels, read_processed)
from gazemix.cli import main
from gazemix.study.analysis import load_tables, per_item, per_lambda
from gazemix.study.hmix import import_hmix

SHARED = Path(__file__).resolve().parents[2] / "shared"
HMIX = SHARED / "data" / "hmix"
needs_hmix = pytest.mark.skipif(not HMIX.exists(), reason="../shared/data/hmix is absent (a user's clone has none)")

HEADER = "subject,filename,task,responses,mixtureCoeff,label1,label2,rt,trial_index,condition\n"


def _row(subject="s1", lam=0.25, mc=20, conf=70, task="rate_mixture", trial=5, c1="Cat", c2="Dog"):
    resp = json.dumps({"mixingcoeff": mc, "confidence": conf}).replace('"', '""')
    return f'{subject},mixed_{lam}_{c1}_1_{c2}_2.png,{task},"{resp}",{lam},{c1},{c2},1500.5,{trial},3\n'


def _write(tmp_path: Path, *rows: str) -> Path:
    (tmp_path / INFER_CSV).write_text(HEADER + "".join(rows))
    return tmp_path


def test_parse_stimulus():
    assert parse_stimulus("mixed_0.75_Bird_8095_Deer_9701.png") == {"lam": 0.75, "class1": "Bird", "id1": 8095,
                                                                   "class2": "Deer", "id2": 9701}
    with pytest.raises(ValueError, match="not an H-Mix stimulus"):
        parse_stimulus("Bird_8095_Deer_9701.png")


def test_slider_direction_and_table_form(tmp_path):
    # slider 0 = "100 % label1": mixingcoeff 20 means image 1 (label1) keeps 0.8
    t = read_hmix_inferences(_write(tmp_path, _row(mc=20, conf=70, trial=7), _row(mc=90, conf=10, trial=9,
                                                                                  task="rerun_rate_mixture"),
                                    _row(subject="s2", lam=0.5, mc=50, conf=50, trial=4)))
    r = t.responses.sort_values(["annotator", "repeat"]).reset_index(drop=True)
    assert r["weight1"].tolist() == pytest.approx([0.8, 0.1, 0.5])
    assert r["confidence"].tolist() == pytest.approx([0.7, 0.1, 0.5])
    assert r["repeat"].tolist() == [0, 1, 0]
    assert r["position"].tolist() == [0, 1, 0]
    assert set(t.items["key"]) == {"mixed_0.25_Cat_1_Dog_2.png", "mixed_0.5_Cat_1_Dog_2.png"}
    assert t.items.set_index("key").loc["mixed_0.25_Cat_1_Dog_2.png", "source1"] == "cifar10-test:1"


@pytest.mark.parametrize("row, field", [
    (_row(mc=120), "responses.mixingcoeff"),
    (_row().replace('""confidence""', '""conf""'), "responses"),
    (_row(task="practice"), "task"),
    (_row().replace("mixed_0.25_Cat", "mixed_0.5_Cat"), "filename"),
    (_row().replace(",1500.5,", ",abc,"), "rt"),
])
def test_malformed_rows_name_line_and_field(tmp_path, row, field):
    with pytest.raises(AdapterError, match=rf"line 3, field '{field}'"):
        read_hmix_inferences(_write(tmp_path, _row(), row))


def test_missing_file_column_and_empty(tmp_path):
    with pytest.raises(AdapterError, match=INFER_CSV):
        read_hmix_inferences(tmp_path)
    (tmp_path / INFER_CSV).write_text("subject,filename\n")
    with pytest.raises(AdapterError, match="missing column"):
        read_hmix_inferences(tmp_path)
    _write(tmp_path)
    with pytest.raises(AdapterError, match="no judgments"):
        read_hmix_inferences(tmp_path)
    with pytest.raises(AdapterError, match="judged .* twice"):
        read_hmix_inferences(_write(tmp_path, _row(), _row(trial=8)))


def test_import_fixture_and_per_lambda(tmp_path):
    root = _write(tmp_path, _row(mc=20, conf=100), _row(subject="s2", mc=40, conf=50),
                  _row(subject="s2", lam=0.5, mc=30, conf=20, trial=8))
    db = tmp_path / "h.sqlite"
    import_hmix(root, db)
    pl = per_lambda(load_tables(db)).set_index("lam")
    assert pl.loc[0.25, "n"] == 2 and pl.loc[0.25, "human_mean"] == pytest.approx(0.7)
    assert pl.loc[0.25, "gap_mean"] == pytest.approx(0.45)
    assert pl.loc[0.5, "human_median"] == pytest.approx(0.7)
    it = per_item(load_tables(db)).set_index("key").loc["mixed_0.25_Cat_1_Dog_2.png"]
    assert it["weighted_relabel"] == pytest.approx((0.8 * 1.0 + 0.6 * 0.5) / 2)  # H-Mix: mean of products


@needs_hmix
def test_real_hmix_reproduces_processed_json(tmp_path):
    db = tmp_path / "hmix.sqlite"
    import_hmix(HMIX, db)
    proc = read_processed(HMIX)
    t = load_tables(db)
    assert len(t.responses) == 4950 and t.responses["annotator_id"].nunique() == 81
    items = per_item(t).set_index("key")
    assert set(items.index) == set(proc)
    keys = sorted(proc)
    rec = [proc[k] for k in keys]
    it = items.loc[keys]
    np.testing.assert_allclose(it["lam"], [r["True Mixing Factor"] for r in rec])
    np.testing.assert_allclose(it["relabel_diff"], [r["Re-Label Diff"] for r in rec], atol=1e-9)
    np.testing.assert_allclose(it["human_std"], [r["Std Dev"] for r in rec], atol=1e-9)
    np.testing.assert_allclose(it["weighted_relabel"], [r["Weighted Re-Label"] for r in rec], atol=1e-9)
    np.testing.assert_array_equal(it["n"], [len(r["Predicted Mixing Factor"]) for r in rec])
    pl = per_lambda(t).set_index("lam")
    for lam in (0.1, 0.25, 0.5, 0.75, 0.9):
        preds = np.concatenate([r["Predicted Mixing Factor"] for r in rec if r["True Mixing Factor"] == lam])
        assert pl.loc[lam, "n"] == len(preds)
        assert pl.loc[lam, "human_mean"] == pytest.approx(preds.mean(), abs=1e-9)
        assert pl.loc[lam, "human_median"] == pytest.approx(np.median(preds), abs=1e-9)
        assert pl.loc[lam, "gap_mean"] == pytest.approx(preds.mean() - lam, abs=1e-9)
    assert pl["n"].tolist() == [987, 885, 1258, 968, 852]


SOFT_HEADER = "subject,filename,task,response,mixtureCoeff,label1,label2,rt,trial_index,condition\n"


def _soft(resp: dict, subject="s1", task="spec_conf", trial=3) -> str:
    js = json.dumps(resp).replace('"', '""')
    return f'{subject},mixed_0.25_Cat_1_Dog_2.png,{task},"{js}",0.25,Cat,Dog,2000,{trial},1\n'


def test_soft_labels_fixture(tmp_path):
    rows = [",,,,,,,,0,1\n",  # a consent/instruction row: skipped and counted
            _soft({"classSelect": "mostProbDog", "prob": "60", "classSelect2": "secondProbCat", "prob2": "20",
                   "improbClassSelectShip": "1"}),
            _soft({"classSelect": "mostProbFrog", "prob": "90", "classSelect2": "secondProbNo", "prob2": ""},
                  subject="s2")]
    (tmp_path / SOFT_CSV).write_text(SOFT_HEADER + "".join(rows))
    t = read_hmix_soft_labels(tmp_path)
    assert t.skipped == 1
    r = t.responses.set_index("annotator")
    assert r.loc["s1", "weight1"] == pytest.approx(0.2 / 0.8)  # image 1 is the Cat
    assert r.loc["s1", "excluded"] == ["Ship"] and r.loc["s1", "prob1"] == pytest.approx(0.6)
    assert r.loc["s2", "weight1"] is None or np.isnan(r.loc["s2", "weight1"])  # neither source class named
    bad = _soft({"classSelect": "mostProbZebra", "prob": "60"})
    (tmp_path / SOFT_CSV).write_text(SOFT_HEADER + bad)
    with pytest.raises(AdapterError, match="line 2, field 'response.classSelect'"):
        read_hmix_soft_labels(tmp_path)


@needs_hmix
def test_real_soft_labels_match_published_vectors(tmp_path):
    t = read_hmix_soft_labels(HMIX)
    assert (len(t.responses), t.skipped, t.responses["annotator"].nunique(), len(t.items)) == (216, 56, 8, 100)
    pub = json.loads((HMIX / "hmix_individ_soft_labels.json").read_text())
    assert t.responses.groupby("key").size().to_dict() == {k: len(v) for k, v in pub.items()}
    for r in t.responses.itertuples():  # each stated most likely class carries mass in a published label
        assert any(v[CIFAR10_CLASSES.index(r.choice1)] > 0 for v in pub[r.key])
    db = tmp_path / "h.sqlite"
    assert main(["humans", "import-hmix", str(HMIX), "--task", "softlabel", "--db", str(db)]) == 0
    assert main(["humans", "report", "--db", str(db), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "per_lambda.csv").read_text().startswith("lam,n,n_items,human_mean,human_median,gap_mean")


def test_import_with_images_is_served_without_refuses(tmp_path, capsys):
    from PIL import Image

    from apps.judgment_app import check_servable
    from gazemix.study import StudyInputError, get_study

    root = _write(tmp_path, _row(mc=20, conf=100), _row(subject="s2", lam=0.5, mc=30, conf=20, trial=8))
    stim = tmp_path / "stimuli"
    stim.mkdir()
    for key in ("mixed_0.25_Cat_1_Dog_2.png", "mixed_0.5_Cat_1_Dog_2.png"):
        Image.fromarray(np.full((32, 32, 3), 40, np.uint8)).save(stim / key)
    db = tmp_path / "h.sqlite"
    import_hmix(root, db, name="plain")
    with pytest.raises(StudyInputError, match="2 of 2 items have no picture .* --images"):
        check_servable(db, get_study(db, "plain"))
    assert main(["app", "--db", str(db), "--study", "plain"]) == 2
    assert "imported without its stimuli" in capsys.readouterr().err
    import_hmix(root, db, name="served", images=stim)
    study = get_study(db, "served")
    check_servable(db, study)
    t = load_tables(db, "served")
    for path in t.items["image_path"]:  # copied under salted names: the file name no longer tells lam
        assert "mixed_" not in path
        assert (tmp_path / path).read_bytes() == (stim / "mixed_0.5_Cat_1_Dog_2.png").read_bytes()
    assert study.config["items_per_annotator"] == 2 and study.questions and study.consent
    (stim / "mixed_0.5_Cat_1_Dog_2.png").unlink()
    with pytest.raises(StudyInputError, match="lacks 1 of the 2 stimuli"):
        import_hmix(root, db, name="partial", images=stim)
    with pytest.raises(StudyInputError, match="already exists"):
        import_hmix(root, db, name="served", images=stim)
