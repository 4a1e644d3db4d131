"""`gazemix humans calibrate`: the perceived share of image 1 as a monotone function of lambda, with bootstrap bands,
from a study database or from H-Mix; the fit that `gazemix train --label-source human` reads."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from gazemix.cli import main
from gazemix.study import Answer, ItemRecord, add_items, create_study, init_db, next_assignment, start_annotator, \
    submit_answer
from gazemix.study.calibration import (Answers, CalibrationError, PerceivedShare, answers_from_db, answers_from_hmix,
                                       calibration_figure, fit_calibration, fit_mixer, pava, write_calibration)
from tests.conftest import SHARED, needs_shared
from tests.test_train_curves import assert_no_text_overlap

LAMS = (0.1, 0.3, 0.5, 0.7, 0.9)
TRUE = {"mixup": lambda lam: 0.1 + 0.8 * lam, "cutmix": lambda lam: lam ** 2}


def constructed_study(tmp_path, annotators: int = 10, per_lam: int = 2, seed: int = 0):
    """A study of mixup and cutmix items at five lambdas; each annotator answers every item with the mixer's true
    perceived share, their own bias and noise, through the store's own API (sliders, sides and all)."""
    db = init_db(tmp_path / "s.sqlite")
    study = create_study(db, "constructed", "infer", config={"seed": 1, "repeats": 0})
    add_items(db, study, [ItemRecord(key=f"{m}_{lam}_{k}", class1="cat", class2="dog", lam=lam, mixer=m, height=8,
                                     width=8) for m in TRUE for lam in LAMS for k in range(per_lam)])
    rng = np.random.default_rng(seed)
    for a in range(annotators):
        ann = start_annotator(db, study, f"p{a}")
        bias = rng.normal(0, 0.05)
        while (asg := next_assignment(db, ann)) is not None:
            w = float(np.clip(TRUE[asg.item["mixer"]](asg.item["lam"]) + bias + rng.normal(0, 0.1), 0, 1))
            slider = round((1 - w) * 100 if asg.left_is_image1 else w * 100)
            submit_answer(db, study, ann, asg.position, asg.item["id"], Answer(slider=slider, slider_touched=True,
                                                                               confidence=70))
    return db


def table(lams, shares, annotators=None, items=None, mixer="mixup") -> Answers:
    n = len(lams)
    return Answers(pd.DataFrame({"mixer": mixer, "lam": lams, "weight1": shares,
                                 "annotator": annotators if annotators is not None else [f"a{i % 7}" for i in range(n)],
                                 "item": items if items is not None else [f"i{i}" for i in range(n)]}),
                   {"kind": "test", "title": "constructed"})


def test_pava_pools_adjacent_violators_with_their_weights():
    np.testing.assert_allclose(pava([1, 3, 2, 4], [1, 1, 1, 1]), [1, 2.5, 2.5, 4])
    np.testing.assert_allclose(pava([1, 3, 2, 4], [1, 3, 1, 1]), [1, 2.75, 2.75, 4])
    np.testing.assert_allclose(pava([3, 2, 1], [1, 1, 1]), [2, 2, 2])
    np.testing.assert_allclose(pava([0.1, 0.2, 0.9], [5, 1, 2]), [0.1, 0.2, 0.9])


def test_fit_is_monotone_and_passes_through_the_per_lambda_means_within_their_band(tmp_path):
    answers = answers_from_db(constructed_study(tmp_path))
    assert answers.source["study"] == "constructed" and len(answers.table) == 10 * 20
    fits = fit_calibration(answers, n_boot=300, seed=0)
    assert set(fits) == {"mixup", "cutmix"}
    for name, fit in fits.items():
        assert (np.diff(fit.perceived) >= 0).all() and (np.diff(fit.lam) > 0).all()
        assert fit.lam[0] == 0 and fit.lam[-1] == 1 and fit.anchors == [(0.0, 0.0), (1.0, 1.0)]
        assert (fit.n_answers, fit.n_annotators, fit.n_items) == (100, 10, 10)
        means = answers.table[answers.table["mixer"] == name].groupby("lam")["weight1"].mean()
        p = fit.points.set_index("lam")
        np.testing.assert_allclose(p["mean"], means.to_numpy())
        assert list(p["n"]) == [20] * 5
        for lam, row in p.iterrows():
            assert row["lo"] <= fit(lam) <= row["hi"], (name, lam)
            assert fit.band(lam)[0] <= fit(lam) <= fit.band(lam)[1]
        assert ((fit.hi - fit.lo)[1:-1] > 0).all()


def test_means_that_decrease_are_pooled():
    lams = np.repeat([0.2, 0.4, 0.6, 0.8], 10)
    shares = np.repeat([0.2, 0.5, 0.4, 0.8], 10)
    fit = fit_mixer(table(lams, shares).table, n_boot=50)
    np.testing.assert_allclose(fit(np.array([0.2, 0.4, 0.6, 0.8])), [0.2, 0.45, 0.45, 0.8])
    assert (np.diff(fit.perceived) >= 0).all()


def test_anchors_only_beyond_the_data():
    fit = fit_mixer(table([0.0, 0.0, 0.5, 0.5], [0.1, 0.2, 0.5, 0.6]).table, n_boot=20)
    assert fit.anchors == [(1.0, 1.0)] and fit(0.0) == pytest.approx(0.15) and fit(1.0) == 1.0
    assert fit(0.75) == pytest.approx((0.55 + 1) / 2)


def test_continuous_lambdas_are_binned_for_the_points():
    rng = np.random.default_rng(0)
    lams = rng.uniform(0, 1, 400)
    fit = fit_mixer(table(lams, np.clip(lams + rng.normal(0, 0.1, 400), 0, 1)).table, n_boot=30)
    assert fit.design == "binned" and len(fit.points) == 10
    assert np.isin(np.round(np.linspace(0, 1, 101), 6), np.round(fit.lam, 6)).all() and len(fit.lam) <= 103
    assert (np.diff(fit.perceived) >= 0).all()


def test_the_resampling_unit_sets_the_band():
    """Annotators who differ a lot: resampling items alone misses that spread; annotators (and both) catch it."""
    rng = np.random.default_rng(1)
    n_ann, per = 6, 40
    bias = np.repeat(rng.normal(0, 0.15, n_ann), per)
    lams = np.tile(np.resize([0.25, 0.5, 0.75], per), n_ann)
    shares = np.clip(lams + bias + rng.normal(0, 0.02, n_ann * per), 0, 1)
    t = table(lams, shares, annotators=np.repeat([f"a{k}" for k in range(n_ann)], per),
              items=[f"i{k % per}" for k in range(n_ann * per)]).table
    width = {u: float(np.mean((lambda f: (f.hi - f.lo)[1:-1])(fit_mixer(t, unit=u, n_boot=200))))
             for u in ("item", "annotator", "both")}
    assert width["annotator"] > 2 * width["item"] and width["both"] >= width["annotator"] * 0.9


def test_fit_round_trips_through_the_json_training_reads(tmp_path):
    answers = table(np.repeat(LAMS, 12), np.clip(np.repeat([0.15, 0.3, 0.5, 0.65, 0.8], 12)
                                                  + np.tile(np.linspace(-0.05, 0.05, 12), 5), 0, 1))
    fits = fit_calibration(answers, n_boot=50)
    path = write_calibration(fits, answers, tmp_path / "cal", unit="both", n_boot=50, seed=0)
    assert sorted(p.name for p in path.parent.iterdir()) == ["calibration.json", "calibration.png", "points.csv"]
    record = json.loads(path.read_text())
    assert record["method"] == "isotonic" and record["band"]["unit"] == "both"
    curve = record["mixers"]["mixup"]
    assert {"lam", "perceived", "lo", "hi", "n_answers", "n_annotators", "n_items", "points"} <= set(curve)
    share = PerceivedShare(path, "mixup")
    lam = torch.tensor([0.0, 0.05, 0.1, 0.42, 0.9, 1.0])
    np.testing.assert_allclose(share(lam).numpy(), fits["mixup"](lam.numpy()), atol=1e-6)
    np.testing.assert_allclose(share(lam.numpy()), fits["mixup"](lam.numpy()), atol=1e-6)
    points = pd.read_csv(path.parent / "points.csv")
    np.testing.assert_allclose(points["fitted"], points["mean"], atol=1e-6)  # monotone means: the fit is them
    with pytest.raises(CalibrationError, match="no curve for 'cutmix' \\(it has mixup\\)"):
        PerceivedShare(path, "cutmix")
    with pytest.raises(CalibrationError, match="already holds files"):
        write_calibration(fits, answers, tmp_path / "cal", unit="both", n_boot=50, seed=0)


@pytest.mark.parametrize("text, match", [
    ("{", "line 1: malformed JSON"),
    ('{"format": "other"}', "not a gazemix calibration"),
    ('{"format": "gazemix-calibration", "mixers": {"mixup": {"lam": [0, 0.5, 1], "perceived": [0, 0.7, 0.6]}}}',
     "non-decreasing"),
    ('{"format": "gazemix-calibration", "mixers": {"mixup": {"lam": [0.1, 1], "perceived": [0, 1]}}}',
     "increase from 0 to 1"),
    ('{"format": "gazemix-calibration", "mixers": {"mixup": {"lam": [0, 1]}}}', "number lists"),
])
def test_bad_calibration_files_are_named(tmp_path, text, match):
    path = tmp_path / "fit.json"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=match) as err:
        PerceivedShare(path, "mixup")
    assert str(path) in str(err.value)


def test_cli_calibrates_a_study_database(tmp_path, capsys):
    db = constructed_study(tmp_path, annotators=4, per_lam=1)
    out = tmp_path / "cal"
    assert main(["humans", "calibrate", "--db", str(db), "--n-boot", "50", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    lines = cap.out.strip().splitlines()
    assert lines[-1] == f"wrote {out / 'calibration.json'}" and "95% band of the fit" in lines[0]
    assert sum(ln.startswith(("mixup", "cutmix")) for ln in lines) == 10
    assert "annotators and items" in cap.err
    assert main(["humans", "calibrate", "--db", str(db), "--n-boot", "50", "--out", str(out)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "--out" in err[0] and "already holds files" in err[0]
    assert main(["humans", "calibrate", "--hmix", str(tmp_path), "--study", "x", "--out", str(tmp_path / "o")]) == 2
    assert "--study selects a study of --db" in capsys.readouterr().err
    assert main(["humans", "calibrate", "--db", str(db), "--n-boot", "3", "--out", str(tmp_path / "o")]) == 2
    assert "--n-boot must be at least 10" in capsys.readouterr().err


def test_the_command_line_states_the_library_defaults():
    import argparse

    from gazemix.cli import build_parser
    from gazemix.study.calibration import N_BOOT, UNITS

    humans = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["humans"]
    calibrate = next(a for a in humans._actions if isinstance(a, argparse._SubParsersAction)).choices["calibrate"]
    options = {a.dest: a for a in calibrate._actions}
    assert tuple(options["unit"].choices) == UNITS and options["unit"].default == UNITS[0]
    assert options["n_boot"].default == N_BOOT  # spelled out there so --help needs no pandas


def test_calibration_plot_layout():
    import matplotlib.pyplot as plt

    answers = table(np.repeat(LAMS, 8), np.repeat([0.15, 0.3, 0.5, 0.65, 0.8], 8))
    answers.table = pd.concat([answers.table, answers.table.assign(mixer="cutmix")])
    for unit in ("both", "item"):
        fig = calibration_figure(fit_calibration(answers, n_boot=20, unit=unit), answers, unit=unit)
        try:
            assert_no_text_overlap(fig)
        finally:
            plt.close(fig)


@needs_shared
def test_hmix_fit_against_the_published_per_lambda_means(capsys):
    """The fit on the real H-Mix judgments beside the per-lambda means of the published processed file."""
    from data_adapters.hmix import read_processed

    answers = answers_from_hmix(SHARED / "data" / "hmix")
    fit = fit_calibration(answers, n_boot=300, seed=0)["mixup"]
    assert (fit.n_answers, fit.n_annotators, fit.n_items) == (4950, 81, 2070)
    published = {}
    for record in read_processed(SHARED / "data" / "hmix").values():
        published.setdefault(record["True Mixing Factor"], []).extend(record["Predicted Mixing Factor"])
    assert sorted(published) == list(fit.points["lam"])
    assert (np.diff(fit.perceived) >= 0).all()
    lines = ["lambda  n  published mean  isotonic fit  95% band (annotators x items)"]
    for lam, values in sorted(published.items()):
        lo, hi = fit.band(lam)
        assert fit(lam) == pytest.approx(np.mean(values), abs=1e-9)  # the means increase: the fit is them
        assert lo < fit(lam) < hi
        lines.append(f"{lam:.2f}  {len(values)}  {np.mean(values):.4f}  {float(fit(lam)):.4f}  [{lo:.4f}, {hi:.4f}]")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
