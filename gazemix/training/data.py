"""Training data: images, labels and (when the data set has them) human gaze maps, cropped and flipped together.

Data sets yield *un-augmented* samples at a fixed base size ``P = floor(S / crop_pct)`` (train) — the image
fitted with ``gazemix.gaze.fit_image(..., fit="center_crop")`` and its gaze map rendered with the same fit —
or the evaluation crop (``Resize(P)`` + ``CenterCrop(S)``, DeiT's ``crop_pct = 0.875``). The training
augmentation runs on the batch, on the device, from an explicit generator (:class:`BatchAugment`):
the DeiT random-resized crop + horizontal flip (Touvron et al., ICML 2021), applied to the image and its gaze
map *together* by ``gazemix.gaze.crop_flip``, then ImageNet normalisation. A crop that holds no gaze mass
gets a uniform map (it carries no location signal) and is counted in the epoch's metrics.

Sources, by the names of :mod:`gazemix.datasets` (one vocabulary for every command): ``demo`` (the embedded
synthetic set, :func:`gazemix.demo.make_demo`), ``folder`` (``root/<class>/<image>``, or ``root/train`` +
``root/val``), and every other registered data set whose records carry photographs and class labels
(``cub-gha``: CUB-200-2011 images under ``root`` with CUB-GHA ``fixations``; ``coco-search18``, ``cat2000``).
Their own train/test split is used when every record names one, else a seeded hold-out.

Held-out gaze for labels (``label_gaze=True``, :mod:`gazemix.training.labels`): each training image's observers
are split into a guide half and an evaluation half (:func:`gazemix.observers.split_observers`, seeded); items
then carry the guide map (what mixers see) and the evaluation map (what labels are computed from). An image that
cannot be split (fewer than two identified observers, or a ready-made map without observers) gets a uniform guide
map and all of its gaze as the evaluation map; an evaluation map without gaze is all zero (its labels then fall
back to the mixer's).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from data_adapters.base import Fixations, GazeSample
from gazemix.gaze import crop_flip, fit_image, render_gaze_maps, sample_crop_boxes
from gazemix.observers import split_observers

__all__ = ["BatchAugment", "DataError", "FileGazeDataset", "TensorGazeDataset", "TrainData", "build_data"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_PCT = 0.875


class DataError(ValueError):
    """A data set that cannot be trained on (empty, wrong shapes, labels outside the class range)."""


def base_size(img_size: int) -> int:
    """Side of the un-augmented training images: ``floor(S / 0.875)`` (256 for 224)."""
    return int(math.floor(img_size / CROP_PCT))


class BatchAugment:
    """DeiT training augmentation on a batch, gaze maps following the pixels.

    Args:
        img_size: output side ``S``.
        crop_scale: area range of the random-resized crop (DeiT: (0.08, 1); TdAttenMix's CUB recipe: (0.5, 1)).
        mean, std: RGB normalisation.
    """

    def __init__(self, img_size: int, crop_scale: tuple[float, float] = (0.08, 1.0),
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.img_size, self.crop_scale = int(img_size), tuple(crop_scale)
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, images: Tensor, gaze: Tensor | None,
                 generator: torch.Generator) -> tuple[Tensor, Tensor | None, Tensor]:
        """``images (B, 3, P, P)`` in [0, 1], optional ``gaze (B, 1, P, P)`` → normalised crops, maps, #empty maps.

        The count is a 0-dim tensor on the device (reading it is left to the caller: no host sync per batch).
        """
        return self.apply(images, gaze, *self.sample(images.shape[0], tuple(images.shape[-2:]), generator))

    def sample(self, b: int, hw: tuple[int, int], generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The random part: crop boxes ``(B, 4)`` and horizontal flips ``(B,)`` for a batch of ``hw`` images."""
        boxes = sample_crop_boxes(b, tuple(hw), scale=self.crop_scale, generator=generator)
        return boxes, torch.rand(b, generator=generator) < 0.5

    def apply(self, images: Tensor, gaze: Tensor | None, boxes: Tensor,
              flip: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """Crop, flip and normalise with drawn ``boxes`` and ``flip`` (see :meth:`__call__`)."""
        b = images.shape[0]
        maps = gaze if gaze is not None else images.new_zeros(b, 1, *images.shape[-2:])
        crops, maps, valid = crop_flip(images, maps, boxes, flip.to(images.device), (self.img_size, self.img_size))
        crops = (crops - self.mean.to(crops)) / self.std.to(crops)
        if gaze is None:
            return crops, None, crops.new_zeros(())
        uniform = torch.full_like(maps, 1.0 / (self.img_size * self.img_size))
        return crops, torch.where(valid.view(-1, 1, 1, 1), maps, uniform), (~valid).sum()

    def crop_map(self, maps: Tensor, boxes: Tensor, flip: Tensor) -> Tensor:
        """Crop and flip further maps ``(B, 1, P, P)`` as :meth:`apply` did the images; each crop sums to 1, or is
        all zero where the crop holds no mass (no uniform filling: a label read from it must know)."""
        _, crops, valid = crop_flip(maps, maps, boxes, flip.to(maps.device), (self.img_size, self.img_size))
        return torch.where(valid.view(-1, 1, 1, 1), crops, torch.zeros_like(crops))

    def normalise(self, images: Tensor) -> Tensor:
        return (images - self.mean.to(images)) / self.std.to(images)


class TensorGazeDataset(Dataset):
    """An in-memory data set: ``images (N, 3, H, W)`` in [0, 1], ``labels (N,)``, optional ``gaze (N, 1, H, W)``
    and optional held-out ``label_gaze (N, 1, H, W)`` (the evaluation half of the observers; ``gaze`` is then the
    guide half).

    Items are ``(image, label)``, ``(image, label, gaze)`` or ``(image, label, gaze, label_gaze)``, un-augmented.
    """

    def __init__(self, images: Tensor, labels: Tensor, gaze: Tensor | None = None,
                 label_gaze: Tensor | None = None) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise DataError(f"labels must be (N,) = ({images.shape[0]},), got {tuple(labels.shape)}")
        if gaze is not None and (gaze.ndim != 4 or gaze.shape[0] != images.shape[0] or gaze.shape[1] != 1
                                 or gaze.shape[-2:] != images.shape[-2:]):
            raise DataError(f"gaze must be (N, 1, H, W) = ({images.shape[0]}, 1, {images.shape[2]}, "
                            f"{images.shape[3]}), got {tuple(gaze.shape)}")
        if label_gaze is not None and (gaze is None or label_gaze.shape != gaze.shape):
            raise DataError(f"label_gaze must come with gaze and have its shape {tuple(images.shape[:1]) + (1,)}"
                            f"{tuple(images.shape[-2:])}, got {tuple(label_gaze.shape)}")
        self.images, self.labels, self.gaze, self.label_gaze = images.float(), labels.long(), gaze, label_gaze

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        item = (self.images[i], self.labels[i])
        if self.gaze is None:
            return item
        item += (self.gaze[i].float(),)
        return item if self.label_gaze is None else item + (self.label_gaze[i].float(),)


class FileGazeDataset(Dataset):
    """Image files with fixations or gaze-map files (:class:`~data_adapters.base.GazeSample` records).

    Training items are fitted to ``P x P`` (centre crop) with the gaze rendered (or the map file resized) by
    the same geometry; evaluation items are ``Resize(P)`` + ``CenterCrop(S)`` and carry no gaze. An image whose
    fixations all fall outside the fitted view, or whose map file is all zero, gets a uniform map (no location
    signal); training runs only on sets where every image has fixations or a map (``has_gaze``), else without gaze.

    Args:
        samples: records with ``image_path`` and ``label``.
        img_size: ``S``.
        train: training (base size, gaze) or evaluation items.
        sigma_px: gaze blur in original pixels (``None``: the gaze module's default, 5 % of the long side).
        split_seed: when given (training with gaze only), items carry the guide half of each image's observers
            and the evaluation half as a fourth element (see the module docstring), split with this seed.
    """

    def __init__(self, samples: Sequence[GazeSample], img_size: int, *, train: bool,
                 sigma_px: float | None = None, split_seed: int | None = None) -> None:
        missing = [s.image_id for s in samples if s.image_path is None or s.label is None]
        if missing:
            raise DataError(f"{len(missing)} samples have no image file or no label (first: {missing[:3]}): "
                            f"training needs both; check --root")
        self.samples, self.img_size, self.train, self.sigma_px = list(samples), int(img_size), train, sigma_px
        self.labels = np.array([s.label for s in self.samples], dtype=np.int64)
        self.has_gaze = train and all(s.fixations is not None or s.gaze_map_path is not None for s in self.samples)
        self.split = None
        if split_seed is not None and self.has_gaze:
            self.split = split_observers([s.fixations if s.fixations is not None else Fixations.empty()
                                          for s in self.samples], split_seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        s = self.samples[i]
        image = _read_image(s.image_path, "RGB")
        p = base_size(self.img_size)
        label = torch.tensor(s.label)
        img = fit_image(image, (p, p), "center_crop")
        if not self.train:
            off = (p - self.img_size) // 2
            return img[:, off:off + self.img_size, off:off + self.img_size], label
        if not self.has_gaze:
            return img, label
        hw = tuple(image.shape[-2:])
        if s.gaze_map_path is not None:
            g = fit_image(_read_image(s.gaze_map_path, "L"), (p, p), "center_crop").clamp_min(0)
            mass = g.sum()
            if self.split is not None:  # a map has no observers to split: the mixer gets none of it
                return img, label, torch.full_like(g, 1.0 / g.numel()), g / mass if mass > 0 else torch.zeros_like(g)
            return img, label, g / mass if mass > 0 else torch.full_like(g, 1.0 / g.numel())
        if self.split is None:
            return img, label, self._render(s.fixations, hw, p, "uniform")
        guide = self._render(self.split.guide[i], hw, p, "uniform") if self.split.splittable[i] \
            else torch.full((1, p, p), 1.0 / (p * p))
        return img, label, guide, self._render(self.split.evaluation[i], hw, p, "zero")

    def _render(self, fixations: Fixations, hw: tuple[int, int], p: int, on_empty: str) -> Tensor:
        """One map fitted like the image; without a fixation in view: uniform, or all zero (``on_empty="zero"``)."""
        r = render_gaze_maps([fixations], [hw], (p, p), sigma_px=self.sigma_px, fit="center_crop", on_empty="uniform")
        return r.maps[0] if on_empty == "uniform" or bool(r.valid[0]) else torch.zeros_like(r.maps[0])


def _read_image(path: str | os.PathLike, mode: str) -> Tensor:
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
    except OSError as err:
        raise DataError(f"{path}: cannot read the image ({err})") from err
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous() if arr.ndim == 3 else torch.from_numpy(arr)[None]


@dataclass
class TrainData:
    """The train and validation sets of one run, with the class names and whether gaze maps come along.

    ``has_label_gaze``: training items also carry held-out gaze for labels (the guide/evaluation split of the
    module docstring). ``notes``: what was dropped or split, for the run's log and ``config.json``.
    """

    train: Dataset
    val: Dataset
    class_names: list[str]
    has_gaze: bool
    description: str
    has_label_gaze: bool = False
    notes: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Refuse empty splits and labels outside ``[0, num_classes)``."""
        for split, ds in (("train", self.train), ("validation", self.val)):
            if len(ds) == 0:
                raise DataError(f"the {split} split of {self.description} is empty: check --root and the split files")
        k = len(self.class_names)
        for split, ds in (("train", self.train), ("validation", self.val)):
            labels = np.asarray(ds.labels)
            if labels.min() < 0 or labels.max() >= k:
                raise DataError(f"{self.description}: {split} labels range over [{labels.min()}, {labels.max()}] "
                                f"but there are {k} classes ({', '.join(self.class_names[:5])}...)")


_FLAGS = {"root": "--root", "fixations": "--fixations", "data": "--data", "gaze_source": "--data"}


def build_data(data: str, root: str | None, img_size: int, *, fixations: Sequence[str] | str | None = None,
               seed: int = 0, demo_train: int = 512, demo_val: int = 128, val_fraction: float = 0.1,
               label_gaze: bool = False, max_bad_fraction: float = 0.01) -> TrainData:
    """The train/validation sets named by ``data`` (a name of :mod:`gazemix.datasets`; old aliases accepted).

    ``demo``: the embedded synthetic set. ``folder``: ``root/<class>/<image>`` with gaze beside each image;
    ``root/train`` + ``root/val`` when both exist, else a seeded ``val_fraction`` hold-out. Any other registered
    data set with photographs and class labels: ``root`` = its image folder (``CUB_200_2011`` for ``cub-gha``),
    ``fixations`` = its gaze files where they live apart (CUB-GHA's ``data_5runs`` folder or run files); its own
    train/test split when every record names one, else the seeded hold-out. Records the reader could not parse
    are skipped and counted; more than ``max_bad_fraction`` of them is an error. ``label_gaze``: split each
    image's observers (seed ``seed``) into guide and evaluation gaze (module docstring).
    """
    from gazemix.datasets import ALIASES, DataSetError, get_data_set

    if data == "demo":
        return _demo_data(img_size, seed, demo_train, demo_val, label_gaze)
    name = ALIASES.get(data, data)
    try:
        get_data_set(name)
    except DataSetError as err:
        raise DataError(f"--data: {err}") from None
    if root is None:
        where = "the CUB_200_2011 folder" if name == "cub-gha" else "the folder you downloaded it to"
        raise DataError(f"--data {name} needs --root: {where}, with the photographs and labels training needs")
    split_seed = seed if label_gaze else None
    if name == "folder":
        from data_adapters.base import AdapterError

        try:
            train, val, names = _folder_split(Path(root), seed, val_fraction)
        except AdapterError as err:
            raise DataError(f"--root: {err}") from None
        notes: list[str] = []
        desc = f"image folder {root}"
    else:
        train, val, names, notes = _registered_split(name, root, fixations, seed, val_fraction, max_bad_fraction)
        desc = f"{name} at {root}" + (f" with gaze from {', '.join(_as_list(fixations))}" if fixations else "")
    tr = FileGazeDataset(train, img_size, train=True, split_seed=split_seed)
    if tr.split is not None:
        notes.append(_split_note(tr.split.splittable, tr.split.n_guide, tr.split.n_evaluation, seed))
    return TrainData(tr, FileGazeDataset(val, img_size, train=False), names, tr.has_gaze, desc,
                     tr.split is not None, notes)


def _as_list(fixations: Sequence[str] | str | None) -> list[str]:
    if fixations is None:
        return []
    return [str(fixations)] if isinstance(fixations, (str, os.PathLike)) else [str(f) for f in fixations]


def _demo_data(img_size: int, seed: int, demo_train: int, demo_val: int, label_gaze: bool) -> TrainData:
    from gazemix.demo import make_demo

    if img_size < 32:
        raise DataError(f"--img-size {img_size}: the demo set is drawn at 32 pixels or more")
    p = base_size(img_size)
    tr = make_demo(n=demo_train, size=p, seed=seed)
    va = make_demo(n=demo_val, size=img_size, seed=seed + 1)
    desc = f"the synthetic demo set ({demo_train} train / {demo_val} val)"
    if not label_gaze:
        return TrainData(TensorGazeDataset(tr.images, tr.labels, tr.gaze), TensorGazeDataset(va.images, va.labels),
                         list(tr.class_names), True, desc)
    split = split_observers(list(tr.fixations), seed)
    sizes = [(p, p)] * demo_train
    guide = render_gaze_maps(split.guide, sizes, (p, p), on_empty="uniform").maps
    evaluation = render_gaze_maps(split.evaluation, sizes, (p, p), on_empty="uniform")
    held = torch.where(evaluation.valid.view(-1, 1, 1, 1), evaluation.maps, torch.zeros_like(evaluation.maps))
    guide = torch.where(torch.from_numpy(split.splittable).view(-1, 1, 1, 1), guide, torch.full_like(guide, 1 / p / p))
    return TrainData(TensorGazeDataset(tr.images, tr.labels, guide, held), TensorGazeDataset(va.images, va.labels),
                     list(tr.class_names), True, desc, True,
                     [_split_note(split.splittable, split.n_guide, split.n_evaluation, seed)])


def _split_note(splittable: np.ndarray, n_guide: np.ndarray, n_eval: np.ndarray, seed: int) -> str:
    ok = splittable.astype(bool)
    spread = lambda c: f"{int(c.min())}-{int(c.max())}" if c.size else "-"  # noqa: E731
    return (f"observers split per image (seed {seed}): {int(ok.sum())} of {ok.size} training images split, guide "
            f"{spread(n_guide[ok])} / evaluation {spread(n_eval[ok])} observers; {int((~ok).sum())} images cannot be "
            f"split (mixers get no gaze on them, labels all of it)")


def _registered_split(name: str, root: str | None, fixations: Sequence[str] | str | None, seed: int,
                      val_fraction: float, max_bad_fraction: float
                      ) -> tuple[list[GazeSample], list[GazeSample], list[str], list[str]]:
    """A registered data set's records with labels and photographs: train, validation, class names, notes."""
    from data_adapters.base import AdapterError
    from gazemix.datasets import DataSetError, get_data_set

    try:
        reader = get_data_set(name).open(root=root, fixations=_as_list(fixations))
        samples = list(reader)
    except DataSetError as err:
        raise DataError(f"{_FLAGS.get(err.option or '', '--data')}: {err}") from None
    except (AdapterError, OSError) as err:
        raise DataError(f"--data {name}: {err}") from None
    skipped = list(getattr(reader, "skipped", ()))
    total = len(samples) + len(skipped)
    if total and len(skipped) > max_bad_fraction * total:
        raise DataError(f"--data {name}: {len(skipped)} of {total} records are malformed (more than "
                        f"--max-bad-fraction {max_bad_fraction:g}); first: {skipped[0]}")
    notes = [f"skipped {len(skipped)} malformed records of {total}, e.g. {skipped[0]}"] if skipped else []
    names = getattr(reader, "class_names", None) or getattr(reader, "classes", None)
    if not samples:
        raise DataError(f"--data {name}: no records found; check --root and --fixations")
    if not names or any(s.label is None for s in samples):
        raise DataError(f"--data {name}: its records carry no class labels, so it cannot be trained on"
                        + (" (cub-gha takes them from --root CUB_200_2011)" if name == "cub-gha" else
                           "; train on demo, folder, cub-gha, coco-search18 or cat2000"))
    if any(s.image_path is None for s in samples):
        raise DataError(f"--data {name}: records without a photograph; pass the image folder as --root"
                        + (" (the CUB_200_2011 folder)" if name == "cub-gha" else ""))
    splits = [s.meta.get("split") for s in samples]
    if all(sp is not None for sp in splits) and "train" in splits and len(set(splits)) > 1:
        train = [s for s, sp in zip(samples, splits) if sp == "train"]
        val = [s for s, sp in zip(samples, splits) if sp != "train"]
    else:
        order = np.random.default_rng(seed).permutation(len(samples))
        n_val = max(1, int(round(val_fraction * len(samples))))
        train, val = [samples[i] for i in order[n_val:]], [samples[i] for i in order[:n_val]]
        notes.append(f"no train/test split in the records: a seeded {val_fraction:.0%} hold-out (seed {seed})")
    return train, val, list(names), notes


def _folder_split(root: Path, seed: int, val_fraction: float) -> tuple[list[GazeSample], list[GazeSample], list[str]]:
    """``root/train`` + ``root/val`` when both exist, else a seeded ``val_fraction`` hold-out of ``root``."""
    from data_adapters.folder import FolderGaze
    if (root / "train").is_dir() and (root / "val").is_dir():
        tr, va = FolderGaze(root / "train"), FolderGaze(root / "val")
        if tr.classes != va.classes:
            raise DataError(f"{root}/train and {root}/val have different class folders: "
                            f"{sorted(set(tr.classes) ^ set(va.classes))[:5]}")
        return list(tr), list(va), tr.classes
    src = FolderGaze(root)
    samples = list(src)
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = max(1, int(round(val_fraction * len(samples)))) if samples else 0
    return [samples[i] for i in order[n_val:]], [samples[i] for i in order[:n_val]], src.classes
