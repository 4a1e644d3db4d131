"""The demo comparison benchmark: a tiny ``--quick`` run writes its tables and plot, and its measures are right.

Nothing here asserts a training outcome or a timing (the benchmark's full run is committed under
benchmarks/results/).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.demo_comparison import (METRICS, expected_calibration_error, main, occluders, summarise_runs,
                                        t_interval)


def test_quick_run_writes_every_output(tmp_path, capsys):
    out = tmp_path / "cmp" / "demo_comparison"
    methods = ["none", "cutmix", "tdattenmix", "gazemix"]
    assert main(["--quick", "--methods", *methods, "--out", str(out)]) == 0
    assert "| cutmix |" in capsys.readouterr().out
    summary = pd.read_csv(f"{out}.csv")
    runs = pd.read_csv(f"{out}_runs.csv")
    assert list(summary["method"]) == methods and (summary["seeds"] == 2).all()
    assert len(runs) == 2 * len(methods) and set(runs["seed"]) == {0, 1}
    for metric in METRICS:
        assert {metric, f"{metric}_lo", f"{metric}_hi", f"{metric}_vs_cutmix"} <= set(summary.columns)
    assert runs[["clean_top1", "occluded_top1"]].apply(lambda c: c.between(0, 100)).all().all()
    assert runs["ece"].between(0, 1).all()
    gap = runs.set_index("method")["gap"]
    assert gap[["none"]].isna().all() and gap[["cutmix", "tdattenmix", "gazemix"]].between(0, 1).all()
    assert math.isnan(summary.set_index("method").loc["cutmix", "clean_top1_vs_cutmix"])  # the reference itself
    assert {"date", "machine", "command"} <= set(summary.columns)
    assert (tmp_path / "cmp" / "demo_comparison.png").stat().st_size > 0
    text = (tmp_path / "cmp" / "demo_comparison.md").read_text()
    assert "SYNTHETIC" in text and "load average" in text
    assert not list((tmp_path / "cmp").glob("*.tmp"))  # written whole


def test_bad_options_exit_2(tmp_path, capsys):
    assert main(["--quick", "--seeds", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--methods", "nosuch", "--out", str(tmp_path / "x")])


def test_t_interval_and_paired_differences():
    mean, lo, hi = t_interval(np.array([1.0, 2.0, 3.0]))
    assert mean == 2.0 and hi - mean == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)  # t(0.975, 2)
    assert math.isnan(t_interval(np.array([5.0]))[1])
    runs = pd.DataFrame({"method": ["cutmix"] * 3 + ["mixup"] * 3, "seed": [0, 1, 2] * 2, "mixer": "m",
                         "options": "{}", "train_seconds": 1.0, "gap": 0.1,
                         **{m: [10.0, 20.0, 30.0, 11.0, 22.0, 33.0] for m in METRICS}})
    row = summarise_runs(runs).set_index("method").loc["mixup"]
    assert row["clean_top1_vs_cutmix"] == pytest.approx(2.0)  # differences 1, 2, 3 paired by seed
    assert row["clean_top1_vs_cutmix_lo"] == pytest.approx(2.0 - 4.302653 / math.sqrt(3), rel=1e-5)


def test_ece_on_known_cases():
    labels = torch.tensor([0, 1, 0, 1])
    perfect = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, labels) == pytest.approx(0.0)
    # confidence 0.9 everywhere, half right: |0.5 - 0.9| in one bin
    probs = torch.tensor([[0.9, 0.1]] * 4)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)
    # two bins: 0.55 (1 of 2 right) and 0.95 (2 of 2 right): (2 |0.5 - 0.55| + 2 |1 - 0.95|) / 4
    probs = torch.tensor([[0.55, 0.45], [0.45, 0.55], [0.95, 0.05], [0.05, 0.95]])
    assert expected_calibration_error(probs, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.05)


def test_occluders_cover_a_quarter_to_a_half_and_are_fixed():
    boxes = occluders(500, 64)
    area = boxes.float().mean(dim=(1, 2, 3))
    assert float(area.min()) >= 0.23 and float(area.max()) <= 0.52  # rounding to whole pixels
    assert torch.equal(boxes, occluders(500, 64))
    rows, cols = boxes[:, 0].any(2).sum(1), boxes[:, 0].any(1).sum(1)
    assert torch.equal(rows * cols, boxes.sum(dim=(1, 2, 3)))  # one rectangle each


def test_committed_figure_reads(tmp_path):
    """The committed run's figure, redrawn: no text overlaps another or leaves the canvas."""
    from pathlib import Path

    from benchmarks.demo_comparison import plot
    from tests.layout import overlapping_texts, texts_outside

    runs = pd.read_csv(Path(__file__).parents[1] / "benchmarks" / "results" / "demo_comparison_runs.csv")
    summary = summarise_runs(runs)
    title = "gazemix demo comparison (" + "a long settings line " * 12 + ")"
    fig = plot(runs, summary, title)
    assert overlapping_texts(fig) == [] and texts_outside(fig) == []
