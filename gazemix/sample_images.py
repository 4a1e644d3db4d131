"""Real photographs that ship with scikit-image, as a small labelled batch (no download needed)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data

# (name, loader) — every image is a photograph scikit-image ships in its wheel.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "coins", "camera", "immunohistochemistry", "hubble_deep_field")


def load_photo(name: str) -> np.ndarray:
    """An RGB ``uint8`` photograph from ``skimage.data`` (greyscale ones are repeated to 3 channels)."""
    if name not in PHOTOS:
        raise ValueError(f"unknown sample photo {name!r}; choose from {', '.join(PHOTOS)}")
    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img[..., :3]


def square_photo(name: str, size: int) -> torch.Tensor:
    """A photograph centre-cropped to a square and resized (antialiased) to ``(3, size, size)`` in [0, 1]."""
    img = torch.from_numpy(load_photo(name)).permute(2, 0, 1).float() / 255.0
    h, w = img.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = img[:, top:top + s, left:left + s].unsqueeze(0)
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def sample_batch(n: int, size: int = 224) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``n`` photographs (cycling through :data:`PHOTOS`), centre-cropped and resized to ``size``.

    Returns ``(images (n, 3, size, size) in [0, 1], labels (n,) = photo index, class names)``.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    tiles = [square_photo(name, size) for name in PHOTOS]
    labels = torch.arange(n) % len(PHOTOS)
    return torch.stack([tiles[i] for i in labels.tolist()]), labels, list(PHOTOS)
