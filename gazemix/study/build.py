"""Build a judgment study: mix a data set with registered mixers, render PNGs next to the database, and
store one item per mixed image with its provenance.

Image 1 of every item is the mixer's *own* image (source 0 of :class:`gazemix.contract.MixResult`), so
``lam`` is the mixer's label weight of image 1 and ``gaze_lam = g_own / (g_own + g_partner)`` is the share
of the replayed human gaze mass that image 1 keeps (``MixResult.replay``). Attention checks are unmixed
images with a known answer, as HILL MixE's catch trials (Collins et al., UAI 2023); practice items are
unmixed images too, so practice feedback never teaches a mixer's label.

Nothing is written until every input is checked; the stimuli then go to a fresh folder under salted names
and appear together with the study (:mod:`gazemix.study.media`): an existing study's files are never
rewritten, and a refused or interrupted build leaves no study behind (at most a ``.building-*`` folder).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from gazemix.contract import Mixer, MixerInputError
from gazemix.registry import create_mixer, mixer_class
from gazemix.score_data import load_image
from gazemix.study import protocol
from gazemix.study.db import StudyInputError, init_db
from gazemix.study.media import StudyMedia
from gazemix.study.store import (MODES, ItemRecord, PracticeRecord, StudyInfo, check_study_name, check_study_target,
                                 create_study)

__all__ = ["SourceSet", "build_mixers", "build_study", "data_sets", "load_source"]

BATCH = 16
MAX_SIZE = 1024
MAX_N = 100_000
MEMORY_LIMIT = 2 * 2 ** 30  # bytes the source images, gaze and masks may take
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class SourceSet:
    """Images to mix: ``images (N, 3, S, S)`` in [0, 1], ``labels (N,)``, optional ``gaze (N, 1, S, S)``
    summing to 1 per image, and optional object ``boxes (N, 4)`` as ``[y1, x1, y2, x2)`` in pixels.
    ``notes`` say what was skipped while loading, and why."""

    name: str
    images: Tensor
    labels: Tensor
    class_names: list[str]
    gaze: Tensor | None = None
    boxes: Tensor | None = None
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ sources
def _boxes_of_masks(masks: Tensor) -> Tensor:
    out = torch.zeros(masks.shape[0], 4, dtype=torch.long)
    for i in range(masks.shape[0]):
        ys, xs = torch.nonzero(masks[i, 0] > 0, as_tuple=True)
        if len(ys):
            out[i] = torch.stack([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
    return out


def _skip_check(skipped: int, total: int, max_skipped: float, what: str, example: str) -> None:
    if total and skipped / total > max_skipped:
        raise StudyInputError(f"{what}: {skipped} of {total} records are unusable ({skipped / total:.1%}, more than "
                              f"--max-bad-fraction {max_skipped:g}), e.g. {example}; fix the data or pass a larger "
                              "--max-bad-fraction", field="data")


def _pool_order(n: int, pool: int, seed: int) -> list[int]:
    return sorted(np.random.default_rng([seed, 3]).permutation(n)[:pool].tolist())


def _folder_images(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """``root/<class>/<image>``: the class names and every image with its label (a ``.png`` beside an image of
    the same stem is that image's gaze map, not an image)."""
    if not root.is_dir():
        raise StudyInputError(f"--root {root} is not a folder (expected root/<class_name>/<image>)", field="root")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        stems = {p.stem for p in files}
        maps = {p for p in files if p.suffix.lower() == ".png" and (  # gaze maps: x.png beside x.jpg, x_gaze.png
            any(q.stem == p.stem and q != p for q in files) or (p.stem.endswith("_gaze") and p.stem[:-5] in stems))}
        found += [(p, label) for p in files if p not in maps]
    if len(classes) < 2 or not found:
        raise StudyInputError(f"--root {root}: expected at least two class folders root/<class_name>/ holding images "
                              f"({', '.join(IMAGE_SUFFIXES)}), found {len(classes)} folder(s) and {len(found)} "
                              "image(s)", field="root")
    return classes, found


def _plain_folder(root: Path, images: list[tuple[Path, int]], classes: list[str], pool: int, size: int, seed: int,
                  fit: str, max_skipped: float) -> SourceSet:
    """A folder of class sub-folders without gaze: the photographs alone."""
    chosen = [images[i] for i in _pool_order(len(images), pool, seed)]
    loaded, labels, bad = [], [], []
    for path, label in chosen:
        try:
            loaded.append(load_image(str(path), size, fit))
            labels.append(label)
        except (OSError, ValueError, SyntaxError) as err:
            bad.append(f"{path}: unreadable image ({err})")
    _skip_check(len(bad), len(chosen), max_skipped, f"--root {root}", bad[0] if bad else "")
    if len(set(labels)) < 2:
        raise StudyInputError(f"--root {root}: fewer than two classes have readable images", field="root")
    notes = [f"skipped {len(bad)} unreadable image(s), e.g. {bad[0]}"] if bad else []
    return SourceSet("folder", torch.stack(loaded), torch.tensor(labels), classes, notes=notes + ["no gaze beside the "
                     "images: the study is built without gaze weights"])


def _registered_source(name: str, root: str | None, fixations: Sequence[str] | None, pool: int, size: int,
                       seed: int, fit: str, max_skipped: float) -> SourceSet:
    """Any data set of :mod:`gazemix.datasets` whose records have photographs and class labels, with all of its
    observers' gaze (no observer split: a study item carries every observer's gaze weight)."""
    from data_adapters.base import AdapterError
    from gazemix.datasets import DataSetError, get_data_set
    from gazemix.score_data import samples_scoring_data

    try:
        reader = get_data_set(name).open(root=None if root is None else str(root),
                                         fixations=[str(f) for f in fixations or ()])
        samples = list(reader)
    except (DataSetError, AdapterError) as err:
        raise StudyInputError(f"--data {name}: {err}", field=getattr(err, "option", None) or "data") from None
    skipped = list(getattr(reader, "skipped", ()))
    _skip_check(len(skipped), len(samples) + len(skipped), max_skipped, f"--data {name}",
                str(skipped[0]) if skipped else "")
    notes = [f"skipped {len(skipped)} bad records, e.g. {skipped[0]}"] if skipped else []
    class_names = getattr(reader, "class_names", None) or getattr(reader, "classes", None)
    if not class_names or any(s.label is None for s in samples):
        raise StudyInputError(f"--data {name}: its records carry no class labels (a study names the two classes of "
                              "every item); pass the folder with the labels as --root", field="data")
    have = [s for s in samples if s.image_path and Path(s.image_path).is_file()]
    if not have:
        raise StudyInputError(f"--data {name}: none of its {len(samples)} records has its photograph on disk; pass "
                              "the folder holding the images as --root", field="root")
    missing = len(samples) - len(have)
    example = next((s.image_path or s.image_id for s in samples if s not in have), "")
    _skip_check(missing, len(samples), max_skipped, f"--data {name} (photographs listed but missing)", str(example))
    if missing:
        notes.append(f"{missing} of {len(samples)} listed photographs are missing")
    chosen = [have[i] for i in _pool_order(len(have), pool, seed)]
    try:
        data, loading = samples_scoring_data(chosen, name=name, size=size, fit=fit, with_images=True,
                                             class_names=list(class_names), observer_split="none",
                                             max_bad_fraction=max_skipped)
    except (DataSetError, ValueError) as err:
        raise StudyInputError(f"--data {name}: {err}", field="data") from None
    kept = {s.image_id: s for s in chosen}
    boxes = None
    if all("bbox_xywh" in kept[i].meta for i in data.ids):  # CUB's birds: [y1, x1, y2, x2) after the fit
        from gazemix.gaze import fit_geometry

        boxes = []
        for sid in data.ids:
            s = kept[sid]
            x, y, w, h = s.meta["bbox_xywh"]
            rh, rw, top, left = fit_geometry(s.size, (size, size), fit)
            sy, sx = rh / s.size[0], rw / s.size[1]
            box = [y * sy - top, x * sx - left, (y + h) * sy - top, (x + w) * sx - left]
            boxes.append([int(np.clip(math.floor(box[0]), 0, size - 1)), int(np.clip(math.floor(box[1]), 0, size - 1)),
                          int(np.clip(math.ceil(box[2]), 1, size)), int(np.clip(math.ceil(box[3]), 1, size))])
        boxes = torch.tensor(boxes, dtype=torch.long)
    return SourceSet(name, data.images, data.labels, list(class_names), data.gaze, boxes,
                     notes + [n for n in loading if n])


def data_sets() -> tuple[str, ...]:
    """What ``--data`` accepts: ``demo``, ``samples`` and every data set of :mod:`gazemix.datasets`."""
    from gazemix.datasets import DATA_SETS as REGISTERED

    return ("demo", "samples") + tuple(n for n in REGISTERED if n != "demo")


def load_source(name: str, n: int, size: int, seed: int, *, root: str | os.PathLike | None = None,
                fixations: str | os.PathLike | Sequence[str | os.PathLike] | None = None, fit: str = "center_crop",
                max_skipped: float = 0.01) -> SourceSet:
    """The images a study mixes, ``n`` of them (drawn at random, seeded, from larger sets) at ``size`` pixels.

    ``demo``: the embedded synthetic demo set with simulated gaze and object masks (:func:`gazemix.demo.make_demo`);
    ``samples``: scikit-image's bundled photographs (no gaze); ``folder``: ``root/<class_name>/<image>`` — with the
    gaze beside every image read as :mod:`data_adapters.folder` reads it, or without any gaze; any other data set
    of :mod:`gazemix.datasets` whose records have photographs and class labels (``cub-gha`` with ``root`` =
    CUB_200_2011, which also gives the birds' boxes; ``coco-search18``; ``cat2000``), with every observer's
    gaze. Unusable records are skipped and reported in :attr:`SourceSet.notes`; more than ``max_skipped`` of
    them is an error.
    """
    if name == "demo":
        from gazemix.demo import make_demo

        d = make_demo(n=n, size=size, seed=seed)
        masks = torch.as_tensor(d.object_masks).reshape(d.images.shape[0], 1, size, size)
        return SourceSet("demo", d.images, d.labels, list(d.class_names), d.gaze, _boxes_of_masks(masks))
    if name == "samples":
        from gazemix.sample_images import sample_batch

        images, labels, names = sample_batch(n, size)
        return SourceSet("samples", images, labels, names)
    if name not in data_sets():
        raise StudyInputError(f"--data must be one of {', '.join(data_sets())}, got {name!r}", field="data")
    if fit not in ("resize", "center_crop"):
        raise StudyInputError(f"--fit must be resize or center_crop, got {fit!r}", field="fit")
    if name == "folder" and root is not None:
        classes, images = _folder_images(Path(root))
        if not any(p.with_suffix(".csv").is_file() or (p.suffix.lower() != ".png" and p.with_suffix(".png").is_file())
                   or p.with_name(p.stem + "_gaze.png").is_file() for p, _ in images):
            return _plain_folder(Path(root), images, classes, n, size, seed, fit, max_skipped)
    fix = [fixations] if isinstance(fixations, (str, os.PathLike)) else fixations
    return _registered_source(name, None if root is None else str(root), fix, n, size, seed, fit, max_skipped)


# ------------------------------------------------------------------------------------------ mixers
def build_mixers(names: Sequence[str], *, num_classes: int, seed: int, has_gaze: bool | None = None,
                 mixer_opts: Mapping[str, Mapping[str, Any]] | None = None) -> list[Mixer]:
    """Build the named mixers as a study would run them (``mode="elem"``: one ``lam`` per item, plus any
    ``mixer_opts[name]``) and refuse
    those a study cannot run, judged on the *built* instance, as ``gazemix score`` skips them: one that needs
    context a data set cannot supply (a model, attention, ...; ``gaze`` only when ``has_gaze`` is False), or
    one whose label is set from the model's output on the mixed batch (``relabels_after_forward``, TransMix,
    MixPro). ``has_gaze=None`` defers the gaze question (checked again once the data are loaded)."""
    out, seen = [], set()
    for raw in names:
        try:
            cls = mixer_class(raw)
        except ValueError as err:
            raise StudyInputError(f"--mixers: {err}", field="mixers") from None
        opts: dict[str, Any] = {"num_classes": num_classes, "seed": seed}
        if "elem" in cls.modes:
            opts["mode"] = "elem"
        opts.update((mixer_opts or {}).get(cls.name, {}))
        try:
            mixer = create_mixer(cls.name, **opts)
        except (TypeError, ValueError) as err:
            raise StudyInputError(f"--mixers: {cls.name} cannot be built for a study ({err})", field="mixers") from None
        missing = [k for k in mixer.needs if not (k == "gaze" and has_gaze is not False)]
        if missing:
            raise StudyInputError(f"--mixers: {mixer.name} needs {', '.join(f'{k}=' for k in missing)} (a model, its "
                                  "attention or gaze), which a study built from a data set cannot supply; choose "
                                  "mixers that `gazemix mixers` lists without needs" +
                                  (" (or --data demo for gaze)" if missing == ["gaze"] else ""), field="mixers")
        if mixer.relabels_after_forward:
            raise StudyInputError(f"--mixers: {mixer.name} sets its label from the model's attention on the mixed "
                                  "batch (relabels after the forward pass), which a study has no model for; its "
                                  "stored label would be another mixer's area weight. Leave it out (`gazemix score` "
                                  "skips it without --model too)", field="mixers")
        if mixer.name not in seen:
            seen.add(mixer.name)
            out.append(mixer)
    if not out:
        raise StudyInputError("--mixers is empty: name at least one mixer, e.g. mixup,cutmix", field="mixers")
    return out


# ------------------------------------------------------------------------------------------ stimuli
def _save_png(img: Tensor, path: Path) -> None:
    arr = (img.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(arr).save(path)


@dataclass
class _Writer:
    """Writes a study's stimuli (PNG) and private maps (``.npy``, never served) into its fresh folder."""

    media: StudyMedia

    def png(self, img: Tensor, key: str) -> str:
        path, rel = self.media.path(key, ".png")
        _save_png(img, path)
        return rel

    def npy(self, arr: Tensor, key: str, kind: str) -> str:
        path, rel = self.media.path(f"{key}/{kind}", ".npy")
        np.save(path, arr.to(torch.float16).numpy())
        return rel


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


def _mix_items(src: SourceSet, mixer: Mixer, k: int, seed: int, out: _Writer, mode: str,
               prefix: str = "") -> list[ItemRecord]:
    """``k`` mixed items of two different classes from ``mixer``, drawn in small seeded batches."""
    gen = torch.Generator().manual_seed(seed)
    n, items, calls = src.images.shape[0], [], 0
    while len(items) < k:
        if calls > 50 + 10 * k:
            raise StudyInputError(f"{mixer.name}: could not draw {k} pairs of different classes from --data {src.name}",
                                  field="data")
        idx = torch.randperm(n, generator=gen)[:min(BATCH, n)]
        ctx = {"gaze": src.gaze[idx]} if src.gaze is not None and "gaze" in mixer.needs else {}
        try:
            res = mixer(src.images[idx], src.labels[idx], generator=gen, **ctx)
        except MixerInputError as err:
            raise StudyInputError(f"--mixers: {mixer.name} cannot run on a data set alone ({err})", field="mixers") \
                from None
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
            key = f"{prefix}{mixer.name}_{len(items):04d}"
            gaze_lam = gaze_path = share_path = None
            if src.gaze is not None:
                total = float(g_own[b] + g_partner[b])
                gaze_lam = float(g_own[b]) / total if total > 0 else None
                peak = float(maps[b].max())  # stored scaled to peak 1 in float16 (half the disk); the click
                gaze_path = out.npy(maps[b] / peak if peak > 0 else maps[b], key, "gaze")  # metrics ignore scale
            if mode == "click":
                share_path = out.npy(res.mask[b, 0], key, "share")
            wsum = float(w_own[b] + w_partner[b])
            params = {"mixer_config": dict(mixer.config()),
                      "sampled": _item_params(dict(res.params), b, res.images.shape[0]), "call": calls - 1,
                      "weight_own": float(w_own[b]), "weight_partner": float(w_partner[b])}
            items.append(ItemRecord(
                key=key, class1=src.class_names[c1], class2=src.class_names[c2],
                lam=float(w_own[b]) / wsum if wsum > 0 else 0.5, mixer=mixer.name,
                image_path=out.png(res.images[b], key), gaze_path=gaze_path, share_path=share_path,
                height=int(res.images.shape[-2]), width=int(res.images.shape[-1]), params=params,
                source1=f"{src.name}:{int(own[b])}", source2=f"{src.name}:{int(partner[b])}", gaze_lam=gaze_lam,
                seed=seed))
    return items


def _pure_images(src: SourceSet, picks: Sequence[int], rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """For each picked image: ``(index, its class, another class)``."""
    kcls = len(src.class_names)
    return [(int(i), int(src.labels[i]), int((int(src.labels[i]) + 1 + rng.integers(kcls - 1)) % kcls)) for i in picks]


def _box(src: SourceSet, i: int) -> list[int] | None:
    return None if src.boxes is None else [int(v) for v in src.boxes[i]]


def _check_items(src: SourceSet, picks: Sequence[int], mode: str, seed: int, out: _Writer) -> list[ItemRecord]:
    """Unmixed images; the pure image is image 1 or image 2 at random (so ``lam`` is 1 or 0)."""
    if picks and mode == "click" and src.boxes is None:
        raise StudyInputError(f"attention checks in click mode need object boxes, which --data {src.name} lacks; "
                              "pass --checks 0", field="checks")
    rng = np.random.default_rng([seed, 7])
    items = []
    for j, (i, true, other) in enumerate(_pure_images(src, picks, rng)):
        pure_is_1 = bool(rng.random() < 0.5)
        c1, c2 = (true, other) if pure_is_1 else (other, true)
        key = f"check_{j:04d}"
        answer: dict[str, Any] = {"infer": {"weight1": float(pure_is_1)}, "softlabel": {"class": src.class_names[true]},
                                  "click": {"box": _box(src, i)}}[mode]
        items.append(ItemRecord(key=key, class1=src.class_names[c1], class2=src.class_names[c2], lam=float(pure_is_1),
                                mixer="none", image_path=out.png(src.images[i], key), height=int(src.images.shape[-2]),
                                width=int(src.images.shape[-1]), source1=f"{src.name}:{i}", source2=f"{src.name}:{i}",
                                is_check=True, check_answer=answer, seed=seed))
    return items


def _choices(rng: np.random.Generator, names: list[str], c1: str, c2: str, distractors: int) -> list[str]:
    others = [c for c in names if c not in (c1, c2)]
    return [c1, c2] + [others[i] for i in rng.choice(len(others), size=min(distractors, len(others)), replace=False)]


def _practice(src: SourceSet, picks: Sequence[int], example: ItemRecord | None, seed: int, distractors: int,
              out: _Writer) -> list[PracticeRecord]:
    rng = np.random.default_rng([seed, 13])
    recs = []
    for j, (i, true, other) in enumerate(_pure_images(src, picks, rng)):
        c1, c2 = src.class_names[true], src.class_names[other]
        recs.append(PracticeRecord("practice", j, out.png(src.images[i], f"practice_{j:04d}"),
                                   int(src.images.shape[-2]), int(src.images.shape[-1]), c1, c2,
                                   _choices(rng, src.class_names, c1, c2, distractors),
                                   {"class": c1, **({"box": _box(src, i)} if src.boxes is not None else {})}))
    if example is not None:
        recs.append(PracticeRecord("example", 0, str(example.image_path), int(example.height), int(example.width),
                                   example.class1, example.class2, [example.class1, example.class2]))
    return recs


# ------------------------------------------------------------------------------------------ checks
def _int_option(option: str, value: Any, lo: int, hi: int | None = None, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"from {lo} to {hi}"
        raise StudyInputError(f"{option} must be a whole number {rng}, got {value!r}{hint}", field=option)
    return value


def build_study(db: str | os.PathLike, *, data: str = "demo", mixers: Sequence[str] = ("mixup", "cutmix"),
                n: int = 200, seed: int = 0, mode: str = "infer", size: int = 224, pool: int = 256,
                checks: int = 4, practice: int = 3, distractors: int = 2, name: str | None = None,
                items_per_annotator: int | None = None, repeats: int = 2, title: str | None = None,
                instructions: str | None = None, consent: str | None = None, questions: list | None = None,
                minutes: int | None = None, completion_code: str | None = None, redirect_url: str | None = None,
                root: str | os.PathLike | None = None,
                fixations: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                fit: str = "center_crop", max_skipped: float = 0.01, synchronous: str = "FULL",
                mixer_opts: Mapping[str, Mapping[str, Any]] | None = None,
                log: Callable[[str], None] | None = None) -> StudyInfo:
    """Create a study of ``n`` mixed items (split evenly over ``mixers``), ``checks`` attention checks,
    ``practice`` practice items and one worked example.

    Args:
        db: the SQLite file (created when absent); stimuli go to a fresh ``<db stem>_media/<random>/`` beside it.
        data: ``demo``, ``samples``, ``folder`` (``root``), ``cub-gha`` (``fixations`` + ``root``) or another
            data set with photographs and labels; see :func:`load_source`.
        mode: ``infer`` (mixing slider + confidence), ``softlabel`` (classes and probabilities) or ``click``.
        pool: how many source images to draw from the data set.
        distractors: extra classes offered beside the two true ones in soft-label mode.
        items_per_annotator: regular items each annotator answers (default: what fits, with checks and
            repeats, in about 15 minutes at the mode's pace; see :mod:`gazemix.study.protocol`).
        repeats: items shown a second time at the end of each annotator's order (consistency).
        title, instructions, consent: what the screen shows (markdown; defaults per mode).
        questions: comprehension questions (see :func:`gazemix.study.protocol.check_questions`; default per mode).
        minutes: the estimated time shown on the consent page (default: estimated from the pace).
        completion_code, redirect_url: shown on the end page (default: a random 8-character code, no redirect).
        synchronous: ``FULL`` or ``NORMAL`` durability of a new database (see :mod:`gazemix.study.db`).
        mixer_opts: extra options per mixer name (e.g. ``{"lumix": {"noise": 0.2}}``).
        log: called with one line per note (what was skipped while loading, ...).
    """
    if mode not in MODES:
        raise StudyInputError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}", field="mode")
    if data not in data_sets():
        raise StudyInputError(f"--data must be one of {', '.join(data_sets())}, got {data!r}", field="data")
    if data not in ("demo", "samples"):
        from gazemix.datasets import get_data_set

        needs = [o for o in get_data_set(data).requires if (root, fixations)[o == "fixations"] is None]
        if root is None and "root" not in needs:
            needs.insert(0, "root")  # a study shows the photographs, which live under --root
        if needs:
            raise StudyInputError(f"--data {data} needs {' and '.join(f'--{o}' for o in needs)} (--root: the folder "
                                  "holding the photographs; see `gazemix score --help` for each data set's layout)",
                                  field=needs[0])
    _int_option("--pairs", n, 1, MAX_N)
    _int_option("--img-size", size, 8, MAX_SIZE, " (stimuli are shown at most 320 px high)")
    for option, value in (("--pool", pool), ("--checks", checks), ("--practice", practice),
                          ("--distractors", distractors), ("--repeats", repeats)):
        _int_option(option, value, 2 if option == "--pool" else 0, 10_000)
    _int_option("--seed", seed, 0, 2 ** 63 - 1)
    if items_per_annotator is not None:
        _int_option("--items-per-annotator", items_per_annotator, 1, None,
                    " (leave it out for the default: about 15 minutes of work)")
    if minutes is not None:
        _int_option("--minutes", minutes, 1, 600)
    if not isinstance(max_skipped, (int, float)) or not 0 <= max_skipped <= 1:
        raise StudyInputError(f"--max-bad-fraction must be a fraction in [0, 1], got {max_skipped!r}", field="max_skipped")
    need = pool * size * size * 4 * 5
    if need > MEMORY_LIMIT:
        raise StudyInputError(f"--pool {pool} at --img-size {size} needs about {need / 2 ** 30:.1f} GiB of memory (limit "
                              f"{MEMORY_LIMIT / 2 ** 30:.0f} GiB); lower --img-size or --pool", field="size")
    if checks + practice + 2 > pool:
        raise StudyInputError(f"--pool {pool} is too small for {checks} checks and {practice} practice items",
                              field="pool")
    config = protocol.study_config(mode, title=title, consent=consent, questions=questions,
                                   completion_code=completion_code, redirect_url=redirect_url)
    name = check_study_name(name or f"{data}-{mode}-seed{seed}")
    db = Path(db)
    check_study_target(db, name)
    built = build_mixers(mixers, num_classes=2, seed=seed, has_gaze=None,  # context checks before loading data
                         mixer_opts=mixer_opts)
    (log or (lambda s: None))(f"building a {mode} study from --data {data} with {', '.join(m.name for m in built)}")
    src = load_source(data, pool, size, seed, root=root, fixations=fixations, fit=fit, max_skipped=max_skipped)
    for note in src.notes:
        (log or (lambda s: None))(f"{data}: {note}")
    built = build_mixers([m.name for m in built], num_classes=len(src.class_names), seed=seed,
                         has_gaze=src.gaze is not None, mixer_opts=mixer_opts)
    regular_n = n
    per_annotator = items_per_annotator or protocol.default_items_per_annotator(mode, checks=checks, repeats=repeats,
                                                                                available=regular_n)
    config.update(seed=seed, data=data, mixers=[m.name for m in built], size=size, items_per_annotator=per_annotator,
                  repeats=repeats, minutes=minutes or protocol.estimated_minutes(
                      mode, min(per_annotator, regular_n) + checks + min(repeats, regular_n) + practice))

    media = StudyMedia(db)
    out = _Writer(media)
    try:
        items: list[ItemRecord] = []
        for j, mixer in enumerate(built):
            k = n // len(built) + (j < n % len(built))
            if k:
                items += _mix_items(src, mixer, k, seed + 1000 * j, out, mode)
        unmixed = np.random.default_rng([seed, 5]).permutation(src.images.shape[0])
        items += _check_items(src, unmixed[:checks].tolist(), mode, seed, out)
        example = _mix_items(src, built[0], 1, seed + 999_983, out, mode, prefix="example_")[0]
        extra = _practice(src, unmixed[checks:checks + practice].tolist(), example, seed, distractors, out)
        rng = np.random.default_rng([seed, 11])
        for it in items:
            it.choices = _choices(rng, src.class_names, it.class1, it.class2, distractors)
        init_db(db, synchronous=synchronous)
        study = create_study(db, name, mode, instructions=instructions or protocol.INSTRUCTIONS[mode], config=config,
                             items=items, practice=extra, secret=media.secret, before_commit=media.move_into_place)
    except BaseException:  # nothing was stored (the transaction rolled back): the fresh files go too
        media.discard()
        raise
    return study
