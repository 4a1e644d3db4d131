"""curves.png reads at a glance: no text box overlaps another, no top-5 below 10 classes, a chance line, whole
epochs on the x axis."""

from __future__ import annotations

import itertools

import pytest


def text_boxes(fig) -> list[tuple[str, object]]:
    """Every visible, non-empty text of a drawn figure with its window extent (titles, labels, ticks, legends)."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    hidden = set()  # tick labels of ticks outside the view: the locator proposes them, matplotlib does not draw them
    for ax in fig.axes:
        for axis, (lo, hi) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
            for loc, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels()):
                if not lo - 1e-9 <= loc <= hi + 1e-9:
                    hidden.add(id(label))
    return [(t.get_text(), t.get_window_extent(renderer)) for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and id(t) not in hidden]


def assert_no_text_overlap(fig) -> None:
    """No two text boxes intersect, and every box lies inside the figure."""
    boxes = text_boxes(fig)
    w, h = fig.canvas.get_width_height()
    for text, box in boxes:
        assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= w + 1 and box.y1 <= h + 1, f"{text!r} leaves the figure"
    for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), f"{ta!r} overlaps {tb!r}"


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


def test_the_overlap_check_sees_an_overlap():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2), layout="constrained")
    ax.set_title("title")
    ax.text(0.5, 1.03, "another", transform=ax.transAxes, ha="center")
    try:
        with pytest.raises(AssertionError, match="overlaps"):
            assert_no_text_overlap(fig)
    finally:
        plt.close(fig)
