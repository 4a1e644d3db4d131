"""Turn a data set (the embedded demo, or any registered reader's samples) into :class:`~gazemix.scoring.ScoringData`.

Fixations are rendered with :func:`gazemix.gaze.render_gaze_maps`. With ``observer_split="half"`` every image's
observers are split into a *guide* half (the only gaze a mixer is given) and an *evaluation* half (the only gaze
scores are computed from; :mod:`gazemix.observers`), each rendered on its own; images that cannot be split
(fewer than two identified observers) are dropped and counted. Ready-made gaze maps (MIT1003 without ``DATA/``,
CAT2000, folder ``.png`` maps) carry no observers: they are resized with the image geometry, normalised to unit
mass, and used for both roles (gaze-reading mixers are then marked circular).

Bad records are never used silently: every reader's skipped records are counted per file with a reason, images
that cannot be read count as bad records too, and loading stops when more than ``max_bad_fraction`` of the
records are bad.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from data_adapters.base import Fixations, GazeSample
from gazemix.datasets import DataSetError, get_data_set
from gazemix.gaze import fit_image, render_gaze_maps
from gazemix.observers import SPLITS, split_observers
from gazemix.scoring import ScoringData

__all__ = ["demo_scoring_data", "load_scoring_data", "samples_scoring_data"]


def _render_halves(fixations: Sequence[Fixations], sizes: Sequence[tuple[int, int]], size: int, *,
                   observer_split: str, seed: int, render: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                                     np.ndarray, dict[str, Any], str]:
    """Evaluation maps, guide maps (or ``None``), which images to keep, the split's description and a note."""
    if observer_split not in SPLITS:
        raise DataSetError(f"observer split must be one of {', '.join(SPLITS)}, got {observer_split!r}",
                           "observer_split")
    out_hw = (size, size)
    if observer_split == "half":
        split = split_observers(list(fixations), seed)
        if split.splittable.any():
            evaluation = render_gaze_maps(split.evaluation, sizes, out_hw, on_empty="skip", **render)
            guide = render_gaze_maps(split.guide, sizes, out_hw, on_empty="skip", **render)
            keep = split.splittable & evaluation.valid.numpy() & guide.valid.numpy()
            info = {"method": "half", "seed": seed, "images_split": int(split.splittable.sum()),
                    "images_unsplittable": int((~split.splittable).sum()),
                    "images_with_an_empty_half": int((split.splittable & ~keep).sum()),
                    "guide_observers_per_image": _spread(split.n_guide[keep]),
                    "evaluation_observers_per_image": _spread(split.n_evaluation[keep])}
            note = (f"observers split in halves per image (seed {seed}): {info['images_split']} images split, "
                    f"{info['images_unsplittable']} with fewer than two identified observers dropped, "
                    f"{info['images_with_an_empty_half']} with a half that leaves no gaze in view dropped; "
                    f"guide {info['guide_observers_per_image']} / evaluation "
                    f"{info['evaluation_observers_per_image']} observers per image")
            return evaluation.maps, guide.maps, keep, info, note
        reason = "no image has two or more identified observers"
    else:
        reason = "observer split 'none' was asked for"
    rendered = render_gaze_maps(list(fixations), sizes, out_hw, on_empty="skip", **render)
    info = {"method": "none", "reason": reason}
    return rendered.maps, None, rendered.valid.numpy(), info, f"{rendered.report.summary()}; no observer split ({reason})"


def _rows(maps: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """``maps[rows]`` without a copy when every row is kept (rendered maps may be memory-mapped and large)."""
    return maps if rows.size == maps.shape[0] else maps[torch.from_numpy(rows)]


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return (parts[0] if len(parts) == 1 else torch.cat(parts)).float()


def _spread(counts: np.ndarray) -> str:
    if counts.size == 0:
        return "none"
    lo, hi = int(counts.min()), int(counts.max())
    return f"{lo}" if lo == hi else f"{lo}-{hi} (median {float(np.median(counts)):g})"


def demo_scoring_data(n: int = 512, size: int = 224, seed: int = 0, observer_split: str = "half") -> ScoringData:
    """The embedded synthetic demo set (labelled objects on real photographs, simulated observers)."""
    from gazemix.demo import make_demo

    demo = make_demo(n=n, size=size, seed=seed)
    gaze, guide, keep, info, note = _render_halves(demo.fixations, [(size, size)] * n, size,
                                                   observer_split=observer_split, seed=seed, render={})
    rows = np.flatnonzero(keep)
    meta = dict(demo.meta, n_samples=n, n_usable=int(keep.sum()), notes=[note])
    return ScoringData(gaze=_rows(gaze, rows), guide_gaze=None if guide is None else _rows(guide, rows),
                       ids=[f"demo-{i}" for i in rows.tolist()], labels=demo.labels[rows],
                       images=_rows(demo.images, rows),
                       class_names=list(demo.class_names), name="demo", split=info, meta=meta)


class _BadRecords:
    """Bad records of one load, counted per file with their reasons."""

    def __init__(self, skipped: Sequence[Exception]) -> None:
        self.errors = list(skipped)

    def add(self, err: Exception) -> None:
        self.errors.append(err)

    def per_file(self) -> Counter:
        return Counter(Path(getattr(e, "path", "?")).name for e in self.errors)

    def note(self) -> str:
        if not self.errors:
            return "no bad records"
        files = ", ".join(f"{name}: {k}" for name, k in sorted(self.per_file().items()))
        return f"{len(self.errors)} bad records skipped ({files}); first: {self.errors[0]}"

    def check(self, total: int, max_fraction: float) -> None:
        if total and len(self.errors) / total > max_fraction:
            raise DataSetError(f"{len(self.errors)} of {total} records are bad ({len(self.errors) / total:.1%}, more "
                               f"than the {max_fraction:.1%} allowed): {self.note()}", "max_bad_fraction")


def _load_image(path: str, size: int, fit: str) -> torch.Tensor:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return fit_image(torch.from_numpy(arr).permute(2, 0, 1), (size, size), fit)


def _load_map(path: str, size: int, fit: str) -> torch.Tensor:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("F"), dtype=np.float32)
    return fit_image(torch.from_numpy(arr)[None], (size, size), fit).clamp_min(0)


class _ImageError(ValueError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path


def _read(loader, path: str, size: int, fit: str) -> torch.Tensor:
    try:
        return loader(path, size, fit)
    except FileNotFoundError:
        raise _ImageError(path, "no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise _ImageError(path, f"cannot be read as an image ({type(err).__name__}: {err})") from None


def samples_scoring_data(samples: Sequence[GazeSample], *, name: str, size: int = 224, fit: str = "resize",
                         with_images: bool = True, class_names: list[str] | None = None,
                         sigma_px: float | None = None, cache_dir: str | None = None, observer_split: str = "half",
                         seed: int = 0, skipped: Sequence[Exception] = (),
                         max_bad_fraction: float = 0.01) -> tuple[ScoringData, list[str]]:
    """Render/load every sample's gaze (and image) at ``size``; returns the data and notes on what was dropped.

    ``skipped`` are the reader's own bad records; images or maps that cannot be read are added to them, and a
    :class:`~gazemix.datasets.DataSetError` is raised when they exceed ``max_bad_fraction`` of all records.
    """
    samples = list(samples)
    bad = _BadRecords(skipped)
    total = len(samples) + len(bad.errors)
    if not samples:
        raise DataSetError(f"the {name} data set yielded no samples ({bad.note()}): check the path")
    want_images = with_images and any(s.image_path for s in samples)
    images: dict[int, torch.Tensor] = {}
    if want_images:
        for i, s in enumerate(samples):
            try:
                if not s.image_path:
                    raise _ImageError(s.image_id, "no image file for this record")
                images[i] = _read(_load_image, s.image_path, size, fit)
            except _ImageError as err:
                bad.add(err)
        bad.check(total, max_bad_fraction)
        samples_ok = [i for i in range(len(samples)) if i in images]
    else:
        samples_ok = list(range(len(samples)))
    with_fix = [i for i in samples_ok if samples[i].fixations is not None]
    with_map = [i for i in samples_ok if samples[i].fixations is None and samples[i].gaze_map_path]
    notes = [bad.note()]
    render = {"sigma_px": sigma_px, "fit": fit, "cache_dir": cache_dir}
    parts_eval, parts_guide, keep, split_info = [], [], [], {"method": "none", "reason": "no fixations"}
    if with_fix:
        gaze, guide, ok, split_info, note = _render_halves(
            [samples[i].fixations for i in with_fix], [samples[i].size for i in with_fix], size,
            observer_split=observer_split, seed=seed, render=render)
        rows = np.flatnonzero(ok)
        parts_eval.append(_rows(gaze, rows))
        parts_guide.append(None if guide is None else _rows(guide, rows))
        keep += [with_fix[r] for r in rows.tolist()]
        notes.append(note)
    if with_map:
        loaded, used = [], []
        for i in with_map:
            try:
                m = _read(_load_map, samples[i].gaze_map_path, size, fit)
            except _ImageError as err:
                bad.add(err)
                continue
            total_mass = float(m.sum())
            if np.isfinite(total_mass) and total_mass > 0:
                loaded.append(m / total_mass)
                used.append(i)
        bad.check(total, max_bad_fraction)
        notes.append(f"{len(used)}/{len(with_map)} ready-made gaze maps usable (no observer ids: no split)")
        if loaded:
            parts_eval.append(torch.stack(loaded))
            parts_guide.append(None)
            keep += used
        if with_fix and split_info["method"] == "half" and used:
            raise DataSetError(f"the {name} data set mixes fixations and ready-made maps: score them apart or "
                               "without an observer split", "observer_split")
    if len(keep) < 2:
        raise DataSetError(f"the {name} data set has {len(keep)} usable gaze maps; scoring needs at least 2 "
                           f"({'; '.join(notes)})")
    gaze = _cat(parts_eval)
    guide = _cat(parts_guide) if all(p is not None for p in parts_guide) else None
    kept = [samples[i] for i in keep]
    labels = torch.tensor([int(s.label) for s in kept]) if all(s.label is not None for s in kept) else None
    pixels = torch.stack([images[i] for i in keep]) if want_images else None
    data = ScoringData(gaze=gaze, guide_gaze=guide, ids=[s.image_id for s in kept], labels=labels, images=pixels,
                       class_names=class_names, name=name, split=split_info,
                       meta={"n_samples": len(samples), "n_usable": len(kept), "bad_records": len(bad.errors),
                             "bad_records_per_file": dict(bad.per_file()), "notes": notes})
    return data, notes


def load_scoring_data(name: str, *, root: str | None = None, fixations: Sequence[str] | None = None,
                      gaze_source: str | None = None, size: int = 224, fit: str = "resize",
                      sigma_px: float | None = None, cache_dir: str | None = None, observer_split: str = "half",
                      seed: int = 0, n_images: int = 512, max_bad_fraction: float = 0.01) -> tuple[ScoringData, list[str]]:
    """Data set ``name`` from :mod:`gazemix.datasets` as :class:`ScoringData`, with notes on what was dropped."""
    data_set = get_data_set(name)
    if data_set.name == "demo":
        data = demo_scoring_data(n=n_images, size=size, seed=seed, observer_split=observer_split)
        return data, ["synthetic demo set (see README)"] + data.meta["notes"]
    reader = data_set.open(root=root, fixations=fixations, gaze_source=gaze_source)
    return samples_scoring_data(list(reader), name=data_set.name, size=size, fit=fit, with_images=root is not None,
                                class_names=getattr(reader, "class_names", None), sigma_px=sigma_px,
                                cache_dir=cache_dir, observer_split=observer_split, seed=seed,
                                skipped=getattr(reader, "skipped", ()), max_bad_fraction=max_bad_fraction)
