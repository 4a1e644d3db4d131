"""What does training with each mixer do to a model? A seeded comparison on the synthetic demo set.

Usage:
    python -m benchmarks.demo_comparison                  # 8 methods x 5 seeds (about 25 min on 2 CPU cores)
    python -m benchmarks.demo_comparison --quick --out /tmp/cmp/demo_comparison   # smoke test, seconds
    python -m benchmarks.demo_comparison --device cuda --seeds 10

Design. Every method trains the same network from scratch with the same recipe; only the mixer differs:
the demo ViT (:mod:`gazemix.demo_models`: 4 blocks, width 64, 8 x 8 tokens, 64-px input) with
:func:`gazemix.training.train` (AdamW, one warm-up epoch then cosine, label smoothing 0.1, random-resized crops of
60-100 % of the area, flips), ``--epochs`` epochs over ``--train-images`` demo images with their simulated gaze.
Methods: ``none``, ``mixup``, ``cutmix``, ``saliencymix`` (OpenCV fine-grained saliency), ``transmix`` (class-token
attention relabelling), ``tdattenmix`` (its top-down map read from the model being trained; official recipe:
Mixup/square switch 0.5, label ½ area + ½ attention, consistency and fine-grained losses), ``tdattenmix_gaze``
(the same with the simulated gaze as its top-down map, ``gaze_weight=1``) and ``gazemix`` (gaze-only squares on
every batch). Each seed ``s`` draws its own training set (demo seed ``s + 1,000,003``), initialisation, order and
mixing; all methods of a seed share them, so differences are paired by seed.

Measures, on one fixed held-out test set (``--test-images`` demo images, the same for every method and seed):

* clean top-1 (%);
* top-1 under occlusion: a mid-grey (0.5) box covering 25-50 % of the image (area uniform in that range, aspect
  log-uniform in [1/2, 2], position uniform), drawn once per test image and the same for every run; also on the
  subset of test images whose object stays at least half visible (``occluded_visible_top1``: an object that is
  mostly hidden cannot be recognised by any method, which pulls every method towards chance);
* ECE, 15 equal-width bins of the max-softmax confidence: ``sum_b |acc_b - conf_b| n_b / n`` (Guo et al.,
  ICML 2017), on the clean and on the occluded images;
* the label-gaze gap of the method's labels: :func:`gazemix.scoring.score_mixers` on the test set (its images and
  simulated gaze split into guide and held-out observers, ``--pairs`` pairs, seed ``s``), with the trained model
  of that run as the context of the model-driven mixers (TransMix's attention, TdAttenMix's top-down map); mean
  ``|lam - lam_gaze|`` against the held-out observers. ``none`` makes no mixed images, so it has no gap.

Statistics over seeds: the mean with a 95 % Student-t interval (``t_{0.975, n-1} sd / sqrt(n)``, assuming roughly
normal seed-to-seed variation), and the paired difference to CutMix (per seed, method minus CutMix; its mean and
t-interval). An interval of a difference that contains 0 means the seeds cannot tell the two apart.

The demo set is synthetic (:mod:`gazemix.demo`): this is a sanity comparison that re-runs in minutes, not evidence
about real data. Outputs (written whole at the end, each to a temporary name then renamed): ``<out>.csv`` (one row
per method), ``<out>_runs.csv`` (one row per method and seed), ``<out>.png`` and ``<out>.md`` (table, machine,
date, load, command).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = ["METHODS", "Settings", "expected_calibration_error", "main", "occluders", "summarise_runs",
           "t_interval"]

METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("none", {}),
    "mixup": ("mixup", {}),
    "cutmix": ("cutmix", {}),
    "saliencymix": ("saliencymix", {}),
    "transmix": ("transmix", {}),
    "tdattenmix": ("tdattenmix", {}),
    "tdattenmix_gaze": ("tdattenmix", {"gaze_weight": 1.0}),
    "gazemix": ("gazemix", {}),
}
REFERENCE = "cutmix"
TEST_SEED = 4_000_003  # demo seed of the test set (no training set of any seed draws it)
OCCLUDER_SEED = 12345
METRICS = ("clean_top1", "occluded_top1", "occluded_visible_top1", "ece", "ece_occluded")


@dataclass(frozen=True)
class Settings:
    """One comparison's settings (the defaults fit 30 minutes on two CPU cores; ``--quick`` for smoke tests)."""

    seeds: int = 5
    train_images: int = 4096
    test_images: int = 1024
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    pairs: int = 1000
    device: str = "cpu"


QUICK = Settings(seeds=2, train_images=64, test_images=64, epochs=1, batch_size=32, pairs=32)


# ----------------------------------------------------------------------------------------------- measures
def t_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval of ``values`` (NaN bounds for fewer than two finite values)."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE of ``probs (N, K)``: max-softmax confidence in ``bins`` equal-width bins over (0, 1],
    ``sum_b |accuracy_b - mean confidence_b| n_b / N`` (Guo et al., ICML 2017)."""
    conf, pred = probs.max(dim=1)
    hit = (pred == labels).double()
    which = (conf.double() * bins).ceil().clamp(1, bins).long() - 1  # (k/bins, (k+1)/bins] -> bin k
    n = torch.bincount(which, minlength=bins).double()
    acc = torch.bincount(which, weights=hit, minlength=bins)
    mean_conf = torch.bincount(which, weights=conf.double(), minlength=bins)
    return float((acc - mean_conf).abs().sum() / max(len(labels), 1))


def occluders(n: int, size: int, seed: int = OCCLUDER_SEED) -> torch.Tensor:
    """``(n, 1, size, size)`` boolean boxes: area 25-50 % of the image, aspect log-uniform in [1/2, 2]."""
    g = torch.Generator().manual_seed(seed)
    area = (0.25 + 0.25 * torch.rand(n, generator=g)) * size * size
    aspect = torch.exp((2 * torch.rand(n, generator=g) - 1) * math.log(2.0))
    h = (area * aspect).sqrt().round().clamp(1, size)
    w = (area / h).round().clamp(1, size)
    top = (torch.rand(n, generator=g) * (size - h + 1)).floor()
    left = (torch.rand(n, generator=g) * (size - w + 1)).floor()
    r = torch.arange(size).view(1, -1, 1)
    c = torch.arange(size).view(1, 1, -1)
    box = (r >= top.view(-1, 1, 1)) & (r < (top + h).view(-1, 1, 1)) & (c >= left.view(-1, 1, 1)) & (c < (left + w).view(-1, 1, 1))
    return box.unsqueeze(1)


@torch.no_grad()
def _predict(model: torch.nn.Module, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model(images[i:i + batch]).float().softmax(1) for i in range(0, len(images), batch)])


# ----------------------------------------------------------------------------------------------- one run
def _run(method: str, seed: int, s: Settings, data: Any, test: Any, scoring: Any, occluded: torch.Tensor,
         visible: torch.Tensor, workdir: Path) -> dict:
    from gazemix.attention.vit import model_context
    from gazemix.demo_models import VIT_NAME, RESOLUTION, build_demo_model, vit_patch_size
    from gazemix.scoring import ModelContext, build_mixers, score_mixers, summarise
    from gazemix.training import TrainConfig, train
    from gazemix.training.checkpoint import load_checkpoint

    mixer, options = METHODS[method]
    out = workdir / f"{method}-{seed}"
    cfg = TrainConfig(data="demo", model=VIT_NAME, mixer=mixer, mixer_options=dict(options), epochs=s.epochs,
                      batch_size=s.batch_size, img_size=RESOLUTION, out=str(out), seed=seed, device=s.device, lr=s.lr,
                      warmup_epochs=1 if s.epochs > 1 else 0, weight_decay=0.05, label_smoothing=0.1, drop_path=0.0,
                      crop_scale=(0.6, 1.0), workers=0, quiet=True)
    t0 = time.perf_counter()
    train(cfg, data=data)
    seconds = time.perf_counter() - t0
    model = build_demo_model("vit", RESOLUTION)
    model.load_state_dict(load_checkpoint(out / "last.pt")["model"])
    model.eval()
    clean, occl = _predict(model, test.images), _predict(model, occluded)
    row = {"method": method, "seed": seed, "mixer": mixer, "options": str(options),
           "clean_top1": 100.0 * float((clean.argmax(1) == test.labels).double().mean()),
           "occluded_top1": 100.0 * float((occl.argmax(1) == test.labels).double().mean()),
           "occluded_visible_top1": 100.0 * float((occl.argmax(1) == test.labels)[visible].double().mean()),
           "ece": expected_calibration_error(clean, test.labels),
           "ece_occluded": expected_calibration_error(occl, test.labels), "train_seconds": seconds}
    if mixer == "none":
        row.update(gap=math.nan, gap_n=0)
        return row
    opts = {**options, "patch_size": vit_patch_size(RESOLUTION)} if mixer in ("tdattenmix", "gazemix") else options
    models = {"vit": ModelContext("vit", model_context(model), ("model", "attention", "logits"), "the trained model")}
    built, skipped = build_mixers([mixer], num_classes=len(scoring.class_names), seed=seed, has_images=True,
                                  models=models, mixer_opts={mixer: opts})
    if skipped:
        raise RuntimeError(f"{method} could not be built for scoring: {skipped}")
    scored = score_mixers({method: built[mixer]}, scoring, pairs=s.pairs, seed=seed, models=models, progress=False)
    if scored.skipped or scored.errors:
        raise RuntimeError(f"{method} could not be scored: {scored.skipped or scored.errors}")
    summary = summarise(scored.samples, n_boot=200, seed=seed).iloc[0]
    row.update(gap=float(summary["gap_mean"]), gap_n=int(summary["n"]) - int(summary["undefined"]))
    return row


# ----------------------------------------------------------------------------------------------- summary
def summarise_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per method: each metric's mean and 95 % t-interval over seeds, its paired difference to CutMix,
    and the label-gaze gap's mean and interval."""
    ref = runs[runs["method"] == REFERENCE].set_index("seed") if REFERENCE in set(runs["method"]) else None
    rows = []
    for method, df in runs.groupby("method", sort=False):
        row: dict[str, Any] = {"method": method, "mixer": df["mixer"].iloc[0], "options": df["options"].iloc[0],
                               "seeds": len(df)}
        for metric in METRICS + ("gap",):
            row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"] = t_interval(df[metric].to_numpy())
        for metric in METRICS:
            if ref is None or method == REFERENCE:
                diff = np.array([])
            else:
                paired = df.set_index("seed")[metric].align(ref[metric], join="inner")
                diff = (paired[0] - paired[1]).to_numpy()
            key = f"{metric}_vs_{REFERENCE}"
            row[key], row[f"{key}_lo"], row[f"{key}_hi"] = t_interval(diff)
        row["train_minutes"] = float(df["train_seconds"].mean() / 60)
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(mean: float, lo: float, hi: float, digits: int = 1) -> str:
    if not math.isfinite(mean):
        return "—"
    if not math.isfinite(lo):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def markdown(summary: pd.DataFrame, header: list[str]) -> str:
    cols = ["method", "clean top-1 %", "occluded top-1 %", "occluded, object ≥ ½ visible", "ECE", "ECE occluded",
            f"Δ clean vs {REFERENCE}", f"Δ occluded vs {REFERENCE}", f"Δ occluded ½ visible vs {REFERENCE}",
            f"Δ ECE vs {REFERENCE}", "label-gaze gap"]
    lines = header + ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in summary.to_dict("records"):
        cell = lambda k, d=1: _fmt(r[k], r[f"{k}_lo"], r[f"{k}_hi"], d)
        lines.append("| " + " | ".join([r["method"], cell("clean_top1"), cell("occluded_top1"),
                                        cell("occluded_visible_top1"), cell("ece", 3),
                                        cell("ece_occluded", 3), cell(f"clean_top1_vs_{REFERENCE}"),
                                        cell(f"occluded_top1_vs_{REFERENCE}"),
                                        cell(f"occluded_visible_top1_vs_{REFERENCE}"), cell(f"ece_vs_{REFERENCE}", 3),
                                        cell("gap", 3)]) + " |")
    lines += ["", "Means over seeds with 95 % t-intervals; Δ: paired by seed, method minus CutMix (an interval "
              "containing 0: not distinguishable from CutMix with these seeds).", ""]
    return "\n".join(lines)


def plot(runs: pd.DataFrame, summary: pd.DataFrame, title: str) -> Any:
    """The comparison's figure: per-method means with intervals and runs, paired differences, gap vs outcome."""
    import textwrap

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(summary["method"])
    y = np.arange(len(methods))
    panels = [("clean_top1", "clean top-1 (%)"), ("occluded_top1", "top-1, 25-50 % occluded (%)"),
              ("occluded_visible_top1", "occluded top-1, object ≥ ½ visible (%)"),
              ("ece", "ECE (15 bins), clean"), ("gap", "label-gaze gap (mean |lam - lam_gaze|)"),
              (f"clean_top1_vs_{REFERENCE}", f"Δ clean top-1 vs {REFERENCE} (pp)"),
              (f"occluded_top1_vs_{REFERENCE}", f"Δ occluded top-1 vs {REFERENCE} (pp)"),
              (f"occluded_visible_top1_vs_{REFERENCE}", f"Δ occluded (½ visible) vs {REFERENCE} (pp)"),
              (f"ece_vs_{REFERENCE}", f"Δ ECE vs {REFERENCE}")]
    fig, axes = plt.subplots(2, 5, figsize=(21, 7.5))
    for ax, (key, label) in zip(axes.flat, panels):
        mean, lo, hi = summary[key].to_numpy(), summary[f"{key}_lo"].to_numpy(), summary[f"{key}_hi"].to_numpy()
        ok = np.isfinite(mean)
        err = np.vstack([np.where(np.isfinite(lo), mean - lo, 0), np.where(np.isfinite(hi), hi - mean, 0)])
        ax.errorbar(mean[ok], y[ok], xerr=err[:, ok], fmt="o", color="C0", capsize=3)
        if "_vs_" in key:
            ax.axvline(0, color="grey", lw=0.8)
        else:
            for i, m in enumerate(methods):
                vals = runs.loc[runs["method"] == m, key].to_numpy()
                ax.plot(vals, np.full(len(vals), i) + 0.18, ".", color="C1", alpha=0.6, ms=4)
        ax.set_yticks(y, methods)
        ax.invert_yaxis()
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    ax = axes.flat[-1]
    ok = np.isfinite(summary["gap"].to_numpy())
    ax.errorbar(summary["gap"][ok], summary["occluded_visible_top1"][ok], fmt="o", color="C0")
    points = summary[ok].sort_values("occluded_visible_top1", ascending=False)
    gx, gy = np.ptp(points["gap"]) or 1.0, np.ptp(points["occluded_visible_top1"]) or 1.0
    placed: list[tuple[float, float]] = []
    for _, r in points.iterrows():  # a label whose point is close to an earlier one goes below it
        near = sum(abs(r["gap"] - x) < 0.2 * gx and abs(r["occluded_visible_top1"] - y) < 0.08 * gy
                   for x, y in placed)
        placed.append((r["gap"], r["occluded_visible_top1"]))
        ax.annotate(r["method"], (r["gap"], r["occluded_visible_top1"]), fontsize=7, xytext=(3, 3 - 11 * near),
                    textcoords="offset points")
    ax.set(xlabel="label-gaze gap", ylabel="occluded top-1, object ≥ ½ visible (%)", title="labels vs outcome")
    ax.grid(alpha=0.3)
    fig.suptitle(textwrap.fill(title, 170), fontsize=9)
    fig.tight_layout()
    return fig


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    cores = os.cpu_count()
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.system()} {cpu}, {cores} CPU cores, {torch.get_num_threads()} torch threads, {dev}, "
            f"python {platform.python_version()}, torch {torch.__version__}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.demo_comparison", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke-test sizes: 2 seeds, 64 images, 1 epoch, 32 pairs")
    p.add_argument("--seeds", type=int, help=f"seeds 0..N-1 (default {Settings.seeds})")
    p.add_argument("--epochs", type=int, help=f"training epochs (default {Settings.epochs})")
    p.add_argument("--train-images", type=int, help=f"demo training images per seed (default {Settings.train_images})")
    p.add_argument("--test-images", type=int, help=f"held-out test images (default {Settings.test_images})")
    p.add_argument("--pairs", type=int, help=f"scored mixed samples per method and seed (default {Settings.pairs})")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD",
                   help=f"methods to train (default: all; {REFERENCE} is the reference of the paired differences)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--out", default="benchmarks/results/demo_comparison",
                   help="output prefix: <out>.csv, <out>_runs.csv, <out>.png, <out>.md")
    args = p.parse_args(argv)
    s = replace(QUICK if args.quick else Settings(), device=args.device)
    for key in ("seeds", "epochs", "train_images", "test_images", "pairs"):
        value = getattr(args, key)
        if value is not None:
            if value < 1:
                print(f"error: --{key.replace('_', '-')} must be at least 1, got {value}", file=sys.stderr)
                return 2
            s = replace(s, **{key: value})
    if s.train_images < s.batch_size:
        print(f"error: --train-images must be at least one batch ({s.batch_size})", file=sys.stderr)
        return 2
    return run(s, list(dict.fromkeys(args.methods)), Path(args.out),
               "python -m benchmarks.demo_comparison " + " ".join(sys.argv[1:] if argv is None else argv))


def run(s: Settings, methods: list[str], out: Path, command: str) -> int:
    from tqdm.auto import tqdm

    from gazemix.demo import make_demo
    from gazemix.demo_models import RESOLUTION, demo_train_data
    from gazemix.outputs import write_file_atomic
    from gazemix.plots import save_figure
    from gazemix.score_data import demo_scoring_data

    t_start, load_start = time.perf_counter(), os.getloadavg()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    test = make_demo(n=s.test_images, size=RESOLUTION, seed=TEST_SEED)
    # the same test images, their gaze split into guide and held-out observers (gaze-guided labels are never
    # scored against the observers that guided them)
    scoring = demo_scoring_data(n=s.test_images, size=RESOLUTION, seed=TEST_SEED)
    if len(scoring.ids) != len(test):
        raise RuntimeError("every demo test image must have two or more observers to split")
    boxes = occluders(len(test), RESOLUTION)
    occluded = torch.where(boxes, torch.full_like(test.images, 0.5), test.images)
    hidden = (test.object_masks & boxes).sum((1, 2, 3)) / test.object_masks.sum((1, 2, 3))
    visible = hidden <= 0.5
    rows = []
    bar = tqdm(total=s.seeds * len(methods), desc="demo comparison", unit="run")
    with tempfile.TemporaryDirectory(prefix="demo-comparison-") as work:
        for seed in range(s.seeds):
            data = demo_train_data(s.train_images, 16, RESOLUTION, seed, gaze=True)
            for method in methods:
                bar.set_postfix_str(f"{method}, seed {seed}")
                rows.append(_run(method, seed, s, data, test, scoring, occluded, visible, Path(work)))
                bar.update(1)
    bar.close()
    runs = pd.DataFrame(rows)
    summary = summarise_runs(runs)
    minutes = (time.perf_counter() - t_start) / 60
    load_end = os.getloadavg()
    machine = _machine()
    settings = (f"{s.seeds} seeds x {len(methods)} methods; demo ViT at {RESOLUTION} px, {s.epochs} epochs of "
                f"{s.train_images} images, batch {s.batch_size}, lr {s.lr:g}; test set {s.test_images} images "
                f"(occluders hide {100 * float(hidden.mean()):.0f} % of the object on average; at least half of it stays "
                f"visible in {int(visible.sum())}); {s.pairs} scored pairs")
    for frame in (summary, runs):
        frame["date"], frame["machine"], frame["command"] = date, machine, command
    header = [f"# Demo comparison — {date}", "", f"- settings: {settings}",
              f"- machine: {machine}", f"- wall time: {minutes:.1f} min; load average (1 min) {load_start[0]:.2f} at "
              f"the start, {load_end[0]:.2f} at the end", f"- command: `{command}`",
              "- data: the SYNTHETIC demo set (gazemix.demo); a sanity comparison, not evidence about real data"]
    title = f"gazemix demo comparison ({settings}) — {date}, {machine}"
    named = lambda suffix: out.parent / f"{out.name}{suffix}"
    picture = io.BytesIO()
    save_figure(plot(runs, summary, title), picture, dpi=100)
    for suffix, content in ((".csv", summary.to_csv(index=False)), ("_runs.csv", runs.to_csv(index=False)),
                            (".png", picture.getvalue()), (".md", markdown(summary, header))):
        write_file_atomic(named(suffix), content, overwrite=True)
    print(markdown(summary, header))
    print(f"wrote {out}.csv, {out}_runs.csv, {out}.png, {out}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
