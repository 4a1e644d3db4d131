"""Pictures of a scoring run: gap per mixer, label weight vs gaze weight, and the worst examples.

Each picture has a builder that returns the :class:`~matplotlib.figure.Figure` (``*_figure``, what the tests
check for layout) and a ``plot_*`` function that builds, saves and closes it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import BinaryIO, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from gazemix.scoring import Example  # noqa: E402

OWN_COLOUR = (0.12, 0.47, 0.71)
PARTNER_COLOUR = (1.0, 0.5, 0.05)


def save_figure(fig: Figure, path: Path | BinaryIO, dpi: int = 110) -> Path | BinaryIO:
    """Save ``fig`` as PNG to ``path`` (a file name or a binary file object) and close it."""
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def gap_figure(summary: pd.DataFrame, title: str = "") -> Figure:
    """Mean label-gaze gap per mixer (dot, 95 % interval) beside the human ceiling (grey band) of the same mixes.

    Dots rather than bars, so a gap of 0 is a visible dot at 0 and not a missing bar. Circular rows (graded
    on the gaze that guided them) are marked.
    """
    df = summary.dropna(subset=["gap_mean"]).sort_values("gap_mean", ascending=False).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(df) + 1.9))
    y = np.arange(len(df))
    if "ceiling_mean" in df and df["ceiling_mean"].notna().any():
        c = df["ceiling_mean"].to_numpy()
        ax.barh(y, c, height=0.6, color="#BBBBBB", label="human ceiling (split-half observers)")
        ax.errorbar(c, y, xerr=np.vstack([c - df["ceiling_mean_lo"], df["ceiling_mean_hi"] - c]), fmt="none",
                    ecolor="#777777", capsize=2, lw=0.8)
    g = df["gap_mean"].to_numpy()
    ax.errorbar(g, y, xerr=np.vstack([g - df["gap_mean_lo"], df["gap_mean_hi"] - g]), fmt="o", color="#C44E52",
                ecolor="black", capsize=3, ms=5, label="mixer's label vs held-out gaze")
    circular = df["circular"] if "circular" in df else pd.Series(False, index=df.index)
    ax.set_yticks(y, [f"{m} (circular)" if bool(c) else m for m, c in zip(df["mixer"], circular)])
    ax.set_xlabel("mean |label weight − gaze weight|  (95 % bootstrap interval)")
    right = max(0.05, float(np.nanmax(df["gap_mean_hi"])) * 1.1)
    ax.set_xlim(-0.02 * right, right)  # a gap of 0 stays a whole dot
    ax.set_ylim(-0.7, len(df) - 0.3)
    ax.grid(axis="x", lw=0.4, alpha=0.5)
    ax.set_title(title or "Label-gaze gap per mixer (lower = labels agree with human gaze)", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))
    return fig


def plot_gap_bars(summary: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Save :func:`gap_figure`."""
    return save_figure(gap_figure(summary, title), path)


def lam_scatter_figure(samples: pd.DataFrame, max_points: int = 2000) -> Figure:
    """One panel per mixer: the mixer's own label weight against the gaze-derived weight."""
    names = list(dict.fromkeys(samples["mixer"]))
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(3.2 * cols, 6.0), 3.2 * rows + 0.5), squeeze=False)
    for ax, name in zip(axes.flat, names):
        df = samples[(samples["mixer"] == name) & samples["defined"]]
        df = df.sample(min(len(df), max_points), random_state=0) if len(df) else df
        ax.scatter(df["lam_label"], df["lam_gaze"], s=4, alpha=0.35, color="#DD8452", linewidths=0)
        ax.plot([0, 1], [0, 1], color="black", lw=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1))
        ax.set_title(name, fontsize=9)
        ax.set_xticks([0, 0.5, 1])
        ax.set_yticks([0, 0.5, 1])
        ax.tick_params(labelsize=7)
        ax.set_xlabel("label weight (own)", fontsize=8)
        ax.set_ylabel("gaze weight (own)", fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("Label weight vs gaze-derived weight (diagonal = agreement)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_lam_scatter(samples: pd.DataFrame, path: Path, max_points: int = 2000) -> Path:
    """Save :func:`lam_scatter_figure`."""
    return save_figure(lam_scatter_figure(samples, max_points), path, dpi=100)


def _ramp(colour: tuple[float, float, float]) -> matplotlib.colors.Colormap:
    """The overlay's colour at each relative density, as drawn over white (the colour bars' legend)."""
    alphas = np.sqrt(np.linspace(0, 1, 64))[:, None] * 0.9
    return matplotlib.colors.ListedColormap(1 - alphas * (1 - np.asarray(colour)[None, :]))


def _two_colour_overlay(own: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """RGBA overlay: the own image's replayed gaze in blue, the partner's in orange, opacity by density."""
    scale = max(float(own.max()), float(partner.max()), 1e-12)
    a_own, a_partner = np.clip(own / scale, 0, 1), np.clip(partner / scale, 0, 1)
    rgba = np.zeros(own.shape + (4,))
    total = np.maximum(a_own + a_partner, 1e-12)
    blue, orange = np.array(OWN_COLOUR), np.array(PARTNER_COLOUR)
    rgba[..., :3] = (a_own[..., None] * blue + a_partner[..., None] * orange) / total[..., None]
    rgba[..., 3] = np.sqrt(np.clip(a_own + a_partner, 0, 1)) * 0.9  # square root: the tails stay visible
    return np.clip(rgba, 0, 1)


def gallery_figure(examples: Sequence[Example]) -> Figure:
    """Rows of the worst-gap examples per mixer: the mixed image with the replayed gaze of each source.

    The own image's gaze that stays visible is drawn in blue, the partner's gaze that is shown in orange, with
    opacity proportional to density (relative to each panel's peak; colour bars below). Each panel's caption
    gives the label weight and the gaze weight of the own image.
    """
    names = list(dict.fromkeys(e.mixer for e in examples))
    per = max((sum(e.mixer == n for e in examples) for n in names), default=1)
    top, row_h, bottom = 1.05, 2.85, 1.05  # inches: 2-line suptitle + first captions; panel + caption; colour bars
    width, height = max(2.6 * per, 6.0), top + row_h * len(names) + bottom
    fig = plt.figure(figsize=(width, height))
    grid = fig.add_gridspec(len(names), per, left=0.02, right=0.98, top=1 - top / height, bottom=bottom / height,
                            hspace=0.45 / (row_h - 0.45), wspace=0.06)
    for r, name in enumerate(names):
        row = [e for e in examples if e.mixer == name]
        for c in range(per):
            ax = fig.add_subplot(grid[r, c])
            ax.axis("off")
            if c >= len(row):
                continue
            e = row[c]
            if e.image is not None and e.image.shape[0] == 3:  # dimmed, so the gaze colours stand out
                ax.imshow(0.25 + 0.5 * e.image.clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            else:
                ax.imshow(np.zeros(tuple(e.own_gaze.shape)), cmap="gray", vmin=0, vmax=1)
            ax.imshow(_two_colour_overlay(e.own_gaze.cpu().numpy(), e.partner_gaze.cpu().numpy()))
            ax.set_title(f"{name}\nlabel {e.lam:.2f} · gaze {e.lam_gaze:.2f}", fontsize=8)
    bar_w, bar_h = 0.36, 0.12 / height
    for k, (colour, label) in enumerate(((OWN_COLOUR, "own image's gaze kept"),
                                         (PARTNER_COLOUR, "partner's gaze shown"))):
        cax = fig.add_axes((0.08 + 0.48 * k, 0.62 / height, bar_w, bar_h))
        bar = fig.colorbar(matplotlib.cm.ScalarMappable(cmap=_ramp(colour)), cax=cax, orientation="horizontal")
        bar.set_label(f"{label} (density / panel peak)", fontsize=8)
        bar.set_ticks([0, 0.5, 1])
        bar.ax.tick_params(labelsize=7)
    fig.suptitle("Largest label-gaze gaps\n(own-image label weight vs own share of gaze)", fontsize=10,
                 y=1 - 0.12 / height, va="top")
    return fig


def plot_gallery(examples: Sequence[Example], path: Path) -> Path:
    """Save :func:`gallery_figure`."""
    return save_figure(gallery_figure(examples), path, dpi=90)


def mix_grid_figure(images: "torch.Tensor", captions: Sequence[str], maps: "torch.Tensor | None" = None,
                    title: str = "") -> Figure:
    """A grid of mixed images ``(K, 3, H, W)``, each with its caption above it (two lines at most).

    ``maps`` ``(K, S, H, W)``: the replayed gaze of each source, drawn as in :func:`gallery_figure` (the first
    source, the own image, in blue; the others in orange).
    """
    k = images.shape[0]
    cols = min(4, k)
    rows = math.ceil(k / cols)
    top, row_h, bottom = 0.6, 2.9, 0.15
    height = top + row_h * rows + bottom
    fig = plt.figure(figsize=(max(2.7 * cols, 5.5), height))
    grid = fig.add_gridspec(rows, cols, left=0.02, right=0.98, top=1 - top / height, bottom=bottom / height,
                            hspace=0.5 / (row_h - 0.5), wspace=0.06)
    for j in range(rows * cols):
        ax = fig.add_subplot(grid[j // cols, j % cols])
        ax.axis("off")
        if j >= k:
            continue
        if maps is not None:
            ax.imshow(0.25 + 0.5 * images[j].clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            ax.imshow(_two_colour_overlay(maps[j, 0].cpu().numpy(), maps[j, 1:].sum(dim=0).cpu().numpy()))
        else:
            ax.imshow(images[j].clamp(0, 1).permute(1, 2, 0).cpu().numpy())
        ax.set_title(_wrap(captions[j], 34), fontsize=8)
    fig.suptitle(title, fontsize=10, y=1 - 0.1 / height, va="top")
    return fig


def _wrap(text: str, width: int) -> str:
    import textwrap

    lines = textwrap.wrap(text, width)
    return "\n".join(lines[:2]) + (" …" if len(lines) > 2 else "")
