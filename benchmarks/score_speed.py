"""Speed of the main job: every content-independent mixer on 10,000 CUB-GHA pairs beside naive references, and
the default ``gazemix score``.

``python -m benchmarks.score_speed [--pairs 10000] [--cub-gha DIR] [--cache DIR] [--no-default-run] [--out FILE.csv]``

Timed in one run, on the same machine (the CUB-GHA rows on the same cached gaze maps):

* ``gazemix score`` of every mixer that runs on gaze alone (content-independent, no model), loading
  included: reading the run files and opening the cached guide/evaluation maps (the first run renders
  them; the benchmark renders once before timing so that every row reads the same cache), then
  :func:`gazemix.scoring.score_mixers` with the held-out observer split, as ``gazemix score`` runs it;
* the same for every row that ``gazemix score --data cub-gha`` scores without images and models: those mixers and
  the saliency mixers driven by the guide gaze (``NAME@gaze``);
* the same for CutMix alone;
* two **naive references**, written here independently of gazemix, each CutMix one sample at a time in NumPy
  (draw a box, build the mask, sum both maps inside/outside it: what a careful researcher would write first) and
  the gap only (no observer split, no ceiling, no intervals):

  - *from the run files*: parse the five run files line by line and render both maps of every sample from all its
    fixations (points scaled to 224 x 224, ``scipy.ndimage.gaussian_filter`` with gazemix's default sd of 5 % of the
    long side), as a first script has no cache;
  - *in memory*: on evaluation maps already rendered and in memory (the like-for-like row for gazemix's CutMix
    without loading);
* the default ``gazemix score`` (the demo set, every registered mixer but the two learned ones, the demo models
  loaded from the cache; the first run trains and caches them before timing), with each mixer's seconds.

Targets (issue 17): the gaze-only mixers in <= 30 s (both sets), and in <= 1/3 of the naive CutMix reference's time (checked
against both references); the default run in <= 90 s. The table says whether each was met; the machine, the load
average and the date are printed with it; each mixer's seconds go to ``<out>_mixers.csv``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.gaze import default_cub_gha_dir

TOTAL_TARGET_S = 30.0
REFERENCE_RATIO = 1 / 3
DEFAULT_RUN_TARGET_S = 90.0


def _gazemix_run(names: str | list[str], fixations: Path, cache: Path, pairs: int
                 ) -> tuple[float, float, dict[str, float], int]:
    """Seconds in all and of loading alone, seconds per mixer, and the number of mixers of one scoring run."""
    from gazemix.score_data import load_scoring_data
    from gazemix.scoring import build_mixers, score_mixers

    t0 = time.perf_counter()
    data, _ = load_scoring_data("cub-gha", fixations=[str(fixations)], cache_dir=str(cache))
    loaded = time.perf_counter() - t0
    mixers, _ = build_mixers(names, num_classes=None, seed=0, has_images=False)
    run = score_mixers(mixers, data, pairs=pairs, progress=False)
    return time.perf_counter() - t0, loaded, run.seconds, len(mixers)


def _cutmix_gap(own: np.ndarray, partner: np.ndarray, rng: np.random.Generator) -> float | None:
    """One CutMix sample's label-gaze gap on two maps (None when neither keeps any gaze)."""
    h, w = own.shape
    lam = rng.beta(1.0, 1.0)
    cut_h, cut_w = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
    cy, cx = rng.integers(0, h), rng.integers(0, w)
    y1, y2 = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + cut_h // 2, 0, h)
    x1, x2 = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + cut_w // 2, 0, w)
    mask = np.ones((h, w), dtype=np.float32)
    mask[y1:y2, x1:x2] = 0.0
    kept, shown = float((own * mask).sum()), float((partner * (1 - mask)).sum())
    label = 1 - (y2 - y1) * (x2 - x1) / (h * w)
    return abs(label - kept / (kept + shown)) if kept + shown > 0 else None


def naive_cutmix_reference(maps: np.ndarray, pairs: int, seed: int = 0) -> tuple[float, float]:
    """Mean CutMix label-gaze gap over ``pairs`` samples of maps in memory, one at a time; returns (gap, seconds)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(pairs):
        i, j = rng.integers(0, maps.shape[0], 2)
        gap = _cutmix_gap(maps[i], maps[j], rng)
        if gap is not None:
            gaps.append(gap)
    return float(np.mean(gaps)), time.perf_counter() - t0


def naive_cutmix_from_run_files(run_dir: Path, pairs: int, size: int = 224, seed: int = 0) -> tuple[float, float]:
    """Mean CutMix gap over ``pairs`` samples straight from CUB-GHA's run files; returns (gap, seconds).

    Parses ``Fixation_run*.txt`` (``image_id,width,height,x,y,duration,...``), then renders both maps of every sample
    from all its image's fixations: points scaled to ``size x size``, a Gaussian of sd 5 % of the image's long side
    (scaled per axis like the points), normalised to unit mass.
    """
    from scipy.ndimage import gaussian_filter

    from gazemix.gaze import DEFAULT_SIGMA_FRACTION

    t0 = time.perf_counter()
    points: dict[int, list[tuple[int, int]]] = {}
    sizes: dict[int, tuple[int, int]] = {}
    for path in sorted(run_dir.glob("Fixation_run*.txt")):
        for line in path.read_text().splitlines():
            fields = [int(v) for v in line.split(",") if v.strip()]
            if len(fields) < 6:
                continue
            image, width, height = fields[:3]
            sizes[image] = (height, width)
            points.setdefault(image, []).extend(zip(fields[3::3], fields[4::3]))
    ids = sorted(points)

    def gaze_map(image: int) -> np.ndarray:
        height, width = sizes[image]
        xy = np.asarray(points[image], dtype=np.float64)
        rows = np.minimum((xy[:, 1] + 0.5) * size / height, size - 1).astype(int)
        cols = np.minimum((xy[:, 0] + 0.5) * size / width, size - 1).astype(int)
        counts = np.zeros((size, size))
        np.add.at(counts, (rows, cols), 1.0)
        sd = DEFAULT_SIGMA_FRACTION * max(height, width)
        smooth = gaussian_filter(counts, (sd * size / height, sd * size / width), mode="constant")
        return smooth / smooth.sum()

    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(pairs):
        i, j = rng.integers(0, len(ids), 2)
        gap = _cutmix_gap(gaze_map(ids[i]), gaze_map(ids[j]), rng)
        if gap is not None:
            gaps.append(gap)
    return float(np.mean(gaps)), time.perf_counter() - t0


def _met(ok: bool) -> str:
    return "yes" if ok else "no"


COLUMNS = ["task", "mixers", "seconds", "target", "target_met", "x_run_file_reference", "x_in_memory_reference"]


def cub_gha_rows(run_dir: Path, cache: Path, pairs: int) -> tuple[list[tuple], dict[str, dict[str, float]], str]:
    """Rows of the CUB-GHA section (the registered gaze-only mixers, every row a gaze-only run scores, CutMix alone,
    both naive references), each mixer's seconds per run, and a line on the references' gaps."""
    from gazemix.registry import list_mixers
    from gazemix.score_data import load_scoring_data
    from gazemix.scoring import scored_names

    names = ",".join(m.name for m in list_mixers() if m.content_independent and m.model_kind is None)
    data, _ = load_scoring_data("cub-gha", fixations=[str(run_dir)], cache_dir=str(cache))  # warm the cache
    evaluation = np.ascontiguousarray(data.gaze[:, 0].numpy())
    del data
    all_s, load_s, per_mixer, count = _gazemix_run(names, run_dir, cache, pairs)
    every_s, _, every_mixer, every_count = _gazemix_run(scored_names("all"), run_dir, cache, pairs)
    cut_s, cut_load_s, _, _ = _gazemix_run("cutmix", run_dir, cache, pairs)
    ref_gap, ref_s = naive_cutmix_reference(evaluation, pairs)
    raw_gap, raw_s = naive_cutmix_from_run_files(run_dir, pairs)
    rows = [
        ("gazemix score: all gaze-only mixers", count, all_s, f"<= {TOTAL_TARGET_S:g} s", _met(all_s <= TOTAL_TARGET_S)),
        ("  the same, against the naive reference from the run files", count, all_s,
         f"<= 1/3 of it = {REFERENCE_RATIO * raw_s:.1f} s", _met(all_s <= REFERENCE_RATIO * raw_s)),
        ("  the same, against the naive reference on maps in memory", count, all_s,
         f"<= 1/3 of it = {REFERENCE_RATIO * ref_s:.1f} s", _met(all_s <= REFERENCE_RATIO * ref_s)),
        ("  of which loading (run files, cached maps)", count, load_s, "-", "-"),
        ("gazemix score: every row a gaze-only run scores (+ saliency mixers driven by gaze)", every_count, every_s,
         f"<= {TOTAL_TARGET_S:g} s", _met(every_s <= TOTAL_TARGET_S)),
        ("gazemix score: cutmix alone", 1, cut_s, "-", "-"),
        ("  cutmix alone without loading (gap, ceiling, intervals)", 1, cut_s - cut_load_s, "-", "-"),
        ("naive NumPy CutMix from the run files (parse, render, gap)", 1, raw_s, "-", "-"),
        ("naive NumPy CutMix on maps in memory (gap only)", 1, ref_s, "-", "-"),
    ]
    rows = [(*r, round(r[2] / raw_s, 3), round(r[2] / ref_s, 3)) for r in rows]
    note = (f"CUB-GHA: {pairs} pairs, 5 runs, maps cached; naive reference gaps {raw_gap:.3f} (run files, all "
            f"observers), {ref_gap:.3f} (evaluation maps)")
    per_mixer = {"registered gaze-only mixers": per_mixer, "every gaze-only row": every_mixer}
    return rows, per_mixer, note


def default_run(cache: Path) -> tuple[float, dict[str, float]]:
    """Seconds of the default ``gazemix score`` (demo set, every mixer but the learned ones, demo models cached)
    and each mixer's share of them. The demo models are loaded, or trained and cached, before the timed run."""
    from gazemix.cli import main as gazemix_main
    from gazemix.demo_models import load_or_train_demo_models

    load_or_train_demo_models(cache / "demo-models", progress=True)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()) as printed:
        t0 = time.perf_counter()
        code = gazemix_main(["score", "--out", f"{tmp}/run", "--cache", str(cache), "--quiet"])
        seconds = time.perf_counter() - t0
        if code:
            raise SystemExit(f"the default gazemix score failed (exit {code}):\n{printed.getvalue()}")
        per_mixer = json.loads((Path(tmp) / "run" / "config.json").read_text())["seconds_per_mixer"]
    return seconds, per_mixer


def main(argv: list[str] | None = None) -> int:
    from gazemix.demo_models import default_cache_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000, help="CUB-GHA pairs per mixer")
    parser.add_argument("--cub-gha", type=Path, default=default_cub_gha_dir(), help="CUB-GHA data_5runs folder")
    parser.add_argument("--cache", type=Path, default=default_cache_dir(), help="gazemix's cache (env GAZEMIX_CACHE)")
    parser.add_argument("--no-default-run", action="store_true", help="skip timing the default gazemix score")
    parser.add_argument("--out", type=Path, help="also write the table as CSV (and each mixer's seconds beside it, "
                                                 "as <name>_mixers.csv)")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error(f"--pairs must be a positive number of pairs, got {args.pairs}")
    have_cub = args.cub_gha is not None and args.cub_gha.is_dir()
    if not have_cub and args.no_default_run:
        parser.error("nothing to time: --cub-gha names no CUB-GHA folder (Fixation_run<k>.txt) and --no-default-run")
    rows: list[tuple] = []
    per_mixer: list[tuple[str, str, float]] = []
    notes = []
    if have_cub:
        cub_rows, cub_seconds, note = cub_gha_rows(args.cub_gha, args.cache, args.pairs)
        rows += cub_rows
        per_mixer += [(f"cub-gha, {run}", k, v) for run, seconds in cub_seconds.items() for k, v in seconds.items()]
        notes.append(note)
    else:
        notes.append("CUB-GHA rows skipped: no CUB-GHA folder (pass --cub-gha DIR with Fixation_run<k>.txt)")
    if not args.no_default_run:
        seconds, default_seconds = default_run(args.cache)
        rows.append(("gazemix score: default run (demo set, models cached)", len(default_seconds), seconds,
                     f"<= {DEFAULT_RUN_TARGET_S:g} s", _met(seconds <= DEFAULT_RUN_TARGET_S), float("nan"), float("nan")))
        per_mixer += [("default run", k, v) for k, v in default_seconds.items()]
    table = pd.DataFrame(rows, columns=COLUMNS)
    mixers = pd.DataFrame(per_mixer, columns=["section", "mixer", "seconds"]).sort_values(
        ["section", "seconds"], ascending=[True, False])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    date, machine = time.strftime("%Y-%m-%d %H:%M"), f"{platform.node()} ({os.cpu_count()} CPUs)"
    print(f"# score speed — {date}, {machine}, load average {load:.1f}\n# " + "\n# ".join(notes))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep="-"))
    for section, group in mixers.groupby("section", sort=False):
        print(f"\nper mixer, {section} (s): " + ", ".join(f"{m} {v:.1f}" for m, v in zip(group.mixer, group.seconds)))
    if args.out:
        from gazemix.outputs import write_file_atomic

        for frame in (table, mixers):
            frame["date"], frame["machine"], frame["load_average"] = date, machine, round(load, 2)
        write_file_atomic(args.out, table.to_csv(index=False), overwrite=True)
        write_file_atomic(args.out.with_name(f"{args.out.stem}_mixers.csv"), mixers.to_csv(index=False), overwrite=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
