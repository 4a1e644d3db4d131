"""Label-gaze consistency metrics and `gazemix score` (issue 5)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from gazemix import create_mixer
from gazemix.metrics.consistency import (bootstrap_interval, disagreement, gaze_weight, ghost_label,
                                         label_gaze_gap, pasted_region_shares, source_shares_gap)
from gazemix.scoring import ModelContext, ScoringData, build_mixers, draw_pairs, score_mixers, summarise
from tests.conftest import SHARED, needs_shared


def random_gaze(n: int, hw=(32, 32), seed: int = 0) -> torch.Tensor:
    g = torch.rand(n, 1, *hw, generator=torch.Generator().manual_seed(seed)) ** 4
    return g / g.sum(dim=(1, 2, 3), keepdim=True)


def test_mixup_gaze_weight_equals_its_label_weight():
    x, gaze = torch.rand(8, 3, 32, 32), random_gaze(8)
    r = create_mixer("mixup", num_classes=8, mode="elem", seed=0)(x, torch.arange(8))
    lam_gaze, defined = gaze_weight(*r.replay(gaze))
    assert bool(defined.all())
    torch.testing.assert_close(lam_gaze, r.lam, rtol=1e-5, atol=1e-6)


def test_cutmix_box_over_partner_gaze_gives_zero_gaze_weight():
    m = create_mixer("cutmix", num_classes=2, seed=0)
    x = torch.rand(2, 3, 32, 32)
    params = {"lam_sampled": torch.tensor([0.75, 0.75]), "boxes": torch.tensor([[8, 8, 24, 24]] * 2),
              "index": torch.tensor([1, 0])}
    r = m.apply(x, torch.tensor([0, 1]), params)
    gaze = torch.zeros(2, 1, 32, 32)
    gaze[:, :, 10:20, 10:20] = 1 / 100  # every image's gaze lies inside the box
    own, partner = r.replay(gaze)
    lam_gaze, _ = gaze_weight(own, partner)
    torch.testing.assert_close(own, torch.zeros(2))
    torch.testing.assert_close(partner, torch.ones(2))
    torch.testing.assert_close(lam_gaze, torch.zeros(2))
    torch.testing.assert_close(r.lam, torch.full((2,), 0.75))
    assert bool(ghost_label(r.lam, r.partner_lam, own, partner).all())  # 75 % label, no gaze left


def test_hand_computed_metrics():
    # 1x4 image: own mask keeps the left 3 pixels. Own gaze [.5,.5,0,0], partner gaze [0,0,.2,.8].
    mask = torch.tensor([[[[1.0, 1.0, 1.0, 0.0]]]])
    g_own = (mask * torch.tensor([0.5, 0.5, 0.0, 0.0])).sum()       # 1.0 kept
    g_partner = ((1 - mask) * torch.tensor([0.0, 0.0, 0.2, 0.8])).sum()  # 0.8 shown
    lam = torch.tensor([0.75])
    lam_gaze, defined = gaze_weight(g_own.view(1), g_partner.view(1))
    assert math.isclose(float(lam_gaze), 1 / 1.8, rel_tol=1e-6) and bool(defined)
    assert math.isclose(float(label_gaze_gap(lam, lam_gaze)), abs(0.75 - 1 / 1.8), rel_tol=1e-6)
    assert not bool(disagreement(lam, lam_gaze))
    assert bool(disagreement(torch.tensor([0.7]), torch.tensor([0.2])))
    assert not bool(disagreement(torch.tensor([0.5]), torch.tensor([0.1])))  # ½ favours no side
    # equal gaze masses summed in float32 give ½ only up to rounding: that never decides a disagreement
    assert not bool(disagreement(torch.tensor([0.98]), torch.tensor([0.5 - 3e-8], dtype=torch.float64)))
    assert bool(disagreement(torch.tensor([0.98]), torch.tensor([0.49])))
    shown, covered = pasted_region_shares(g_own.view(1), g_partner.view(1))
    assert math.isclose(float(shown), 0.8, rel_tol=1e-6) and math.isclose(float(covered), 0.0, abs_tol=1e-7)
    assert not bool(ghost_label(lam, 1 - lam, g_own.view(1), g_partner.view(1)))
    assert bool(ghost_label(torch.tensor([0.3]), torch.tensor([0.7]), torch.tensor([0.04]), torch.tensor([1.0])))
    assert not bool(ghost_label(torch.tensor([0.3]), torch.tensor([0.7]), torch.tensor([0.04]), torch.tensor([1.0]),
                                min_label=0.5))


def test_undefined_gaze_weight_is_nan_and_flagged():
    lam_gaze, defined = gaze_weight(torch.tensor([0.0, 0.2]), torch.tensor([0.0, 0.2]))
    assert bool(torch.isnan(lam_gaze[0])) and not bool(defined[0]) and float(lam_gaze[1]) == 0.5


def test_source_shares_gap_reduces_to_pair_gap():
    w = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    g = torch.tensor([[0.4, 0.4], [0.9, 0.1]])
    gap, defined = source_shares_gap(w, g)
    torch.testing.assert_close(gap, torch.tensor([0.2, 0.7]))
    gap3, _ = source_shares_gap(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[0.5, 0.25, 0.25]]))
    torch.testing.assert_close(gap3, torch.tensor([0.25]))


def test_bootstrap_interval_brackets_the_mean():
    x = np.random.default_rng(0).normal(0.3, 0.1, 500)
    lo, hi = bootstrap_interval(x, "mean", seed=1)
    assert lo < x.mean() < hi and hi - lo < 0.05
    assert bootstrap_interval(x, seed=1) == bootstrap_interval(x, seed=1)
    assert all(math.isnan(v) for v in bootstrap_interval(np.array([np.nan])))


def _data(n=24, hw=(32, 32)):
    return ScoringData(gaze=random_gaze(n, hw), ids=[f"img{i}" for i in range(n)], labels=torch.arange(n) % 4,
                       images=torch.rand(n, 3, *hw), class_names=list("abcd"), name="toy")


def test_pairs_are_shared_reproducible_and_cross_class():
    data = _data()
    own, partner = draw_pairs(data, 50, seed=3)
    assert bool((own != partner).all()) and bool((data.labels[own] != data.labels[partner]).all())
    mixers, _ = build_mixers("mixup,cutmix,fmix,resizemix", num_classes=4, seed=0, has_images=True)
    run1 = score_mixers(mixers, data, pairs=40, seed=3, batch_size=16, progress=False)
    run2 = score_mixers(mixers, data, pairs=40, seed=3, batch_size=16, progress=False)
    pd.testing.assert_frame_equal(run1.samples, run2.samples)
    by = {name: df[["own_id", "partner_id"]].reset_index(drop=True) for name, df in run1.samples.groupby("mixer")}
    for df in by.values():
        pd.testing.assert_frame_equal(df, by["mixup"])
    assert run1.samples["shared_pair"].all() and len(run1.samples) == 4 * 40
    mix = run1.samples[run1.samples["mixer"] == "mixup"]
    np.testing.assert_allclose(mix["lam_gaze"], mix["lam"], rtol=1e-5)


def test_summary_columns_and_undefined_counts():
    data = _data()
    data.gaze[:2] = 0  # two images without gaze mass: pairs of the two are undefined, the rest defined
    mixers, _ = build_mixers("cutmix", num_classes=4, seed=0, has_images=True)
    run = score_mixers(mixers, data, pairs=60, seed=0, batch_size=32, progress=False)
    summary = summarise(run.samples)
    for col in ("mixer", "n", "gap_mean", "gap_mean_lo", "gap_mean_hi", "gap_median", "gap_p90",
                "disagreement_rate", "ghost_label_rate", "undefined"):
        assert col in summary.columns
    row = summary.iloc[0]
    assert row["gap_mean_lo"] <= row["gap_mean"] <= row["gap_mean_hi"]
    assert row["undefined"] == int((~run.samples["defined"]).sum())


def test_mixers_that_cannot_run_are_reported_not_fatal():
    data = ScoringData(gaze=random_gaze(6), ids=[str(i) for i in range(6)])
    mixers, skipped = build_mixers("all", num_classes=None, seed=0, has_images=False)
    assert "mixup" in mixers and skipped  # pixel/model mixers are skipped with a reason
    assert all(isinstance(v, str) and v for v in skipped.values())
    run = score_mixers({"mixup": mixers["mixup"], "cutmix": mixers["cutmix"]}, data, pairs=10, batch_size=4, progress=False)
    assert set(run.samples["mixer"]) == {"mixup", "cutmix"}


def test_bad_scoring_data_is_rejected():
    with pytest.raises(ValueError, match="NaN"):
        ScoringData(gaze=torch.full((3, 1, 4, 4), float("nan")), ids=["a", "b", "c"])
    with pytest.raises(ValueError, match="at least 2"):
        ScoringData(gaze=random_gaze(1, (4, 4)), ids=["a"])
    with pytest.raises(ValueError, match="ids"):
        ScoringData(gaze=random_gaze(3, (4, 4)), ids=["a"])


def test_score_cli_on_the_demo_set(tmp_path, capsys):
    from gazemix.cli import main
    rc = main(["score", "--mixers", "mixup,cutmix,resizemix,splicemix", "--pairs", "64", "--n-images", "24",
               "--img-size", "64", "--out", str(tmp_path), "--quiet", "--worst", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "cutmix" in out and "gap [95% CI]" in out and "ceiling" in out
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert set(scores["mixer"]) == {"mixup", "cutmix", "resizemix", "splicemix"}
    assert scores["gap_mean"].is_monotonic_increasing
    samples = pd.read_parquet(tmp_path / "samples.parquet")
    assert {"own_id", "partner_id", "own_class", "partner_class", "lam", "lam_gaze", "g_own", "g_partner",
            "options"} <= set(samples.columns)
    for name in ("gap_by_mixer.png", "lam_vs_gaze.png", "worst_examples.png", "summary.md", "config.json"):
        assert (tmp_path / name).stat().st_size > 0


def test_score_cli_errors(tmp_path, capsys):
    from gazemix.cli import main
    assert main(["score", "--data", "cub-gha", "--out", str(tmp_path)]) == 2
    assert "--fixations" in capsys.readouterr().err
    assert main(["score", "--mixers", "nosuchmixer", "--n-images", "8", "--img-size", "32", "--out", str(tmp_path)]) == 2
    assert "unknown mixer" in capsys.readouterr().err


@needs_shared
def test_score_cli_on_real_cub_gha_fixations(tmp_path, capsys):
    from gazemix.cli import main
    from gazemix.registry import list_mixers
    out = tmp_path / "run"
    rc = main(["score", "--data", "cub-gha", "--fixations", str(SHARED / "data" / "cub_gha"),
               "--pairs", "200", "--img-size", "64", "--out", str(out), "--quiet", "--cache", str(tmp_path / "cache")])
    assert rc == 0
    scores = pd.read_csv(out / "scores.csv")
    # every row whose mix reads no pixels and no model: the content-independent mixers (GazeMix among them) and
    # the gaze variants of the saliency mixers whose mix then reads gaze alone
    mixers, skipped = build_mixers("all", num_classes=None, seed=0, has_images=False)
    runnable = {m.name for m in list_mixers() if m.content_independent and m.model_kind is None}
    assert runnable <= set(mixers) and set(scores["mixer"]) == set(mixers)
    assert {"rmix@gaze", "attentivemix@gaze"} <= set(mixers) and "puzzlemix@gaze" in skipped
    assert "bc_plus" in skipped
    assert (scores["n"] > 0).all()
    assert scores["ceiling_mean"].notna().all() and (scores.loc[scores["mixer"] == "cutmix", "ceiling_mean"] > 0).all()
    config = json.loads((out / "config.json").read_text())
    split = config["split"]
    assert split["method"] == "half" and split["images_split"] > 10_000
    summary = (out / "summary.md").read_text()
    assert "observers split in halves per image" in summary and "guide" in summary


def test_every_pair_mixer_honours_the_shared_pairs():
    from gazemix.attention.vit import model_context
    from gazemix.training.model import build_model

    torch.manual_seed(0)
    data = _data(n=12, hw=(64, 64))
    model = build_model("deit_tiny_patch16_224", 4, 64).eval()
    models = {"vit": ModelContext("vit", model_context(model), ("model", "attention", "logits"))}
    mixers, skipped = build_mixers("all", num_classes=4, seed=0, has_images=True, models=models)
    run = score_mixers(mixers, data, pairs=8, seed=0, batch_size=4, models=models, progress=False)
    pair_rows = run.samples[run.samples["n_sources"] == 2]
    assert len(set(pair_rows["mixer"])) >= 15, run.skipped
    not_shared = sorted(set(pair_rows.loc[~pair_rows["shared_pair"], "mixer"]))
    assert not_shared == [], f"mixers that ignore index=: {not_shared}"
