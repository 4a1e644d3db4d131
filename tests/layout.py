"""Layout checks for figures: no two pieces of text overlap once the figure is drawn."""

from __future__ import annotations

from itertools import combinations

from matplotlib.figure import Figure
from matplotlib.text import Text


def visible_texts(fig: Figure) -> list[Text]:
    """Every drawn, non-empty text of ``fig``: titles, labels, tick labels inside the view, legends, colour bars."""
    fig.canvas.draw()
    drawn_ticks = set()
    for ax in fig.axes:
        if not ax.axison:
            continue
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            drawn_ticks |= {id(t.label1) for t in axis.get_major_ticks() if lo - 1e-9 <= t.get_loc() <= hi + 1e-9}
    texts = []
    for t in fig.findobj(Text):
        if not t.get_visible() or not t.get_text().strip():
            continue
        is_tick = any(t in (*ax.get_xticklabels(), *ax.get_yticklabels()) for ax in fig.axes)
        if is_tick and id(t) not in drawn_ticks:
            continue
        texts.append(t)
    return texts


def overlapping_texts(fig: Figure, pad: float = 0.5) -> list[tuple[str, str]]:
    """Pairs of texts whose drawn boxes overlap (by more than ``pad`` pixels each way)."""
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in visible_texts(fig)]
    hits = []
    for (a, ba), (b, bb) in combinations(boxes, 2):
        overlap_x = min(ba.x1, bb.x1) - max(ba.x0, bb.x0)
        overlap_y = min(ba.y1, bb.y1) - max(ba.y0, bb.y0)
        if overlap_x > pad and overlap_y > pad:
            hits.append((a, b))
    return hits


def texts_outside(fig: Figure) -> list[str]:
    """Texts drawn (partly) outside the figure's canvas."""
    renderer = fig.canvas.get_renderer()
    w, h = fig.canvas.get_width_height()
    out = []
    for t in visible_texts(fig):
        box = t.get_window_extent(renderer)
        if box.x0 < -1 or box.y0 < -1 or box.x1 > w + 1 or box.y1 > h + 1:
            out.append(t.get_text())
    return out
