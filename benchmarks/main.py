"""Command line of the benchmark suite, shared by ``python -m benchmarks`` and ``gazemix bench``.

Usage:
    python -m benchmarks --out runs/bench
    gazemix bench --device cpu --repeats 20 --out runs/bench
    gazemix bench --mixers mixup,cutmix --batch 64 --size 160
    gazemix bench --quick --out /tmp/bench          # tiny sizes, one repeat: checks that it runs
    gazemix bench --device cpu --threads 1 --mixers fmix,splicemix,bc_plus   # steadier on a shared machine
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import textwrap
from pathlib import Path
from typing import Sequence

import torch

from benchmarks.gaze import GazeRow, bench_gaze, default_cub_gha_dir
from benchmarks.options import add_arguments
from benchmarks.suite import (FLOOR_TARGET, FLOOR_TARGETS, PEER_TOLERANCE, SALIENCY_TARGET, BenchConfig, MixerRow,
                              SaliencyRow, as_dicts, bench_mixers, bench_saliency, columns, machine_line)

IMPL_ORDER = ("gazemix", "timm", "torchvision", "floor")
NOTES = (f"Median of interleaved runs. floor = out-of-place torch.lerp of two ready batches. timm mutates its input: "
         f"each timm call gets a fresh clone made outside the timed region (not charged to timm). torchvision has "
         f"batch mode only. x_floor = ms / floor; x_best_peer = ms / fastest of timm and torchvision (same method and "
         f"mode). target_met (gazemix rows): <= {FLOOR_TARGET:g}x floor ("
         + ", ".join(f"{m} {mode} <= {t:g}x" for (m, mode), t in FLOOR_TARGETS.items())
         + f") and <= {PEER_TOLERANCE:g}x the fastest peer (5 % timing noise allowed). Peak extra memory: CUDA "
         f"max_memory_allocated above the held memory; CPU torch.profiler allocation timeline of one call (outputs "
         f"included). The load average in the header: above the number of cores, every figure is noisy.")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {args.threads}")
    for name in ("batch_size", "img_size", "repeats", "pairs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.batch_size % 2:
        raise ValueError(f"--batch-size must be even (timm.data.Mixup refuses odd batches), got {args.batch_size}")
    mixers = None if args.mixers is None else tuple(m.strip() for m in args.mixers.split(",") if m.strip())
    if args.quick:
        return BenchConfig(batch=8, size=32, repeats=1, warmup=0, num_classes=10, mixers=mixers, seed=args.seed)
    return BenchConfig(batch=args.batch_size, size=args.img_size, repeats=args.repeats, mixers=mixers,
                       seed=args.seed)


def devices_from_arg(name: str) -> list[torch.device]:
    from gazemix.cli._util import resolve_device

    if name == "all":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    if name not in ("cpu", "cuda", "auto"):
        raise ValueError(f"--device must be cpu, cuda, auto or all, got {name!r}")
    return [resolve_device(name)]


def cub_gha_from_args(args: argparse.Namespace) -> Path | None:
    if args.cub_gha == "none":
        return None
    if args.cub_gha == "auto":
        return None if args.quick else default_cub_gha_dir()
    path = Path(args.cub_gha)
    if not path.is_dir():
        raise ValueError(f"--cub-gha {path} is not a folder: pass the folder holding Fixation_run<k>.txt, or 'none'")
    return path


def _fmt(v: object, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def mixer_table(rows: list[MixerRow]) -> str:
    from gazemix.cli._util import tabulate

    headers = ["device", "mixer", "mode", "impl", "ms", "x_floor", "x_best_peer", "peak_MB", "target_met", "note"]
    cells = [[r.device, r.mixer, r.mode, r.impl, _fmt(r.ms), _fmt(r.x_floor), _fmt(r.x_best_peer),
              _fmt(r.peak_extra_mb, 1), r.target_met, r.note] for r in rows]
    return tabulate(cells, headers)


def saliency_table(rows: list[SaliencyRow]) -> str:
    from gazemix.cli._util import tabulate

    headers = ["device", "impl", "batch", "ms", "speedup", "target_met", "note"]
    return tabulate([[r.device, r.impl, r.batch, _fmt(r.ms), _fmt(r.speedup, 1), r.target_met, r.note]
                     for r in rows], headers)


def gaze_table(rows: list[GazeRow]) -> str:
    from gazemix.cli._util import tabulate

    headers = ["task", "items", "seconds", "ms_per_item", "target_s", "target_met", "note"]
    return tabulate([[r.task, r.items, _fmt(r.seconds), _fmt(r.ms_per_item, 3), _fmt(r.target_s, 0), r.target_met,
                      r.note] for r in rows], headers)


def targets_summary(mixer_rows: list[MixerRow], saliency_rows: list[SaliencyRow], gaze_rows: list[GazeRow],
                    quick: bool = False) -> str:
    """The closing lines: how many targets were judged and met, then each missed one with its figure and target."""
    judged = [(f"{r.device} {r.mixer}" + ("" if r.mode == "-" else f" {r.mode}"), r.target_met, r.note)
              for r in mixer_rows if r.impl == "gazemix"]
    judged += [(f"{r.device} saliency", r.target_met, r.note) for r in saliency_rows if r.target_met != "-"]
    judged += [(r.task, r.target_met, r.note) for r in gaze_rows if r.target_met != "-"]
    missed = [f"  {what}: {note}" for what, met, note in judged if met == "no"]
    if not missed:
        return f"targets: all {len(judged)} met"
    lines = [f"targets missed: {len(missed)} of {len(judged)}"]
    if quick:
        lines[0] += (" (--quick times tiny batches, where per-call overhead dominates: judge the targets on a run "
                     "at the default sizes)")
    return "\n".join(lines + missed)


def write_csv(path: Path, rows: list, row_type: type) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns(row_type))
        writer.writeheader()
        writer.writerows(as_dicts(rows))


def bar_chart(path: Path, rows: list[MixerRow], title: str) -> None:
    """Milliseconds per batch, one group of bars per (mixer, mode), one bar per implementation; log scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = sorted({r.device for r in rows})
    fig, axes = plt.subplots(len(devices), 1, figsize=(12, 4.2 * len(devices)), squeeze=False)
    for ax, device in zip(axes[:, 0], devices):
        mine = [r for r in rows if r.device == device and not math.isnan(r.ms)]
        groups = list(dict.fromkeys((r.mixer, r.mode) for r in mine))
        width = 0.8 / len(IMPL_ORDER)
        for k, impl in enumerate(IMPL_ORDER):
            xs, hs = [], []
            for g, key in enumerate(groups):
                hit = [r.ms for r in mine if (r.mixer, r.mode) == key and r.impl == impl]
                if hit:
                    xs.append(g + (k - (len(IMPL_ORDER) - 1) / 2) * width)
                    hs.append(hit[0])
            if xs:
                ax.bar(xs, hs, width, label=impl, color="lightgrey" if impl == "floor" else None)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([m if mode == "-" else f"{m}\n{mode}" for m, mode in groups], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("ms per batch (log)")
        ax.set_title(f"{device}", fontsize=10)
        ax.legend(fontsize=8, ncol=len(IMPL_ORDER))
    fig.suptitle(textwrap.fill(title, 110), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from gazemix.cli._util import fresh_run_folder, log
    from gazemix.outputs import check_writable_folder, staged_folder

    cfg = config_from_args(args)
    out = Path(args.out) if args.out else fresh_run_folder("bench", "quick" if args.quick else "mixers")
    check_writable_folder(out, replace=False)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = devices_from_arg(args.device)
    cub_gha = cub_gha_from_args(args)
    mixer_rows: list[MixerRow] = []
    saliency_rows: list[SaliencyRow] = []
    for device in devices:
        mixer_rows += bench_mixers(cfg, device, log)
        saliency_rows += bench_saliency(cfg, device, log)
    gaze_rows: list[GazeRow] = []
    if cub_gha is not None:
        from gazemix.registry import mixer_class

        # gaze alone scores the mixers whose mask ignores pixels (not BC+)
        mixers = sorted({r.mixer for r in mixer_rows if mixer_class(r.mixer).content_independent})
        gaze_rows = bench_gaze(cub_gha, mixers, pairs=200 if args.quick else args.pairs, size=cfg.size, log=log)
    header = (f"gazemix bench: batch {cfg.batch} x 3 x {cfg.size} x {cfg.size} float32, {cfg.repeats} repeats "
              f"(median), {machine_line()}")
    print(header)
    print()
    print(mixer_table(mixer_rows))
    print()
    print("notes: " + NOTES)
    if saliency_rows:
        print()
        print(f"saliency: batched spectral residual vs a per-image OpenCV loop (target >= {SALIENCY_TARGET:g}x)")
        print(saliency_table(saliency_rows))
    if gaze_rows:
        print()
        print(f"gaze (CPU, {torch.get_num_threads()} threads, one cold pass): CUB-GHA from {cub_gha}")
        print(gaze_table(gaze_rows))
    print()
    print(targets_summary(mixer_rows, saliency_rows, gaze_rows, quick=args.quick))
    with staged_folder(out) as tmp:  # written whole: an interrupted run leaves nothing behind
        write_csv(tmp / "bench_mixers.csv", mixer_rows, MixerRow)
        write_csv(tmp / "bench_saliency.csv", saliency_rows, SaliencyRow)
        if gaze_rows:
            write_csv(tmp / "bench_gaze.csv", gaze_rows, GazeRow)
        bar_chart(tmp / "bench_mixers.png", mixer_rows, header)
    log(f"wrote bench_mixers.csv, bench_saliency.csv and bench_mixers.png to {out}/")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ValueError as err:
        print(f"benchmarks: error: {err}", file=sys.stderr)
        return 2
