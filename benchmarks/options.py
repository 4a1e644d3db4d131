"""The options of ``gazemix bench`` / ``python -m benchmarks`` (no PyTorch import: ``--help`` stays fast)."""

from __future__ import annotations

import argparse

from gazemix.cli._util import add_renamed


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--img-size", type=int, default=224, help="image side in pixels (default 224)")
    add_renamed(p, "--batch", "--batch-size", type=int)
    add_renamed(p, "--size", "--img-size", type=int)
    p.add_argument("--repeats", type=int, default=10, help="timed runs per implementation (default 10; median)")
    p.add_argument("--device", default="all",
                   help="cpu, cuda, auto (cuda when present, else cpu) or all (default: cpu, plus cuda when present)")
    p.add_argument("--mixers", default=None,
                   help="comma-separated mixer names (default: every content-independent one, and bc_plus)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (batch 8, 32 px) and one repeat: a smoke run")
    p.add_argument("--cub-gha", default="auto",
                   help="CUB-GHA folder (Fixation_run<k>.txt) for the gaze section: render every map, score pairs; "
                        "'auto' = ../shared/data/cub_gha when present (not with --quick), 'none' = skip")
    p.add_argument("--pairs", type=int, default=10_000,
                   help="pairs scored per mixer in the gaze section (default 10000)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's default, usually one per core); on a shared machine "
                        "--threads 1 is less disturbed by other processes")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", default=None, help="new output folder for CSV and PNG (default: runs/bench/<date>-<time>)")
