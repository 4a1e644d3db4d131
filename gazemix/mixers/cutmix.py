"""CutMix (Yun, Han, Oh, Chun, Choe, Yoo, "CutMix: Regularization Strategy to Train Strong Classifiers
with Localizable Features", ICCV 2019).

Official code: clovaai/CutMix-PyTorch ``train.py``: ``lam ~ Beta(1, 1)``, one box for the whole batch,
partner ``randperm``, box side ``cut = int(H * sqrt(1 - lam))`` around a uniform centre ``c`` at
``[c - cut // 2, c + cut // 2)`` (also timm before 1.0 and torchvision; timm >= 1.0 ends it at
``c + (cut + 1) // 2``: ``box_edges="timm"``), clipped, and ``lam`` recomputed from the clipped area (the "true
lambda", CutMix-PyTorch issue #1).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from gazemix.contract import Mixer, MixResult, blend, check_pairing, check_range, sample_beta
from gazemix.mixers.boxes import BOX_EDGES, box_area_fraction, boxes_to_mask, cutmix_boxes
from gazemix.registry import register_mixer


def paste_boxes(images: Tensor, index: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Paste ``images[index]`` into ``images`` inside ``boxes``; returns ``(mixed, own_share)``.

    When every sample shares one box (batch mode) this is a clone plus one slice copy; otherwise a single
    ``torch.where`` over a box mask built from ``arange`` comparisons.
    """
    hw = images.shape[-2:]
    if boxes.shape[0] == 1 or bool((boxes == boxes[:1]).all()):
        y1, x1, y2, x2 = (int(v) for v in boxes[0])
        mixed = images.clone()
        mixed[:, :, y1:y2, x1:x2] = images[index, :, y1:y2, x1:x2]
        inside = boxes_to_mask(boxes[:1], hw, images.device)
    else:
        inside = boxes_to_mask(boxes, hw, images.device)
        mixed = blend(images, index, ~inside)
    return mixed, ~inside


@register_mixer
class CutMix(Mixer):
    """Paste a box of the partner; label ``lam = 1 - pasted area / (H W)``.

    Args:
        alpha: Beta(alpha, alpha) for the box size (official: 1.0).
        mode: ``"batch"`` (one box per batch, official) or ``"elem"`` (a box per sample).
        pairing: ``"randperm"`` (official), ``"flip"`` (timm) or ``"roll"`` (torchvision).
        correct_lam: recompute ``lam`` from the clipped box (official and paper: True).
        box_edges: ``"cutmix"`` (``[c - cut // 2, c + cut // 2)``, official) or ``"timm"`` (timm >= 1.0: the high
            edge at ``c + (cut + 1) // 2``).
    """

    name = "cutmix"
    summary = "paste a random box of the partner, label 1 - pasted area"
    reference = "Yun et al., CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features, ICCV 2019"
    modes = ("batch", "elem")

    def __init__(self, *, alpha: float = 1.0, mode: str = "batch", pairing: str = "randperm",
                 correct_lam: bool = True, box_edges: str = "cutmix", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("alpha", alpha, 0.0, float("inf"), lo_open=True, hi_open=True)
        if mode not in self.modes:
            raise ValueError(f"mode must be 'batch' or 'elem', got {mode!r}")
        check_pairing(pairing)
        if box_edges not in BOX_EDGES:
            raise ValueError(f"box_edges must be one of {BOX_EDGES}, got {box_edges!r}")
        self.alpha, self.mode, self.pairing, self.correct_lam = float(alpha), mode, pairing, bool(correct_lam)
        self.box_edges = box_edges

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b, hw = images.shape[0], tuple(images.shape[-2:])
        n = 1 if self.mode == "batch" else b
        lam = sample_beta(self.alpha, n, generator)
        boxes = cutmix_boxes(hw, lam, generator, self.box_edges)
        boxes = boxes.expand(b, 4) if n == 1 else boxes
        return {"lam_sampled": lam.expand(b), "boxes": boxes, "index": self.partners(b, generator, self.pairing, context)}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        hw = tuple(images.shape[-2:])
        index = params["index"].to(images.device)
        boxes = params["boxes"]
        mixed, own_share = paste_boxes(images, index, boxes)
        lam = (1.0 - box_area_fraction(boxes, hw)).float() if self.correct_lam else params["lam_sampled"]
        return self.pair_result(images, mixed, targets, index, own_share, lam, params, partner_box=boxes)
