"""``gazemix bench``: time every content-independent mixer (and BC+) against timm, torchvision and the memory floor.

Usage:
    gazemix bench --out runs/bench
    gazemix bench --device cpu --repeats 20 --mixers mixup,cutmix,switch
    gazemix bench --quick --out /tmp/bench

Prints one table per section (mixers; saliency; gaze: read, render and score CUB-GHA when ``--cub-gha`` or
``../shared/data/cub_gha`` is there) and writes ``bench_mixers.csv``, ``bench_saliency.csv``, ``bench_gaze.csv``
and ``bench_mixers.png`` to a new ``--out`` (default ``runs/bench/<date>-<time>``), written whole. Same as ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from benchmarks.options import add_arguments

    p = sub.add_parser("bench", help="benchmark the mixers against timm, torchvision and the memory floor",
                       description="Time every content-independent mixer and BC+ (batch 128 of 3x224x224 by default) "
                                   "against timm, torchvision and a plain torch.lerp, interleaved, median of runs.")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks.main import run as run_bench

    return run_bench(args)
