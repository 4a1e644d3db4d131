"""Shape-level helpers shared by the box mixers: sampling boxes and turning them into masks.

Boxes are integer ``(B, 4)`` tensors ``(y1, x1, y2, x2)``, half-open, in pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cutmix_boxes(hw: tuple[int, int], lam: Tensor, generator: torch.Generator) -> Tensor:
    """CutMix boxes (Yun et al. 2019, official ``rand_bbox``) for own-weights ``lam`` ``(B,)``.

    Side ``int(H * sqrt(1 - lam))``, centre uniform over every pixel, half-sides ``side // 2``, clipped to the
    image — so the box may be cut at the border and its area must be measured after clipping.
    """
    h, w = hw
    n = lam.shape[0]
    ratio = torch.sqrt((1.0 - lam.double()).clamp(0.0, 1.0))
    half_h = (h * ratio).floor().long() // 2
    half_w = (w * ratio).floor().long() // 2
    cy = torch.randint(0, h, (n,), generator=generator)
    cx = torch.randint(0, w, (n,), generator=generator)
    return boxes_around(cy, cx, half_h, half_w, hw)


def boxes_around(cy: Tensor, cx: Tensor, half_h: Tensor, half_w: Tensor, hw: tuple[int, int]) -> Tensor:
    """Boxes ``[c - half, c + half)`` clipped to the image, as CutMix and SaliencyMix build them."""
    h, w = hw
    y1 = (cy - half_h).clamp(0, h)
    y2 = (cy + half_h).clamp(0, h)
    x1 = (cx - half_w).clamp(0, w)
    x2 = (cx + half_w).clamp(0, w)
    return torch.stack([y1, x1, y2, x2], dim=1)


def box_area_fraction(boxes: Tensor, hw: tuple[int, int]) -> Tensor:
    """Area of each box divided by ``H * W`` (float64 for exactness)."""
    h, w = hw
    return ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).double() / (h * w)


def boxes_to_mask(boxes: Tensor, hw: tuple[int, int], device: torch.device | None = None) -> Tensor:
    """Boolean ``(B, 1, H, W)`` mask, True inside each box (built from ``arange`` comparisons)."""
    h, w = hw
    boxes = boxes.to(device) if device is not None else boxes
    ys = torch.arange(h, device=boxes.device).view(1, 1, h, 1)
    xs = torch.arange(w, device=boxes.device).view(1, 1, 1, w)
    b = boxes.view(-1, 4, 1, 1)
    rows = (ys >= b[:, 0:1]) & (ys < b[:, 2:3])
    cols = (xs >= b[:, 1:2]) & (xs < b[:, 3:4])
    return rows & cols
