"""Turn a data set (the embedded demo, or any data adapter's samples) into :class:`~gazemix.scoring.ScoringData`.

Fixations are rendered with :func:`gazemix.gaze.render_gaze_maps`; ready-made gaze maps (MIT1003, CAT2000,
folder ``.png`` maps) are resized with the same geometry as the images and normalised to unit mass. Maps
that end up empty are dropped and counted (never used silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image

from data_adapters.base import GazeSample
from gazemix.gaze import fit_image, render_gaze_maps
from gazemix.scoring import ScoringData


def demo_scoring_data(n: int = 512, size: int = 224, seed: int = 0) -> ScoringData:
    """The embedded synthetic demo set (labelled objects on real photographs, simulated observers)."""
    from gazemix.demo import make_demo

    demo = make_demo(n=n, size=size, seed=seed)
    return ScoringData(gaze=demo.gaze, ids=[f"demo-{i}" for i in range(n)], labels=demo.labels,
                       images=demo.images, class_names=list(demo.class_names), name="demo",
                       meta=dict(demo.meta))


def _load_image(path: str, size: int, fit: str) -> torch.Tensor:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return fit_image(torch.from_numpy(arr).permute(2, 0, 1), (size, size), fit)


def _load_map(path: str, size: int, fit: str) -> torch.Tensor:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("F"), dtype=np.float32)
    m = fit_image(torch.from_numpy(arr)[None], (size, size), fit).clamp_min(0)
    return m


def samples_scoring_data(samples: Iterable[GazeSample], *, name: str, size: int = 224, fit: str = "resize",
                         with_images: bool = True, class_names: list[str] | None = None,
                         sigma_px: float | None = None, cache_dir: str | None = None) -> tuple[ScoringData, str]:
    """Render/load every sample's gaze at ``size``; returns the data and a one-line report of what was dropped."""
    samples = list(samples)
    if not samples:
        raise ValueError(f"the {name} data set yielded no samples: check the path")
    with_fix = [s for s in samples if s.fixations is not None]
    with_map = [s for s in samples if s.fixations is None and s.gaze_map_path]
    parts, keep, notes = [], [], []
    if with_fix:
        rendered = render_gaze_maps([s.fixations for s in with_fix], [s.size for s in with_fix], (size, size),
                                    sigma_px=sigma_px, fit=fit, on_empty="skip", cache_dir=cache_dir)
        notes.append(rendered.report.summary())
        valid = rendered.valid
        parts.append(rendered.maps if bool(valid.all()) else rendered.maps[valid])
        keep += [s for s, ok in zip(with_fix, valid.tolist()) if ok]
    loaded, dropped_maps = [], 0
    for s in with_map:
        m = _load_map(s.gaze_map_path, size, fit)
        total = float(m.sum())
        if not np.isfinite(total) or total <= 0:
            dropped_maps += 1
            continue
        loaded.append(m / total)
        keep.append(s)
    if with_map:
        notes.append(f"{len(with_map) - dropped_maps}/{len(with_map)} ready-made gaze maps usable")
        if loaded:
            parts.append(torch.stack(loaded))
    if len(keep) < 2:
        raise ValueError(f"the {name} data set has {len(keep)} usable gaze maps; scoring needs at least 2")
    gaze = (parts[0] if len(parts) == 1 else torch.cat(parts)).float()
    labels = None
    if all(s.label is not None for s in keep):
        labels = torch.tensor([int(s.label) for s in keep])
    images = None
    if with_images and all(s.image_path and Path(s.image_path).is_file() for s in keep):
        images = torch.stack([_load_image(s.image_path, size, fit) for s in keep])
    data = ScoringData(gaze=gaze, ids=[s.image_id for s in keep], labels=labels, images=images,
                       class_names=class_names, name=name, meta={"n_samples": len(samples), "n_usable": len(keep)})
    return data, "; ".join(notes)
