"""curves.png reads at a glance: no text box overlaps another, no top-5 below 10 classes, a chance line, whole
epochs on the x axis."""

from __future__ import annotations

import pytest

from tests.layout import overlapping_texts, texts_outside


def assert_no_text_overlap(fig) -> None:
    """No two drawn texts overlap and none leaves the figure (:mod:`tests.layout`)."""
    assert overlapping_texts(fig) == [], overlapping_texts(fig)
    assert texts_outside(fig) == [], texts_outside(fig)


def rows(n_epochs: int, top1: float = 40.0) -> list[dict[str, float]]:
    return [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 1.5 / e + 0.2, "top1": min(99.0, top1 + 5 * e),
             "top5": min(100.0, top1 + 30 + e)} for e in range(1, n_epochs + 1)]


@pytest.mark.parametrize("num_classes, n_epochs", [(6, 7), (200, 30), (3, 1)])
def test_curves_layout(num_classes, n_epochs):
    import matplotlib.pyplot as plt

    from gazemix.training.curves import curves_figure

    fig = curves_figure(rows(n_epochs), num_classes, "deit_tiny_patch16_224 + tdattenmix, gaze labels on cub-gha")
    try:
        assert_no_text_overlap(fig)
        loss_ax, acc_ax = fig.axes
        legend = [t.get_text() for t in acc_ax.get_legend().get_texts()]
        assert ("top-5" in legend) == (num_classes >= 10)
        chance = [ln for ln in acc_ax.get_lines() if ln.get_label().startswith("chance")]
        assert len(chance) == 1 and chance[0].get_ydata()[0] == pytest.approx(100 / num_classes)
        for ax in (loss_ax, acc_ax):
            lo, hi = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert acc_ax.get_ylim() == (0, 100)
    finally:
        plt.close(fig)


def test_curves_png_is_written_whole(tmp_path):
    from gazemix.training.curves import write_curves

    from PIL import Image

    path = tmp_path / "curves.png"
    write_curves(rows(3), path, 6, "title")
    write_curves(rows(4), path, 6, "title")  # rewritten in place each epoch
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (1000, 420)
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary file left behind

