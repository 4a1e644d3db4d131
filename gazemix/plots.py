"""Pictures of a scoring run: gap per mixer, label weight vs gaze weight, and the worst examples."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gazemix.scoring import Example  # noqa: E402


def plot_gap_bars(summary: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Horizontal bars of the mean label-gaze gap per mixer with bootstrap 95 % intervals."""
    df = summary.dropna(subset=["gap_mean"]).sort_values("gap_mean", ascending=False)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(df) + 1.4))
    err = np.vstack([df["gap_mean"] - df["gap_mean_lo"], df["gap_mean_hi"] - df["gap_mean"]])
    ax.barh(df["mixer"], df["gap_mean"], xerr=err, color="#4C72B0", ecolor="black", capsize=3)
    ax.set_xlabel("mean |label weight − gaze weight|  (95 % bootstrap interval)")
    ax.set_xlim(0, max(0.05, float(df["gap_mean_hi"].max()) * 1.1))
    ax.set_title(title or "Label-gaze gap per mixer (lower = labels agree with human gaze)")
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


def plot_gallery(examples: Sequence[Example], path: Path) -> Path:
    """Rows of the worst-gap examples per mixer, the replayed gaze overlaid on the mixed image."""
    names = list(dict.fromkeys(e.mixer for e in examples))
    per = max((sum(e.mixer == n for e in examples) for n in names), default=1)
    fig, axes = plt.subplots(len(names), per, figsize=(2.6 * per, 2.9 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        row = [e for e in examples if e.mixer == name]
        for c in range(per):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(row):
                continue
            e = row[c]
            if e.image is not None:
                ax.imshow(e.image.clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            heat = e.gaze.cpu().numpy()
            ax.imshow(heat, cmap="jet", alpha=0.45 if e.image is not None else 1.0)
            ax.set_title(f"{name}\nlabel {e.lam:.2f} · gaze {e.lam_gaze:.2f}", fontsize=8)
    fig.suptitle("Largest label-gaze gaps (own-image label weight vs own share of gaze)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
