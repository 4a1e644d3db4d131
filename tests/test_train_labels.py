"""Training on the labels people perceive or human gaze gives: relabelled targets sum to 1, gaze labels come from
held-out observers (never from the gaze that guided the mixer), and a run with each label source writes its
metrics."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
import torch

from gazemix.cli import main
from gazemix.registry import create_mixer
from gazemix.training import TensorGazeDataset, TrainData, train
from gazemix.training.labels import GazeLabels, HumanLabels, LabelSource, make_label_source
from tests.test_train import K, cfg, make_cub_layout, tiny_data

MIXERS = ["mixup", "cutmix", "fmix", "resizemix", "gridmix", "bc", "switch", "splicemix", "gazemix", "saliencymix"]


def batch(b: int = 8, s: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, s, s, generator=g)
    labels = torch.arange(b) % K
    gaze = torch.rand(b, 1, s, s, generator=g) ** 8
    return images, labels, gaze / gaze.sum(dim=(1, 2, 3), keepdim=True)


def mix(name: str, images, labels, gaze, smoothing: float = 0.1):
    mixer = create_mixer(name, num_classes=K, label_smoothing=smoothing, seed=0)
    return mixer(images, labels, generator=torch.Generator().manual_seed(1), gaze=gaze, saliency=gaze)


def one_hot(labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, K).float() * (1 - smoothing) + smoothing / K


def compress(lam: torch.Tensor) -> torch.Tensor:
    """A perceived-share curve pulled in at the ends, as H-Mix's."""
    return 0.15 + 0.7 * lam


@pytest.mark.parametrize("name", MIXERS)
@pytest.mark.parametrize("source", ["human", "gaze"])
def test_relabelled_targets_sum_to_one_and_follow_the_new_weights(name, source):
    images, labels, gaze = batch()
    result = mix(name, images, labels, gaze)
    relabel = HumanLabels(K, 0.1, compress) if source == "human" else GazeLabels(K, 0.1)
    new, fallbacks = relabel.relabel(result, labels, gaze)
    torch.testing.assert_close(new.targets.sum(dim=1), torch.ones(new.targets.shape[0]))
    w = torch.stack([s.weight for s in new.sources], dim=1)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(w.shape[0]))
    assert (w >= 0).all()
    soft = one_hot(labels, 0.1)
    expected = sum(w[:, k, None] * soft[s.index] for k, s in enumerate(new.sources))
    torch.testing.assert_close(new.targets, expected)
    old = torch.stack([s.weight for s in result.sources], dim=1)
    if source == "human":
        lam = old[:, 0] / old.sum(dim=1)
        torch.testing.assert_close(w[:, 0], compress(lam))
        assert int(fallbacks) == 0
    else:
        masses = result.replay_sources(gaze).float()
        ok = masses.sum(dim=1) > 0
        torch.testing.assert_close(w[ok], masses[ok] / masses[ok].sum(dim=1, keepdim=True))
        assert int(fallbacks) == int((~ok).sum())


def test_an_identity_curve_leaves_a_convex_mix_unchanged():
    images, labels, gaze = batch()
    result = mix("mixup", images, labels, gaze)
    new, _ = HumanLabels(K, 0.1, lambda lam: lam).relabel(result, labels)
    torch.testing.assert_close(new.targets, result.targets)
    same, n = LabelSource(K, 0.1).relabel(result, labels)
    assert same is result and int(n) == 0


def test_gaze_labels_fall_back_to_the_mixer_where_an_image_has_no_held_out_gaze():
    images, labels, gaze = batch()
    gaze[2] = 0  # its crop held none of the evaluation observers' gaze
    result = mix("cutmix", images, labels, gaze)
    new, fallbacks = GazeLabels(K, 0.1).relabel(result, labels, gaze)
    touched = (result.own_index == 2) | (result.index == 2)
    assert int(fallbacks) == int(touched.sum()) > 0
    torch.testing.assert_close(new.targets[touched], result.targets[touched])
    assert not torch.allclose(new.targets[~touched], result.targets[~touched])


def test_demo_guide_and_evaluation_gaze_come_from_disjoint_observers():
    from gazemix.demo import make_demo
    from gazemix.gaze import render_gaze_maps
    from gazemix.observers import split_observers
    from gazemix.training.data import base_size, build_data

    data = build_data("demo", None, 32, seed=3, demo_train=12, demo_val=4, label_gaze=True)
    assert data.has_label_gaze and "observers split per image (seed 3)" in data.notes[0]
    p = base_size(32)
    fixations = make_demo(n=12, size=p, seed=3).fixations
    split = split_observers(fixations, 3)
    for i in range(12):
        image, label, guide, held = data.train[i]
        ids_guide, ids_held = set(split.guide[i].observer), set(split.evaluation[i].observer)
        assert ids_guide and ids_held and not ids_guide & ids_held
        assert ids_guide | ids_held == set(fixations[i].observer)
        torch.testing.assert_close(guide, render_gaze_maps([split.guide[i]], [(p, p)], (p, p)).maps[0])
        torch.testing.assert_close(held, render_gaze_maps([split.evaluation[i]], [(p, p)], (p, p)).maps[0])
    plain = build_data("demo", None, 32, seed=3, demo_train=12, demo_val=4)
    assert len(plain.train[0]) == 3 and not plain.has_label_gaze


def test_file_data_split_cub_runs_into_guide_and_evaluation(tmp_path):
    from gazemix.training.data import build_data

    cub, gaze_dir = make_cub_layout(tmp_path, runs=2)  # run 1 fixates one edge, run 2 the other
    data = build_data("cub-gha", str(cub), 32, fixations=[str(gaze_dir)], label_gaze=True)
    assert data.has_label_gaze
    for i in range(len(data.train)):
        image, label, guide, held = data.train[i]
        left = lambda m: float(m[0, :, :18].sum())  # noqa: E731
        assert {round(left(guide)), round(left(held))} == {0, 1}  # one half per edge: never the same observers
        torch.testing.assert_close(guide.sum(), torch.tensor(1.0))
    one, _ = make_cub_layout(tmp_path / "one", runs=1)
    single = build_data("cub-gha", str(one), 32, fixations=[str(tmp_path / "one" / "data_5runs")], label_gaze=True)
    image, label, guide, held = single.train[0]  # one observer: nothing to split, the mixer gets no gaze
    torch.testing.assert_close(guide, torch.full_like(guide, 1 / guide.numel()))
    assert float(held.sum()) == pytest.approx(1.0) and "4 images cannot be split" in single.notes[-1]


def test_the_mixer_sees_the_guide_half_and_the_label_reads_the_other(monkeypatch):
    from gazemix.training.data import BatchAugment
    from gazemix.training.engine import Classifier, Trainer
    from gazemix.training.model import build_model

    torch.manual_seed(0)
    backbone = build_model("test_vit", K, 32, patch_size=8)
    mixer = create_mixer("gazemix", num_classes=K, patch_size=8, seed=0)
    seen = []
    call = type(mixer).__call__
    monkeypatch.setattr(type(mixer), "__call__", lambda self, *a, **kw: seen.append(kw["gaze"]) or call(self, *a, **kw))
    labelled = []
    relabel = GazeLabels.relabel
    monkeypatch.setattr(GazeLabels, "relabel", lambda self, r, y, g=None: labelled.append(g) or relabel(self, r, y, g))
    opt = torch.optim.SGD(backbone.parameters(), lr=0.0)
    sched = type("S", (), {"step_update": lambda self, num_updates: None})()
    core = Classifier(backbone)
    trainer = Trainer(core, core, mixer, opt, sched, BatchAugment(32), num_classes=K, label_smoothing=0.0,
                      generator=torch.Generator().manual_seed(0), clip_grad=None, amp=False,
                      device=torch.device("cpu"), label_source=GazeLabels(K))
    images, labels, guide = batch()
    _, _, held = batch(seed=1)
    out = trainer.step(images, labels, guide, 0, label_gaze=held)
    assert seen[0] is guide and labelled[0] is held and int(out.label_fallbacks) == 0


def test_a_mixer_whose_targets_come_from_the_forward_is_not_relabelled(tmp_path):
    with pytest.raises(ValueError, match="cannot be relabelled"):
        train(cfg(tmp_path, mixer="tlalign", label_source="gaze", max_steps=1), data=tiny_label_data())


def tiny_label_data() -> TrainData:
    """tiny_data with held-out gaze: the evaluation half sits on the square, the guide half is uniform."""
    d = tiny_data()
    gaze = d.train.gaze
    guide = torch.full_like(gaze, 1.0 / gaze[0].numel())
    return TrainData(TensorGazeDataset(d.train.images, d.train.labels, guide, gaze), d.val, d.class_names, True,
                     d.description, has_label_gaze=True)


def write_fit(tmp_path, mixer: str = "cutmix") -> str:
    """A calibration fitted from a constructed set of answers (people see less of the partner than its area)."""
    from gazemix.study.calibration import Answers, fit_calibration, write_calibration

    rng = np.random.default_rng(0)
    lam = np.repeat([0.2, 0.5, 0.8], 40)
    table = pd.DataFrame({"mixer": mixer, "lam": lam, "weight1": np.clip(0.2 + 0.6 * lam + rng.normal(0, 0.1, 120), 0, 1),
                          "annotator": np.tile(np.arange(10), 12).astype(str), "item": np.arange(120).astype(str)})
    answers = Answers(table, {"kind": "test"})
    return str(write_calibration(fit_calibration(answers, n_boot=50), answers, tmp_path / "fit", unit="both",
                                 n_boot=50, seed=0))


@pytest.mark.parametrize("source", ["mixer", "human", "gaze"])
def test_a_run_with_each_label_source_writes_its_metrics(tmp_path, source):
    calibration = write_fit(tmp_path) if source == "human" else None
    result = train(cfg(tmp_path, label_source=source, calibration=calibration, max_steps=1),
                   data=tiny_label_data() if source == "gaze" else tiny_data())
    out = tmp_path / "run"
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]["train_loss"]) == pytest.approx(result["train_loss"])
    assert int(rows[0]["label_fallbacks"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["label_source"] == source and config["calibration"] == calibration
    assert result["label_source"] == source


def test_label_sources_change_what_is_learned(tmp_path):
    losses = {}
    for source in ("mixer", "human", "gaze"):
        calibration = write_fit(tmp_path / source) if source == "human" else None
        r = train(cfg(tmp_path, out=str(tmp_path / source / "run"), label_source=source, calibration=calibration,
                      max_steps=1, label_smoothing=0.0), data=tiny_label_data())
        losses[source] = r["train_loss"]
    assert len(set(losses.values())) == 3, losses  # same seed, same mixes: only the labels differ


def test_cli_trains_on_human_and_gaze_labels(tmp_path, capsys):
    args = ["train", "--data", "demo", "--demo-train", "16", "--demo-val", "8", "--model", "test_vit", "--patch-size",
            "8", "--img-size", "32", "--mixer", "cutmix", "--batch-size", "8", "--workers", "0", "--device", "cpu",
            "--epochs", "1", "--max-steps", "1", "--quiet", "--json"]
    assert main(args + ["--label-source", "gaze", "--out", str(tmp_path / "g")]) == 0
    assert json.loads(capsys.readouterr().out)["label_source"] == "gaze"
    fit = write_fit(tmp_path, mixer="mixup")
    assert main(args + ["--label-source", "human", "--calibration", fit, "--out", str(tmp_path / "h")]) == 2
    assert "no curve for 'cutmix' (it has mixup)" in capsys.readouterr().err
    assert main(args + ["--label-source", "human", "--calibration", fit, "--calibration-mixer", "mixup",
                        "--out", str(tmp_path / "h")]) == 0
    assert json.loads(capsys.readouterr().out)["label_source"] == "human"
    assert json.loads((tmp_path / "h" / "config.json").read_text())["calibration_mixer"] == "mixup"


def test_make_label_source_refuses_what_it_cannot_use(tmp_path):
    with pytest.raises(ValueError, match="must be one of mixer, human, gaze"):
        make_label_source("people", K, 0.0)
    with pytest.raises(ValueError, match="needs --calibration"):
        make_label_source("human", K, 0.0)
    with pytest.raises(ValueError, match="with --label-source human only"):
        make_label_source("gaze", K, 0.0, calibration="fit.json")
