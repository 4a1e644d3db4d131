"""Training data: images, labels and (when the data set has them) human gaze maps, cropped and flipped together.

Data sets yield *un-augmented* samples at a fixed base size ``P = floor(S / crop_pct)`` (train) — the image
fitted with ``gazemix.gaze.fit_image(..., fit="center_crop")`` and its gaze map rendered with the same fit —
or the evaluation crop (``Resize(P)`` + ``CenterCrop(S)``, DeiT's ``crop_pct = 0.875``). The training
augmentation runs on the batch, on the device, from an explicit generator (:class:`BatchAugment`):
the DeiT random-resized crop + horizontal flip (Touvron et al., ICML 2021), applied to the image and its gaze
map *together* by ``gazemix.gaze.crop_flip``, then ImageNet normalisation. A crop that holds no gaze mass
gets a uniform map (it carries no location signal) and is counted in the epoch's metrics.

Sources: ``demo`` (the embedded synthetic set, :func:`gazemix.demo.make_demo`), ``cub`` (CUB-200-2011 images
with CUB-GHA fixations, ``data_adapters.cub_gha``), ``folder`` (``data_adapters.folder.FolderGaze``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from data_adapters.base import GazeSample
from gazemix.gaze import crop_flip, fit_image, render_gaze_maps, sample_crop_boxes

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
        b = images.shape[0]
        boxes = sample_crop_boxes(b, tuple(images.shape[-2:]), scale=self.crop_scale, generator=generator)
        flip = torch.rand(b, generator=generator) < 0.5
        maps = gaze if gaze is not None else images.new_zeros(b, 1, *images.shape[-2:])
        crops, maps, valid = crop_flip(images, maps, boxes, flip.to(images.device), (self.img_size, self.img_size))
        crops = (crops - self.mean.to(crops)) / self.std.to(crops)
        if gaze is None:
            return crops, None, crops.new_zeros(())
        uniform = torch.full_like(maps, 1.0 / (self.img_size * self.img_size))
        return crops, torch.where(valid.view(-1, 1, 1, 1), maps, uniform), (~valid).sum()

    def normalise(self, images: Tensor) -> Tensor:
        return (images - self.mean.to(images)) / self.std.to(images)


class TensorGazeDataset(Dataset):
    """An in-memory data set: ``images (N, 3, H, W)`` in [0, 1], ``labels (N,)``, optional ``gaze (N, 1, H, W)``.

    Items are ``(image, label)`` or ``(image, label, gaze)``, un-augmented.
    """

    def __init__(self, images: Tensor, labels: Tensor, gaze: Tensor | None = None) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise DataError(f"labels must be (N,) = ({images.shape[0]},), got {tuple(labels.shape)}")
        if gaze is not None and (gaze.ndim != 4 or gaze.shape[0] != images.shape[0] or gaze.shape[1] != 1
                                 or gaze.shape[-2:] != images.shape[-2:]):
            raise DataError(f"gaze must be (N, 1, H, W) = ({images.shape[0]}, 1, {images.shape[2]}, "
                            f"{images.shape[3]}), got {tuple(gaze.shape)}")
        self.images, self.labels, self.gaze = images.float(), labels.long(), gaze

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        item = (self.images[i], self.labels[i])
        return item if self.gaze is None else item + (self.gaze[i].float(),)


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
    """

    def __init__(self, samples: Sequence[GazeSample], img_size: int, *, train: bool,
                 sigma_px: float | None = None) -> None:
        missing = [s.image_id for s in samples if s.image_path is None or s.label is None]
        if missing:
            raise DataError(f"{len(missing)} samples have no image file or no label (first: {missing[:3]}): "
                            f"training needs both; check --root")
        self.samples, self.img_size, self.train, self.sigma_px = list(samples), int(img_size), train, sigma_px
        self.labels = np.array([s.label for s in self.samples], dtype=np.int64)
        self.has_gaze = train and all(s.fixations is not None or s.gaze_map_path is not None for s in self.samples)

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
        if s.gaze_map_path is not None:
            g = fit_image(_read_image(s.gaze_map_path, "L"), (p, p), "center_crop").clamp_min(0)
            mass = g.sum()
            g = g / mass if mass > 0 else torch.full_like(g, 1.0 / g.numel())
        else:
            g = render_gaze_maps([s.fixations], [tuple(image.shape[-2:])], (p, p), sigma_px=self.sigma_px,
                                 fit="center_crop", on_empty="uniform").maps[0]
        return img, label, g


def _read_image(path: str | os.PathLike, mode: str) -> Tensor:
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
    except OSError as err:
        raise DataError(f"{path}: cannot read the image ({err})") from err
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous() if arr.ndim == 3 else torch.from_numpy(arr)[None]


@dataclass
class TrainData:
    """The train and validation sets of one run, with the class names and whether gaze maps come along."""

    train: Dataset
    val: Dataset
    class_names: list[str]
    has_gaze: bool
    description: str

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


def build_data(data: str, root: str | None, img_size: int, *, gaze_root: str | None = None, seed: int = 0,
               demo_train: int = 512, demo_val: int = 128, val_fraction: float = 0.1) -> TrainData:
    """The train/validation sets named by ``--data``.

    ``demo``: the embedded synthetic set. ``cub``: ``root`` = the ``CUB_200_2011`` folder, ``gaze_root`` = CUB-GHA's
    ``data_5runs`` folder; CUB's own train/test split. ``folder``: ``root/<class>/<image>`` with gaze beside each
    image; ``root/train`` + ``root/val`` when both exist, else a seeded ``val_fraction`` hold-out.
    """
    if data == "demo":
        from gazemix.demo import make_demo
        tr = make_demo(n=demo_train, size=base_size(img_size), seed=seed)
        va = make_demo(n=demo_val, size=img_size, seed=seed + 1)
        return TrainData(TensorGazeDataset(tr.images, tr.labels, tr.gaze), TensorGazeDataset(va.images, va.labels),
                         list(tr.class_names), True, f"the synthetic demo set ({demo_train} train / {demo_val} val)")
    if root is None:
        raise DataError(f"--data {data} needs --root: the folder you downloaded the data set to")
    if data == "cub":
        from data_adapters.cub_gha import CubGha
        if gaze_root is None:
            raise DataError("--data cub needs --gaze-root: the CUB-GHA folder holding Fixation_run<k>.txt "
                            "(--root is the CUB_200_2011 folder)")
        source = CubGha(gaze_root, root)
        if not source.class_names:
            raise DataError(f"{root}: no CUB-200-2011 classes.txt: --root must be the CUB_200_2011 folder")
        train = [s for s in source if s.meta.get("split") == "train"]
        val = [s for s in source if s.meta.get("split") == "test"]
        names = list(source.class_names)
        desc = f"CUB-200-2011 at {root} with CUB-GHA gaze from {gaze_root}"
    elif data == "folder":
        train, val, names = _folder_split(Path(root), seed, val_fraction)
        desc = f"image folder {root}"
    else:
        raise DataError(f"--data must be demo, cub or folder, got {data!r}")
    tr = FileGazeDataset(train, img_size, train=True)
    return TrainData(tr, FileGazeDataset(val, img_size, train=False), names, tr.has_gaze, desc)


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
