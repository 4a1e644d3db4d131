"""Training data: images, labels and (when the data set has them) human gaze maps, cropped and flipped together.

The training transform is the DeiT one (Touvron et al., ICML 2021: random-resized crop + horizontal flip,
ImageNet normalisation). The gaze map travels as a fourth channel through the *same* crop and flip, so it
stays registered to the pixels, and is then renormalised to total mass 1 (the gaze that falls inside the
crop); a crop that holds no gaze keeps an all-zero map, which gaze-guided mixers see as "no signal".
Evaluation: resize to ``S / crop_pct`` and centre-crop ``S`` (DeiT, ``crop_pct = 0.875``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

__all__ = ["DataError", "GazeTransform", "TensorGazeDataset", "TrainData"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(ValueError):
    """A data set that cannot be trained on (empty, wrong shapes, labels outside the class range)."""


class GazeTransform:
    """Image ``(3, H, W)`` float in [0, 1] plus optional gaze ``(1, H, W)`` → normalised image and gaze map.

    Args:
        img_size: output side ``S``.
        train: random-resized crop + flip (True) or resize + centre crop (False).
        crop_scale: area range of the random-resized crop (DeiT: (0.08, 1); TdAttenMix's CUB recipe: (0.5, 1)).
        crop_pct: evaluation centre-crop fraction (DeiT: 0.875).
        mean, std: normalisation of the RGB channels (the model's pretrained config).
    """

    def __init__(self, img_size: int, *, train: bool, crop_scale: tuple[float, float] = (0.08, 1.0),
                 crop_pct: float = 0.875, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        if train:
            self.geometry = v2.Compose([v2.RandomResizedCrop(img_size, scale=crop_scale, antialias=True),
                                        v2.RandomHorizontalFlip()])
        else:
            self.geometry = v2.Compose([v2.Resize(int(math.floor(img_size / crop_pct)), antialias=True),
                                        v2.CenterCrop(img_size)])
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, image: Tensor, gaze: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        stacked = image if gaze is None else torch.cat([image, gaze.to(image.dtype)], dim=0)
        out = self.geometry(stacked)
        img = (out[:3] - self.mean) / self.std
        if gaze is None:
            return img, None
        g = out[3:].clamp_min(0)
        mass = g.sum()
        return img, (g / mass if mass > 0 else g)


class TensorGazeDataset(Dataset):
    """An in-memory data set: ``images (N, 3, H, W)`` in [0, 1], ``labels (N,)``, optional ``gaze (N, 1, H, W)``.

    Items are ``(image, label)`` or ``(image, label, gaze)``.
    """

    def __init__(self, images: Tensor, labels: Tensor, transform: GazeTransform, gaze: Tensor | None = None) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise DataError(f"labels must be (N,) = ({images.shape[0]},), got {tuple(labels.shape)}")
        if gaze is not None and (gaze.ndim != 4 or gaze.shape[0] != images.shape[0] or gaze.shape[1] != 1
                                 or gaze.shape[-2:] != images.shape[-2:]):
            raise DataError(f"gaze must be (N, 1, H, W) = ({images.shape[0]}, 1, {images.shape[2]}, "
                            f"{images.shape[3]}), got {tuple(gaze.shape)}")
        self.images, self.labels, self.gaze, self.transform = images, labels.long(), gaze, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        img, g = self.transform(self.images[i].float(), None if self.gaze is None else self.gaze[i])
        return (img, self.labels[i]) if g is None else (img, self.labels[i], g)


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
        labels = _labels(self.train)
        if labels is not None and labels.size and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise DataError(f"{self.description}: labels range over [{labels.min()}, {labels.max()}] but there are "
                            f"{len(self.class_names)} classes")


def _labels(ds: Dataset) -> np.ndarray | None:
    labels = getattr(ds, "labels", None)
    return None if labels is None else np.asarray(labels)


LoaderFn = Callable[..., TrainData]
