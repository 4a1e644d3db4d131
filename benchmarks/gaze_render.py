"""Time reading all CUB-GHA run files and rendering every image's gaze map, cold and from the disk cache.

Usage:
    python -m benchmarks.gaze_render                       # ../shared/data/cub_gha, 224x224, CPU
    python -m benchmarks.gaze_render --size 448 --device cuda
    python -m benchmarks.gaze_render --gaze-dir /data/CUB-GHA/data_5runs --fit center_crop

Prints one line per stage (read, render, render + cache write, cache read): wall-clock seconds and, for the
first two, the process's CPU seconds (on a shared, loaded machine the wall clock overstates the cost). Skips with a message when the
CUB-GHA files are absent. The cache goes to a temporary folder (removed afterwards) unless ``--cache-dir``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from data_adapters.cub_gha import CubGha
from gazemix.gaze import render_gaze_maps

DEFAULT_GAZE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cub_gha"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gaze_render", description=__doc__.splitlines()[0])
    parser.add_argument("--gaze-dir", type=Path, default=DEFAULT_GAZE_DIR, help="folder with Fixation_run<k>.txt")
    parser.add_argument("--size", type=int, default=224, help="output side in pixels (default 224)")
    parser.add_argument("--fit", choices=("resize", "center_crop"), default="resize")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", type=Path, default=None, help="keep the cache here instead of a temp folder")
    args = parser.parse_args(argv)
    if not args.gaze_dir.is_dir():
        print(f"skipped: CUB-GHA run files not found at {args.gaze_dir} (pass --gaze-dir)")
        return 0

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average {load:.1f}, "
          f"device {args.device}")
    t0, c0 = time.perf_counter(), time.process_time()
    data = CubGha(args.gaze_dir)
    t_read, c_read = time.perf_counter() - t0, time.process_time() - c0
    fixations, sizes = [s.fixations for s in data], [s.size for s in data]
    n_fix = sum(len(f) for f in fixations)
    print(f"read    {t_read:7.2f} s  (CPU {c_read:.2f} s)  {len(data)} images, {n_fix} fixations from runs {list(data.runs)}")

    out_hw = (args.size, args.size)
    t0, c0 = time.perf_counter(), time.process_time()
    maps = render_gaze_maps(fixations, sizes, out_hw, fit=args.fit, device=args.device)
    if maps.maps.is_cuda:
        torch.cuda.synchronize()
    t_render, c_render = time.perf_counter() - t0, time.process_time() - c0
    mb = maps.maps.numel() * maps.maps.element_size() / 2 ** 20
    print(f"render  {t_render:7.2f} s  (CPU {c_render:.2f} s)  {len(maps)} maps of {args.size}x{args.size} ({mb:.0f} MiB); "
          f"{maps.report.summary()}")
    del maps

    with tempfile.TemporaryDirectory(prefix="gazemix-bench-") as tmp:
        cache = args.cache_dir or Path(tmp)
        for label in ("cold", "cached"):
            t0 = time.perf_counter()
            cached = render_gaze_maps(fixations, sizes, out_hw, fit=args.fit, device=args.device, cache_dir=cache)
            float(cached.maps.sum())  # touch every map: a cached result is memory-mapped and read lazily
            what = "render + cache write" if label == "cold" else "cache read (every map touched)"
            print(f"{label:7s} {time.perf_counter() - t0:7.2f} s  {what} ({cache})")
            del cached
    return 0


if __name__ == "__main__":
    sys.exit(main())
