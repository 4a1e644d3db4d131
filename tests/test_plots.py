"""Every figure of a scoring run renders with no overlapping or clipped text."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from gazemix.plots import gallery_figure, gap_figure, lam_scatter_figure
from gazemix.scoring import Example
from tests.layout import overlapping_texts, texts_outside

NAMES = ["mixup", "cutmix", "fmix", "resizemix", "saliency_grafting", "gazemix", "tdattenmix", "splicemix", "switch"]


def _summary(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    gap = np.sort(rng.uniform(0, 0.4, n))
    gap[0] = 0.0
    ceiling = gap / 3
    return pd.DataFrame({"mixer": NAMES[:n], "gap_mean": gap, "gap_mean_lo": gap * 0.95, "gap_mean_hi": gap * 1.05,
                         "ceiling_mean": ceiling, "ceiling_mean_lo": ceiling * 0.9, "ceiling_mean_hi": ceiling * 1.1,
                         "circular": [False] * (n - 1) + [True]})


def _samples(names: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    k = 50
    return pd.DataFrame({"mixer": np.repeat(names, k), "lam_label": rng.random(k * len(names)),
                         "lam_gaze": rng.random(k * len(names)), "defined": True})


def _check(fig) -> None:
    try:
        assert overlapping_texts(fig) == []
        assert texts_outside(fig) == []
    finally:
        plt.close(fig)


@pytest.mark.parametrize("n", [1, 4, 9])
def test_gap_figure_layout(n):
    fig = gap_figure(_summary(n), title="Label-gaze gap per mixer — demo, 1000 samples each")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[-1].startswith(NAMES[0]) and any("(circular)" in s for s in labels)
    _check(fig)


@pytest.mark.parametrize("n", [1, 5, 9])
def test_lam_scatter_layout(n):
    _check(lam_scatter_figure(_samples(NAMES[:n])))


@pytest.mark.parametrize(("mixers", "per"), [(1, 1), (3, 4), (8, 4)])
def test_gallery_layout_and_colour_bars(mixers, per):
    hw = 32
    examples = [Example(NAMES[m], "a", "b", 0.7, 0.2, 0.5, torch.rand(3, hw, hw), torch.rand(hw, hw),
                        torch.rand(hw, hw)) for m in range(mixers) for _ in range(per)]
    fig = gallery_figure(examples)
    bar_labels = [ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()]
    assert any("own image's gaze" in s for s in bar_labels) and any("partner's gaze" in s for s in bar_labels)
    _check(fig)
