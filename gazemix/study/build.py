"""Build a judgment study: mix a data set with registered mixers, render PNGs next to the database, and
store one item per mixed image with its provenance.

Image 1 of every item is the mixer's *own* image (source 0 of :class:`gazemix.contract.MixResult`), so
``lam`` is the mixer's label weight of image 1 and ``gaze_lam = g_own / (g_own + g_partner)`` is the share
of the replayed human gaze mass that image 1 keeps (``MixResult.replay``). Attention checks are unmixed
images with a known answer, as HILL MixE's catch trials (Collins et al., UAI 2023).
"""

from __future__ import annotations

import hashlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from gazemix.registry import create_mixer, mixer_class
from gazemix.study.db import StudyInputError, init_db
from gazemix.study.store import MODES, ItemRecord, StudyInfo, add_items, create_study

__all__ = ["DATA_SETS", "SourceSet", "build_study", "check_mixers", "load_source"]

DATA_SETS = ("demo", "samples")
BATCH = 16


@dataclass
class SourceSet:
    """Images to mix: ``images (N, 3, S, S)`` in [0, 1], ``labels (N,)``, optional ``gaze (N, 1, S, S)``
    summing to 1 per image and object ``masks (N, 1, S, S)``."""

    name: str
    images: Tensor
    labels: Tensor
    class_names: list[str]
    gaze: Tensor | None = None
    masks: Tensor | None = None


def load_source(name: str, n: int, size: int, seed: int) -> SourceSet:
    """``demo``: the embedded synthetic demo set with simulated gaze (:func:`gazemix.demo.make_demo`);
    ``samples``: scikit-image's bundled photographs (no gaze)."""
    if name == "demo":
        from gazemix.demo import make_demo

        d = make_demo(n=n, size=size, seed=seed)
        masks = getattr(d, "object_masks", None)
        return SourceSet("demo", d.images, d.labels, list(d.class_names), d.gaze,
                         None if masks is None else torch.as_tensor(masks).reshape(d.images.shape[0], 1, size, size))
    if name == "samples":
        from gazemix.sample_images import sample_batch

        images, labels, names = sample_batch(n, size)
        return SourceSet("samples", images, labels, names)
    raise StudyInputError(f"--data must be one of {', '.join(DATA_SETS)}, got {name!r}")


def check_mixers(names: Sequence[str], has_gaze: bool) -> list[str]:
    """Canonical mixer names; refuses mixers whose context (a model, attention, ...) a study cannot supply."""
    out = []
    for raw in names:
        cls = mixer_class(raw)
        missing = [k for k in cls.needs if not (k == "gaze" and has_gaze)]
        if missing:
            raise StudyInputError(f"mixer {cls.name!r} needs {', '.join(f'{k}=' for k in missing)} (a model or its "
                                  "attention), which a study built from a data set cannot supply; choose mixers "
                                  "listed by `gazemix mixers` without needs" + ("" if has_gaze else
                                                                                " (or --data demo for gaze)"))
        out.append(cls.name)
    if not out:
        raise StudyInputError("--mixers is empty: name at least one mixer, e.g. mixup,cutmix")
    return out


def _item_params(params: dict[str, Any], b: int, batch: int) -> dict[str, Any]:
    """The sampled parameters of output ``b`` as plain JSON values."""
    out = {}
    for k, v in params.items():
        if isinstance(v, Tensor):
            v = v[b] if v.ndim and v.shape[0] == batch else v
            out[k] = v.tolist()
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[k] = v
    return out


def _blind(rel: Path, key: str) -> str:
    """An opaque file stem, so the URL a browser loads does not tell the annotator the mixer or the check."""
    return hashlib.sha256(f"{rel}/{key}".encode()).hexdigest()[:16]


def _save_png(img: Tensor, path: Path) -> None:
    arr = (img.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(arr).save(path)


def _mix_items(src: SourceSet, mixer_name: str, k: int, seed: int, media: Path, rel: Path) -> list[ItemRecord]:
    """``k`` mixed items of two different classes from ``mixer_name``, drawn in small seeded batches."""
    cls = mixer_class(mixer_name)
    opts: dict[str, Any] = {"num_classes": len(src.class_names), "seed": seed}
    if "mode" in inspect.signature(cls).parameters:
        opts["mode"] = "elem"  # one lam per item, so a study covers the range of lam
    try:
        mixer = create_mixer(mixer_name, **opts)
    except (TypeError, ValueError):
        opts.pop("mode", None)
        mixer = create_mixer(mixer_name, **opts)
    gen = torch.Generator().manual_seed(seed)
    n, items, calls = src.images.shape[0], [], 0
    while len(items) < k:
        if calls > 50 + 10 * k:
            raise StudyInputError(f"{mixer_name}: could not draw {k} pairs of different classes from --data {src.name}")
        idx = torch.randperm(n, generator=gen)[:min(BATCH, n)]
        ctx = {"gaze": src.gaze[idx]} if src.gaze is not None and "gaze" in cls.needs else {}
        res = mixer(src.images[idx], src.labels[idx], generator=gen, **ctx)
        calls += 1
        own, partner = idx[res.own_index], idx[res.index]
        w_own, w_partner = res.lam.double(), res.partner_lam.double()
        if src.gaze is not None:
            g_own, g_partner = (m.double() for m in res.replay(src.gaze[idx]))
            maps = res.source_maps(src.gaze[idx]).sum(dim=1)
        for b in range(res.images.shape[0]):
            c1, c2 = int(src.labels[own[b]]), int(src.labels[partner[b]])
            if c1 == c2 or len(items) >= k:
                continue
            key = f"{mixer_name}_{len(items):04d}"
            stem = _blind(rel, key)
            _save_png(res.images[b], media / f"{stem}.png")
            gaze_lam = gaze_path = None
            if src.gaze is not None:
                total = float(g_own[b] + g_partner[b])
                gaze_lam = float(g_own[b]) / total if total > 0 else None
                peak = float(maps[b].max())  # stored scaled to peak 1 in float16 (half the disk); the
                np.save(media / f"{stem}_gaze.npy",  # click metrics (NSS, AUC, CC, SIM) ignore the scale
                        (maps[b] / peak if peak > 0 else maps[b]).to(torch.float16).numpy())
                gaze_path = str(rel / f"{stem}_gaze.npy")
            wsum = float(w_own[b] + w_partner[b])
            params = {"mixer_config": {k2: v for k2, v in mixer.config().items()},
                      "sampled": _item_params(dict(res.params), b, res.images.shape[0]), "call": calls - 1,
                      "weight_own": float(w_own[b]), "weight_partner": float(w_partner[b])}
            items.append(ItemRecord(
                key=key, class1=src.class_names[c1], class2=src.class_names[c2],
                lam=float(w_own[b]) / wsum if wsum > 0 else 0.5, mixer=mixer_name,
                image_path=str(rel / f"{stem}.png"), gaze_path=gaze_path, height=int(res.images.shape[-2]),
                width=int(res.images.shape[-1]), params=params, source1=f"{src.name}:{int(own[b])}",
                source2=f"{src.name}:{int(partner[b])}", gaze_lam=gaze_lam, seed=seed))
    return items


def _check_items(src: SourceSet, k: int, mode: str, seed: int, media: Path, rel: Path) -> list[ItemRecord]:
    """``k`` unmixed images; the pure image is image 1 or image 2 at random (so ``lam`` is 1 or 0)."""
    if k and mode == "click" and src.masks is None:
        raise StudyInputError(f"attention checks in click mode need object masks, which --data {src.name} lacks; "
                              "pass --checks 0")
    rng = np.random.default_rng([seed, 7])
    n, kcls, items = src.images.shape[0], len(src.class_names), []
    for j, i in enumerate(rng.choice(n, size=min(k, n), replace=False)):
        true = int(src.labels[i])
        other = int((true + 1 + rng.integers(kcls - 1)) % kcls)
        pure_is_1 = bool(rng.random() < 0.5)
        c1, c2 = (true, other) if pure_is_1 else (other, true)
        key = f"check_{j:04d}"
        stem = _blind(rel, key)
        _save_png(src.images[i], media / f"{stem}.png")
        answer: dict[str, Any] = {"infer": {"weight1": float(pure_is_1)}, "softlabel": {"class": src.class_names[true]}}.get(mode, {})
        if mode == "click":
            ys, xs = torch.nonzero(src.masks[i, 0] > 0, as_tuple=True)
            answer = {"box": [int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1]}
        items.append(ItemRecord(key=key, class1=src.class_names[c1], class2=src.class_names[c2], lam=float(pure_is_1),
                                mixer="none", image_path=str(rel / f"{stem}.png"), height=int(src.images.shape[-2]),
                                width=int(src.images.shape[-1]), source1=f"{src.name}:{int(i)}",
                                source2=f"{src.name}:{int(i)}", is_check=True, check_answer=answer, seed=seed))
    return items


def build_study(db: str | os.PathLike, *, data: str = "demo", mixers: Sequence[str] = ("mixup", "cutmix"),
                n: int = 200, seed: int = 0, mode: str = "infer", size: int = 224, pool: int = 256,
                checks: int = 4, distractors: int = 2, name: str | None = None,
                items_per_annotator: int | None = None, repeats: int = 2) -> StudyInfo:
    """Create a study of ``n`` mixed items (split evenly over ``mixers``) plus ``checks`` attention checks.

    Args:
        db: the SQLite file (created when absent); PNGs go to ``<db stem>_media/<study name>/`` beside it.
        data: ``demo`` (synthetic, with simulated gaze) or ``samples`` (bundled photos, no gaze).
        mode: ``infer`` (mixing slider + confidence), ``softlabel`` (classes and probabilities) or ``click``.
        pool: how many source images to draw from the data set.
        distractors: extra classes offered beside the two true ones in soft-label mode.
        items_per_annotator: regular items each annotator answers (default: all).
        repeats: items shown a second time at the end of each annotator's order (consistency).
    """
    if mode not in MODES:
        raise StudyInputError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    for arg, value, lo in (("--n", n, 1), ("--size", size, 8), ("--pool", pool, 2), ("--checks", checks, 0),
                           ("--distractors", distractors, 0), ("--repeats", repeats, 0)):
        if not isinstance(value, int) or value < lo:
            raise StudyInputError(f"{arg} must be an integer >= {lo}, got {value!r}")
    src = load_source(data, pool, size, seed)
    names = check_mixers(mixers, src.gaze is not None)
    db = init_db(db)
    name = name or f"{data}-{mode}-seed{seed}"
    media = db.parent / f"{db.stem}_media" / name
    rel = media.relative_to(db.parent)
    media.mkdir(parents=True, exist_ok=True)
    items: list[ItemRecord] = []
    for j, mixer_name in enumerate(names):
        k = n // len(names) + (j < n % len(names))
        if k:
            items += _mix_items(src, mixer_name, k, seed + 1000 * j, media, rel)
    items += _check_items(src, checks, mode, seed, media, rel)
    rng = np.random.default_rng([seed, 11])
    for it in items:
        others = [c for c in src.class_names if c not in (it.class1, it.class2)]
        extra = [others[i] for i in rng.choice(len(others), size=min(distractors, len(others)), replace=False)]
        it.choices = [it.class1, it.class2] + extra
    study = create_study(db, name, mode, config={"seed": seed, "data": data, "mixers": names, "size": size,
                                                 "items_per_annotator": items_per_annotator, "repeats": repeats})
    add_items(db, study, items)
    return study
