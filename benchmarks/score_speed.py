"""Speed of the main job: every content-independent mixer scored on 10,000 CUB-GHA pairs, beside a naive reference.

``python -m benchmarks.score_speed [--pairs 10000] [--cub-gha DIR] [--cache DIR] [--out FILE.csv]``

Three rows are timed in one run, on the same machine and the same cached gaze maps:

* ``gazemix score`` of every mixer that runs on gaze alone (content-independent, no model), loading
  included: reading the run files and opening the cached guide/evaluation maps (the first run renders
  them; the benchmark renders once before timing so that every row reads the same cache), then
  :func:`gazemix.scoring.score_mixers` with the held-out observer split, as ``gazemix score`` runs it;
* the same for CutMix alone;
* a **naive reference**, written here independently of gazemix: per sample, draw a CutMix box with NumPy,
  build the mask and sum both evaluation maps inside/outside it, one image at a time (what a careful
  researcher would write first). It computes the gap only (no ceiling, no intervals) on maps already in
  memory, so it does less work than gazemix; the table also shows gazemix's loading and its CutMix time
  without loading, for the like-for-like comparison.

Targets (issue 17): all mixers in <= 30 s, and <= 1/3 of the naive CutMix reference's time. The table says
whether each was met; the machine, the load average and the date are printed with it.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.gaze import default_cub_gha_dir

TOTAL_TARGET_S = 30.0
REFERENCE_RATIO = 1 / 3


def _gazemix_run(names: str, fixations: Path, cache: Path, pairs: int) -> tuple[float, float, dict[str, float], int]:
    """Seconds in all and of loading alone, seconds per mixer, and the number of mixers of one scoring run."""
    from gazemix.score_data import load_scoring_data
    from gazemix.scoring import build_mixers, score_mixers

    t0 = time.perf_counter()
    data, _ = load_scoring_data("cub-gha", fixations=[str(fixations)], cache_dir=str(cache))
    loaded = time.perf_counter() - t0
    mixers, _ = build_mixers(names, num_classes=None, seed=0, has_images=False)
    run = score_mixers(mixers, data, pairs=pairs, progress=False)
    return time.perf_counter() - t0, loaded, run.seconds, len(mixers)


def naive_cutmix_reference(maps: np.ndarray, pairs: int, seed: int = 0) -> tuple[float, float]:
    """Mean CutMix label-gaze gap over ``pairs`` samples, one image at a time in NumPy; returns (gap, seconds)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    n, h, w = maps.shape
    gaps = []
    for _ in range(pairs):
        i, j = rng.integers(0, n, 2)
        lam = rng.beta(1.0, 1.0)
        cut_h, cut_w = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        y1, y2 = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + cut_h // 2, 0, h)
        x1, x2 = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + cut_w // 2, 0, w)
        mask = np.ones((h, w), dtype=np.float32)
        mask[y1:y2, x1:x2] = 0.0
        own, partner = float((maps[i] * mask).sum()), float((maps[j] * (1 - mask)).sum())
        label = 1 - (y2 - y1) * (x2 - x1) / (h * w)
        if own + partner > 0:
            gaps.append(abs(label - own / (own + partner)))
    return float(np.mean(gaps)), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--cub-gha", type=Path, default=default_cub_gha_dir(), help="CUB-GHA data_5runs folder")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("GAZEMIX_CACHE",
                                                                          Path.home() / ".cache" / "gazemix")))
    parser.add_argument("--out", type=Path, help="also write the table as CSV")
    args = parser.parse_args(argv)
    if args.cub_gha is None or not args.cub_gha.is_dir():
        parser.error("--cub-gha: the CUB-GHA folder with Fixation_run<k>.txt is needed (none beside the repo)")
    from gazemix.registry import list_mixers
    from gazemix.score_data import load_scoring_data

    names = ",".join(m.name for m in list_mixers() if m.content_independent and m.model_kind is None)
    data, _ = load_scoring_data("cub-gha", fixations=[str(args.cub_gha)], cache_dir=str(args.cache))  # warm cache
    evaluation = np.ascontiguousarray(data.gaze[:, 0].numpy())
    del data
    all_s, load_s, per_mixer, count = _gazemix_run(names, args.cub_gha, args.cache, args.pairs)
    cut_s, cut_load_s, _, _ = _gazemix_run("cutmix", args.cub_gha, args.cache, args.pairs)
    ref_gap, ref_s = naive_cutmix_reference(evaluation, args.pairs)
    rows = [
        ("gazemix score: all gaze-only mixers", count, all_s, f"<= {TOTAL_TARGET_S:g} s and <= "
         f"{REFERENCE_RATIO * ref_s:.1f} s", "yes" if all_s <= min(TOTAL_TARGET_S, REFERENCE_RATIO * ref_s) else "no"),
        ("  of which loading (run files, cached maps)", count, load_s, "-", "-"),
        ("gazemix score: cutmix alone", 1, cut_s, "-", "-"),
        ("  cutmix alone without loading (gap, ceiling, intervals)", 1, cut_s - cut_load_s, "-", "-"),
        ("naive NumPy CutMix reference (gap only, maps in memory)", 1, ref_s, "-", "-"),
    ]
    table = pd.DataFrame(rows, columns=["task", "mixers", "seconds", "target", "target_met"])
    table["ratio_to_reference"] = (table["seconds"] / ref_s).round(3)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    date, machine = time.strftime("%Y-%m-%d %H:%M"), f"{platform.node()} ({os.cpu_count()} CPUs)"
    print(f"# score speed, {args.pairs} pairs of CUB-GHA (5 runs, maps cached) — {date}, {machine}, "
          f"load average {load:.1f}, reference gap {ref_gap:.3f}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print("\nper mixer (s): " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(per_mixer.items(), key=lambda kv: -kv[1])))
    if args.out:
        from gazemix.outputs import write_file_atomic

        table["date"], table["machine"], table["load_average"] = date, machine, round(load, 2)
        write_file_atomic(args.out, table.to_csv(index=False), overwrite=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
