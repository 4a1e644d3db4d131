"""Pictures of a scoring run: gap per mixer, label weight vs gaze weight, and the worst examples."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.patches

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gazemix.scoring import Example  # noqa: E402


def plot_gap_bars(summary: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Mean label-gaze gap per mixer (dot, 95 % interval) beside the human ceiling (grey band) of the same mixes.

    Dots rather than bars, so a gap of 0 is a visible dot at 0 and not a missing bar. Circular rows (graded
    on the gaze that guided them) are marked.
    """
    df = summary.dropna(subset=["gap_mean"]).sort_values("gap_mean", ascending=False).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(df) + 1.6))
    y = np.arange(len(df))
    has_ceiling = "ceiling_mean" in df and df["ceiling_mean"].notna().any()
    if has_ceiling:
        c = df["ceiling_mean"].to_numpy()
        ax.barh(y, c, height=0.6, color="#BBBBBB", label="human ceiling (split-half observers)")
        ax.errorbar(c, y, xerr=np.vstack([c - df["ceiling_mean_lo"], df["ceiling_mean_hi"] - c]), fmt="none",
                    ecolor="#777777", capsize=2, lw=0.8)
    g = df["gap_mean"].to_numpy()
    ax.errorbar(g, y, xerr=np.vstack([g - df["gap_mean_lo"], df["gap_mean_hi"] - g]), fmt="o", color="#C44E52",
                ecolor="black", capsize=3, ms=5, label="mixer's label vs held-out gaze")
    labels = [f"{m} (circular)" if bool(circ) else m
              for m, circ in zip(df["mixer"], df.get("circular", pd.Series(False, index=df.index)))]
    ax.set_yticks(y, labels)
    ax.set_xlabel("mean |label weight − gaze weight|  (95 % bootstrap interval)")
    right = max(0.05, float(np.nanmax(df["gap_mean_hi"])) * 1.1)
    ax.set_xlim(-0.02 * right, right)  # a gap of 0 stays a whole dot
    ax.set_ylim(-0.7, len(df) - 0.3)
    ax.grid(axis="x", lw=0.4, alpha=0.5)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09 - 0.5 / (len(df) + 3)), ncol=2, fontsize=8,
              frameon=False)
    ax.set_title(title or "Label-gaze gap per mixer (lower = labels agree with human gaze)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_lam_scatter(samples: pd.DataFrame, path: Path, max_points: int = 2000) -> Path:
    """One panel per mixer: the mixer's own label weight against the gaze-derived weight."""
    names = list(dict.fromkeys(samples["mixer"]))
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        df = samples[(samples["mixer"] == name) & samples["defined"]]
        df = df.sample(min(len(df), max_points), random_state=0) if len(df) else df
        ax.scatter(df["lam_label"], df["lam_gaze"], s=4, alpha=0.35, color="#DD8452", linewidths=0)
        ax.plot([0, 1], [0, 1], color="black", lw=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=name)
        ax.set_xlabel("label weight (own)", fontsize=8)
        ax.set_ylabel("gaze weight (own)", fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("Label weight vs gaze-derived weight (diagonal = agreement)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _two_colour_overlay(own: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """RGBA overlay: the own image's replayed gaze in blue, the partner's in orange, opacity by density."""
    scale = max(float(own.max()), float(partner.max()), 1e-12)
    a_own, a_partner = np.clip(own / scale, 0, 1), np.clip(partner / scale, 0, 1)
    rgba = np.zeros(own.shape + (4,))
    total = np.maximum(a_own + a_partner, 1e-12)
    blue, orange = np.array([0.12, 0.47, 0.71]), np.array([1.0, 0.5, 0.05])
    rgba[..., :3] = (a_own[..., None] * blue + a_partner[..., None] * orange) / total[..., None]
    rgba[..., 3] = np.clip(a_own + a_partner, 0, 1) ** 0.6 * 0.85
    return np.clip(rgba, 0, 1)


def plot_gallery(examples: Sequence[Example], path: Path) -> Path:
    """Rows of the worst-gap examples per mixer: the mixed image with the replayed gaze of each source.

    The own image's gaze that stays visible is drawn in blue, the partner's gaze that is shown in orange;
    each panel's caption gives the label weight and the gaze weight of the own image.
    """
    names = list(dict.fromkeys(e.mixer for e in examples))
    per = max((sum(e.mixer == n for e in examples) for n in names), default=1)
    fig, axes = plt.subplots(len(names), per, figsize=(2.6 * per, 2.9 * len(names) + 0.8), squeeze=False)
    for r, name in enumerate(names):
        row = [e for e in examples if e.mixer == name]
        for c in range(per):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(row):
                continue
            e = row[c]
            if e.image is not None and e.image.shape[0] == 3:
                ax.imshow(e.image.clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            else:
                ax.imshow(np.zeros(tuple(e.own_gaze.shape)), cmap="gray", vmin=0, vmax=1)
            ax.imshow(_two_colour_overlay(e.own_gaze.cpu().numpy(), e.partner_gaze.cpu().numpy()))
            ax.set_title(f"{name}\nlabel {e.lam:.2f} · gaze {e.lam_gaze:.2f}", fontsize=8)
    handles = [matplotlib.patches.Patch(color=(0.12, 0.47, 0.71), label="own image's gaze kept"),
               matplotlib.patches.Patch(color=(1.0, 0.5, 0.05), label="partner's gaze shown")]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("Largest label-gaze gaps (own-image label weight vs own share of gaze)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
