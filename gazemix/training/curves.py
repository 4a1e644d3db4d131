"""``curves.png``: training and validation loss, and validation accuracy, per epoch, with chance for reference.

Top-5 accuracy is drawn only with 10 classes or more: with fewer, five guesses cover half the classes or more
and top-5 sits near 100 % whatever the model learned. Chance is ``100 / K`` % top-1 (a constant guess of one
class on balanced data). Epoch ticks are whole numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

__all__ = ["TOP5_MIN_CLASSES", "curves_figure", "write_curves"]

TOP5_MIN_CLASSES = 10


def curves_figure(rows: Sequence[dict[str, Any]], num_classes: int, title: str) -> Any:
    """The figure of :func:`write_curves` (returned so a caller or a test can inspect it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epoch = [int(float(r["epoch"])) for r in rows]
    col = lambda key: [float(r[key]) for r in rows]  # noqa: E731
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    a.plot(epoch, col("train_loss"), "o-", ms=3, label="train (mixed images, all loss terms)")
    a.plot(epoch, col("val_loss"), "o-", ms=3, label="validation (clean)")
    a.set(xlabel="epoch", ylabel="loss", title="Loss")
    a.legend(fontsize=8)
    b.plot(epoch, col("top1"), "o-", ms=3, label="top-1")
    if num_classes >= TOP5_MIN_CLASSES:
        b.plot(epoch, col("top5"), "o-", ms=3, label="top-5")
    b.axhline(100.0 / num_classes, color="0.4", ls="--", lw=1, label=f"chance top-1 ({100.0 / num_classes:.3g} %)")
    b.set(xlabel="epoch", ylabel="validation accuracy (%)", ylim=(0, 100), title="Validation accuracy")
    b.legend(fontsize=8, loc="lower right")
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(lw=0.4, alpha=0.5)
        if len(epoch) == 1:
            ax.set_xlim(epoch[0] - 1, epoch[0] + 1)
    fig.suptitle(title, fontsize=11)
    return fig


def write_curves(rows: Sequence[dict[str, Any]], path: Path, num_classes: int, title: str) -> None:
    """Draw :func:`curves_figure` into ``path`` (written whole: a temporary file renamed into place)."""
    import io

    import matplotlib.pyplot as plt

    from gazemix.outputs import write_file_atomic

    fig = curves_figure(rows, num_classes, title)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    write_file_atomic(path, buf.getvalue(), overwrite=True)
