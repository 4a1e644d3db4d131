"""The gaze side of the benchmark (issue 9): read CUB-GHA, render all its gaze maps, score mixed pairs.

Targets from the issue: every CUB-GHA gaze map rendered at 224 x 224 in seconds, not minutes (here: under
60 s), and 10,000 pairs of one content-independent mixer scored against CUB-GHA gaze in under 10 s. Each
step is timed once, cold (nothing cached), since a whole-data-set pass is what a user waits for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

__all__ = ["GazeRow", "bench_gaze", "default_cub_gha_dir"]

RENDER_TARGET_S = 60.0
SCORE_TARGET_S = 10.0


@dataclass
class GazeRow:
    task: str
    items: int
    seconds: float
    ms_per_item: float
    target_s: float | None
    target_met: str
    note: str = ""


def default_cub_gha_dir() -> Path | None:
    """The developers' copy of CUB-GHA beside the repository (``../shared/data/cub_gha``), when present."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "cub_gha"
    return path if path.is_dir() else None


def _row(task: str, items: int, seconds: float, target: float | None, note: str = "") -> GazeRow:
    met = "-" if target is None else ("yes" if seconds < target else "no")
    if met == "no":
        note = "; ".join(filter(None, [note, f"{seconds:.1f} s, target < {target:g} s"]))
    return GazeRow(task, items, seconds, 1e3 * seconds / max(items, 1), target, met, note)


def bench_gaze(cub_gha_dir: str | Path, mixer_names: Sequence[str], *, pairs: int = 10_000, size: int = 224,
               device: torch.device | str = "cpu", log: Callable[[str], None] = lambda s: None) -> list[GazeRow]:
    """Time reading CUB-GHA, rendering every map at ``size``, and scoring ``pairs`` pairs per mixer."""
    from data_adapters.cub_gha import CubGha
    from gazemix.gaze import render_gaze_maps
    from gazemix.scoring import ScoringData, build_mixers, score_mixers

    rows = []
    log(f"bench: reading CUB-GHA from {cub_gha_dir}")
    t0 = time.perf_counter()
    samples = list(CubGha(cub_gha_dir))
    rows.append(_row("read CUB-GHA run files", len(samples), time.perf_counter() - t0, None,
                     f"{sum(len(s.fixations) for s in samples)} fixations"))
    log(f"bench: rendering {len(samples)} gaze maps at {size}x{size}")
    t0 = time.perf_counter()
    maps = render_gaze_maps([s.fixations for s in samples], [s.size for s in samples], (size, size),
                            on_empty="skip", device=device)
    rows.append(_row(f"render all gaze maps at {size}x{size}", len(samples), time.perf_counter() - t0,
                     RENDER_TARGET_S, f"{maps.report.n_valid}/{maps.report.n_maps} maps valid"))
    valid = maps.valid.nonzero().flatten()
    data = ScoringData(gaze=maps.maps[valid], ids=[samples[i].image_id for i in valid.tolist()], name="CUB-GHA")
    mixers, skipped = build_mixers(list(mixer_names), num_classes=None, seed=0, has_images=False)
    for name, mixer in mixers.items():
        log(f"bench: scoring {pairs} pairs of {name}")
        t0 = time.perf_counter()
        run = score_mixers({name: mixer}, data, pairs=pairs, device=device, progress=False)
        seconds = time.perf_counter() - t0
        rows.append(_row(f"score {pairs} pairs: {name}", pairs, seconds, SCORE_TARGET_S,
                         f"failed: {run.skipped[name]}" if name in run.skipped else ""))
    for name, why in skipped.items():
        rows.append(GazeRow(f"score {pairs} pairs: {name}", 0, float("nan"), float("nan"), SCORE_TARGET_S, "no",
                            f"skipped: {why}"))
    return rows
