"""Scores a reviewer would accept: held-out observers, the human ceiling, paired differences, no fake zeros."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import pytest
import torch

from data_adapters.base import Fixations
from gazemix.contract import Mixer, MixerInputError, MixResult
from gazemix.observers import split_observers
from gazemix.registry import _REGISTRY
from gazemix.scoring import ScoringData, build_mixers, score_mixers, summarise


def _maps(n: int, hw: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.rand(n, 1, hw, hw, generator=torch.Generator().manual_seed(seed)) ** 6
    return g / g.sum(dim=(1, 2, 3), keepdim=True)


class GazeShareLabel(Mixer):
    """Test mixer: paste the partner's centre square and take the label from the *given* gaze's share."""

    name = "gaze_share_label"
    needs = ("gaze",)

    def sample(self, images, targets, *, generator, **context) -> dict[str, Any]:
        b = images.shape[0]
        return {"index": self.partners(b, generator, "randperm", context), "gaze": context["gaze"]}

    def apply(self, images, targets, params: Mapping[str, Any]) -> MixResult:
        h, w = images.shape[-2:]
        own = torch.ones(images.shape[0], 1, h, w, dtype=torch.bool)
        own[:, :, h // 4: 3 * h // 4, w // 4: 3 * w // 4] = False
        gaze, index = params["gaze"], params["index"]
        kept = (gaze * own).sum(dim=(1, 2, 3))
        shown = (gaze[index] * ~own).sum(dim=(1, 2, 3))
        lam = kept / (kept + shown)
        return self.pair_result(images, images, targets, index, own, lam, params)


def _data(guide: torch.Tensor | None, n: int = 16) -> ScoringData:
    return ScoringData(gaze=_maps(n), guide_gaze=guide, ids=[str(i) for i in range(n)], labels=torch.arange(n) % 4,
                       split={"method": "half"} if guide is not None else {"method": "none"})


def test_split_observers_is_disjoint_seeded_and_counts_halves():
    rng = np.random.default_rng(0)
    fix = [Fixations(rng.random(30), rng.random(30), np.full(30, 200.0), rng.integers(0, 5, 30)),
           Fixations(rng.random(4), rng.random(4), np.full(4, 200.0), np.zeros(4, dtype=np.int64)),
           Fixations(rng.random(3), rng.random(3), np.full(3, 200.0), np.full(3, -1))]
    split = split_observers(fix, seed=3)
    again = split_observers(fix, seed=3)
    assert split.splittable.tolist() == [True, False, False]
    guide_obs, eval_obs = set(split.guide[0].observer), set(split.evaluation[0].observer)
    assert guide_obs and eval_obs and not guide_obs & eval_obs and guide_obs | eval_obs == set(fix[0].observer)
    assert (split.n_guide[0], split.n_evaluation[0]) == (len(guide_obs), len(eval_obs))
    assert len(split.guide[0]) + len(split.evaluation[0]) == 30
    np.testing.assert_array_equal(split.guide[0].x, again.guide[0].x)
    assert len(split.guide[1]) == 0 and len(split.evaluation[1]) == 4
    assert {tuple(sorted(set(split_observers(fix, seed=s).guide[0].observer))) for s in range(8)}.__len__() > 1


def test_gaze_driven_label_is_zero_on_its_own_gaze_and_not_on_held_out_gaze():
    mixer = GazeShareLabel(num_classes=4, seed=0)
    same = _data(guide=None)
    duplicated = _data(guide=same.gaze.clone())  # every observer in both halves
    held_out = _data(guide=_maps(16, seed=9))
    for data in (same, duplicated):
        run = score_mixers({"g": mixer}, data, pairs=40, seed=1, batch_size=8, progress=False)
        np.testing.assert_allclose(run.samples["gap"], 0.0, atol=1e-6)
    run = score_mixers({"g": mixer}, held_out, pairs=40, seed=1, batch_size=8, progress=False)
    assert run.samples["gap"].mean() > 0.01
    # its label *is* the guide half's gaze share, so its gap equals the human ceiling on every sample
    np.testing.assert_allclose(run.samples["gap"], run.samples["ceiling"], atol=1e-6)
    circular = score_mixers({"g": mixer}, same, pairs=8, progress=False).circular
    assert circular == ["g"] and score_mixers({"g": mixer}, held_out, pairs=8, progress=False).circular == []


def test_ceiling_is_zero_for_identical_halves_and_grows_as_they_drift_apart():
    mixers, _ = build_mixers("cutmix", num_classes=4, seed=0, has_images=False)
    base, other = _maps(16), _maps(16, seed=5)
    ceilings = []
    for t in (0.0, 0.3, 0.7):
        run = score_mixers(mixers, _data(guide=(1 - t) * base + t * other), pairs=200, seed=0, progress=False)
        ceilings.append(summarise(run.samples)["ceiling_mean"].iloc[0])
    assert ceilings[0] == pytest.approx(0.0, abs=1e-7) and ceilings[0] < ceilings[1] < ceilings[2]
    no_split = score_mixers(mixers, _data(guide=None), pairs=20, progress=False)
    assert no_split.samples["ceiling"].isna().all()


def _samples(name: str, gaps: np.ndarray) -> pd.DataFrame:
    n = gaps.size
    return pd.DataFrame({"mixer": name, "pair": np.arange(n), "defined": True, "gap": gaps, "ceiling": gaps / 2,
                         "shared_pair": True, "disagree": False, "ghost": False, "lam_label": 0.5, "lam_gaze": 0.5,
                         "partner_gaze_shown": 0.5, "own_gaze_covered": 0.5, "n_sources": 2})


def test_paired_difference_recovers_a_known_shift_and_is_zero_against_itself():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.05, 0.4, 2000)
    frame = pd.concat([_samples("cutmix", base), _samples("worse", base + 0.05 + rng.normal(0, 0.01, base.size)),
                       _samples("noisy", base + rng.normal(0, 0.05, base.size)), _samples("twin", base.copy())])
    summary = summarise(frame, baseline="cutmix").set_index("mixer")
    worse = summary.loc["worse"]
    assert worse["diff_vs_baseline_lo"] < 0.05 < worse["diff_vs_baseline_hi"] and worse["verdict"] == "worse"
    assert worse["diff_vs_baseline_hi"] - worse["diff_vs_baseline_lo"] < 0.005  # paired: the shared part cancels
    assert summary.loc["noisy", "verdict"] == "within noise"
    twin = summary.loc["twin"]
    assert (twin["diff_vs_baseline"], twin["diff_vs_baseline_lo"], twin["diff_vs_baseline_hi"]) == (0.0, 0.0, 0.0)
    assert summary.loc["cutmix", "verdict"] == "baseline"
    assert summary.loc["worse", "excess_gap"] == pytest.approx((frame[frame.mixer == "worse"].gap / 2).mean())


def test_pixel_and_model_dependence_is_read_from_the_built_mixer():
    mixers, skipped = build_mixers("bc_plus,cutmix,puzzlemix,rmix,gazemix", num_classes=4, seed=0, has_images=False,
                                   mixer_opts={"puzzlemix": {"saliency_source": "gaze"},
                                               "rmix": {"saliency_source": "gaze"}})
    assert set(mixers) == {"cutmix", "rmix", "gazemix"}
    assert "pixels" in skipped["bc_plus"] and "pixels" in skipped["puzzlemix"]  # not "needs a model"
    run = score_mixers(mixers, _data(guide=_maps(16, seed=4)), pairs=16, batch_size=8, progress=False)
    assert set(run.samples["mixer"]) == {"cutmix", "rmix", "gazemix"} and not run.errors
    _, default = build_mixers("puzzlemix", num_classes=4, seed=0, has_images=True)
    assert "model" in default["puzzlemix"]
    with pytest.raises(ValueError, match="cutmix cannot be built with nonsense=3"):
        build_mixers("cutmix", num_classes=4, seed=0, has_images=True, mixer_opts={"cutmix": {"nonsense": 3}})
    with pytest.raises(ValueError, match="no mixer named"):
        build_mixers(",", num_classes=4, seed=0, has_images=True)


class Broken(GazeShareLabel):
    name = "broken_for_test"

    def sample(self, images, targets, *, generator, **context):
        raise RuntimeError("boom: an index went wrong")


class NeedsMore(GazeShareLabel):
    name = "needs_more_for_test"

    def sample(self, images, targets, *, generator, **context):
        raise MixerInputError("needs_more_for_test needs attention= in the call")


def test_bugs_are_errors_and_missing_inputs_are_skips():
    data = _data(guide=_maps(16, seed=2))
    run = score_mixers({"ok": GazeShareLabel(num_classes=4), "broken": Broken(num_classes=4),
                        "needs": NeedsMore(num_classes=4)}, data, pairs=8, progress=False)
    assert set(run.samples["mixer"]) == {"ok"}
    assert list(run.errors) == ["broken"] and "RuntimeError: boom" in run.errors["broken"]
    assert "Traceback" in run.errors["broken"] or "line" in run.errors["broken"]
    assert list(run.skipped) == ["needs"] and "attention=" in run.skipped["needs"]


@pytest.fixture
def broken_registered():
    _REGISTRY[Broken.name] = Broken
    yield Broken.name
    del _REGISTRY[Broken.name]


def test_score_cli_exits_non_zero_and_names_a_failing_mixer(tmp_path, capsys, broken_registered):
    from gazemix.cli import main

    out = tmp_path / "run"
    rc = main(["score", "--mixers", f"mixup,{broken_registered}", "--pairs", "16", "--n-images", "12",
               "--img-size", "32", "--out", str(out), "--quiet", "--worst", "0"])
    assert rc == 1
    printed = capsys.readouterr().out
    assert "FAILED" in printed and broken_registered in printed and "boom" in printed
    assert "## Failed" in (out / "summary.md").read_text()
    assert set(pd.read_csv(out / "scores.csv")["mixer"]) == {"mixup"}


def test_an_interrupted_rerun_leaves_the_earlier_run_whole(tmp_path, monkeypatch):
    from gazemix import plots
    from gazemix.cli import main

    out = tmp_path / "run"
    args = ["score", "--mixers", "mixup,cutmix", "--pairs", "16", "--n-images", "12", "--img-size", "32",
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(args) == 2  # never writes into an earlier run without --overwrite

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "plot_lam_scatter", interrupted)
    assert main(args + ["--overwrite", "--seed", "5", "--worst", "0"]) == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no partial folder left behind
    fresh = tmp_path / "fresh"
    monkeypatch.setattr(plots, "plot_lam_scatter", interrupted)
    fresh_args = ["score", "--mixers", "mixup", "--pairs", "16", "--n-images", "12", "--img-size", "32",
                  "--out", str(fresh), "--quiet"]
    assert main(fresh_args) == 130 and not fresh.exists()
