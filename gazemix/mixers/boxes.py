"""Shape-level helpers shared by the box mixers: sampling boxes and turning them into masks.

Boxes are integer ``(B, 4)`` tensors ``(y1, x1, y2, x2)``, half-open, in pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor


BOX_EDGES = ("cutmix", "timm")


def cutmix_boxes(hw: tuple[int, int], lam: Tensor, generator: torch.Generator, edges: str = "cutmix") -> Tensor:
    """CutMix boxes (Yun et al. 2019, official ``rand_bbox``) for own-weights ``lam`` ``(B,)``.

    Side ``cut = int(H * sqrt(1 - lam))``, centre ``c`` uniform over every pixel, clipped to the image — so the box
    may be cut at the border and its area must be measured after clipping. ``edges``: ``"cutmix"`` puts the box at
    ``[c - cut // 2, c + cut // 2)`` as the original CutMix code, timm before 1.0 (DeiT) and torchvision do (an
    odd side loses one pixel); ``"timm"`` at ``[c - cut // 2, c + (cut + 1) // 2)`` as timm >= 1.0 does.
    """
    if edges not in BOX_EDGES:
        raise ValueError(f"box edges must be one of {BOX_EDGES}, got {edges!r}")
    h, w = hw
    n = lam.shape[0]
    ratio = torch.sqrt((1.0 - lam.double()).clamp(0.0, 1.0))
    cut_h, cut_w = (h * ratio).floor().long(), (w * ratio).floor().long()
    cy = torch.randint(0, h, (n,), generator=generator)
    cx = torch.randint(0, w, (n,), generator=generator)
    if edges == "cutmix":
        return boxes_around(cy, cx, cut_h // 2, cut_w // 2, hw)
    return clip_boxes(cy - cut_h // 2, cx - cut_w // 2, cy + (cut_h + 1) // 2, cx + (cut_w + 1) // 2, hw)


def boxes_around(cy: Tensor, cx: Tensor, half_h: Tensor, half_w: Tensor, hw: tuple[int, int]) -> Tensor:
    """Boxes ``[c - half, c + half)`` clipped to the image, as CutMix and SaliencyMix build them."""
    return clip_boxes(cy - half_h, cx - half_w, cy + half_h, cx + half_w, hw)


def clip_boxes(y1: Tensor, x1: Tensor, y2: Tensor, x2: Tensor, hw: tuple[int, int]) -> Tensor:
    """``(B, 4)`` boxes ``(y1, x1, y2, x2)`` clipped to an image of ``hw``."""
    h, w = hw
    return torch.stack([y1.clamp(0, h), x1.clamp(0, w), y2.clamp(0, h), x2.clamp(0, w)], dim=1)


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
