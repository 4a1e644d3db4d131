"""The default `gazemix score` scores every mixer: demo models trained once and cached, learned mixers on request."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

import gazemix.demo_models as demo_models
from gazemix.cli import main
from gazemix.registry import list_mixers


@pytest.fixture
def small_demo_models(monkeypatch):
    """Demo models trained on a few images for one epoch: the wiring, not the accuracy, is under test here."""
    small = dataclasses.replace(demo_models.DemoModelConfig(), train_images=96, val_images=32, eval_images=32,
                                eval_size=64, batch_size=32, cnn_epochs=1, vit_epochs=1)
    monkeypatch.setattr(demo_models, "DemoModelConfig", lambda: small)
    return small


def test_default_run_scores_every_registered_mixer(tmp_path, capsys, small_demo_models):
    args = ["score", "--pairs", "16", "--n-images", "24", "--img-size", "64", "--batch-size", "8", "--worst", "0",
            "--quiet", "--cache", str(tmp_path / "cache"), "--train-learned"]
    assert main(args + ["--out", str(tmp_path / "first")]) == 0
    first_err = capsys.readouterr().err
    assert "training the demo models once" in first_err and "held-out top-1" in first_err
    scores = pd.read_csv(tmp_path / "first" / "scores.csv")
    registered = {m.name for m in list_mixers()}
    assert registered <= set(scores["mixer"]), registered - set(scores["mixer"])
    assert {"puzzlemix@gaze", "saliency_grafting@gaze"} <= set(scores["mixer"])
    summary = (tmp_path / "first" / "summary.md").read_text()
    assert "demo CNN" in summary and "demo ViT" in summary and "## Skipped" not in summary
    # a second run loads the cached models and mixers instead of training them
    assert main(args + ["--out", str(tmp_path / "second"), "--mixers", "tdattenmix,automix,cutmix"]) == 0
    second_err = capsys.readouterr().err
    assert "training the" not in second_err and "loaded from the cache" in second_err


def test_without_a_model_the_model_mixers_are_skipped_with_their_reason(tmp_path, capsys):
    rc = main(["score", "--model", "none", "--mixers", "cutmix,transmix,automix,puzzlemix", "--pairs", "8",
               "--n-images", "12", "--img-size", "32", "--quiet", "--out", str(tmp_path / "run")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "transmix (needs a ViT model" in printed and "automix (has no trained mixer.pt: add --train-learned" in printed
    assert "puzzlemix (needs a classifier model" in printed
