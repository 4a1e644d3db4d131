"""The timm Mixup/CutMix switch (``timm.data.Mixup``, used by the DeiT recipe, Touvron et al. 2021).

Per batch (``mode="batch"``) or per sample (``mode="elem"``): with probability ``prob`` mix, and then use
CutMix with probability ``switch_prob``, else Mixup. timm pairs sample ``i`` with ``B - 1 - i`` (flip). CutMix
boxes end at ``c + cut // 2`` as in timm before 1.0 (the DeiT recipe's version) and the original CutMix;
``box_edges="timm"`` ends them at ``c + (cut + 1) // 2`` as timm >= 1.0 (:func:`~gazemix.mixers.boxes.cutmix_boxes`).
Unlike timm, this never modifies the input batch, accepts odd batch sizes, is vectorised in ``elem``
mode, and does not smooth labels unless ``label_smoothing`` is given (timm silently defaults to 0.1).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from gazemix.contract import Mixer, MixResult, blend, check_pairing, check_range, sample_beta
from gazemix.mixers.boxes import BOX_EDGES, box_area_fraction, boxes_to_mask, cutmix_boxes
from gazemix.mixers.cutmix import paste_boxes
from gazemix.registry import register_mixer


@register_mixer
class MixupCutMixSwitch(Mixer):
    """Mixup or CutMix, chosen at random per batch or per sample (timm / DeiT defaults).

    Args:
        mixup_alpha: Beta concentration of the Mixup branch (DeiT: 0.8).
        cutmix_alpha: Beta concentration of the CutMix branch (DeiT: 1.0).
        switch_prob: probability of CutMix when mixing (DeiT: 0.5).
        prob: probability of mixing at all (DeiT: 1.0); unmixed samples keep ``lam = 1``.
        mode: ``"batch"`` or ``"elem"``.
        pairing: ``"flip"`` (timm), ``"randperm"`` or ``"roll"``.
        correct_lam: CutMix ``lam`` from the clipped box area (timm default True).
        box_edges: ``"cutmix"`` (timm < 1.0, DeiT; default) or ``"timm"`` (timm >= 1.0).
    """

    name = "switch"
    summary = "timm/DeiT switch: Mixup or CutMix per batch or per sample"
    reference = "timm.data.Mixup; Touvron et al., Training data-efficient image transformers (DeiT), ICML 2021"
    modes = ("batch", "elem")

    def __init__(self, *, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, switch_prob: float = 0.5,
                 prob: float = 1.0, mode: str = "batch", pairing: str = "flip", correct_lam: bool = True,
                 box_edges: str = "cutmix", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("mixup_alpha", mixup_alpha, 0.0, float("inf"), hi_open=True)
        check_range("cutmix_alpha", cutmix_alpha, 0.0, float("inf"), hi_open=True)
        check_range("switch_prob", switch_prob, 0.0, 1.0)
        check_range("prob", prob, 0.0, 1.0)
        if mixup_alpha == 0 and cutmix_alpha == 0:
            raise ValueError("at least one of mixup_alpha and cutmix_alpha must be > 0")
        if mode not in self.modes:
            raise ValueError(f"mode must be 'batch' or 'elem', got {mode!r}")
        check_pairing(pairing)
        if box_edges not in BOX_EDGES:
            raise ValueError(f"box_edges must be one of {BOX_EDGES}, got {box_edges!r}")
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.switch_prob, self.prob, self.mode, self.pairing = float(switch_prob), float(prob), mode, pairing
        self.correct_lam, self.box_edges = bool(correct_lam), box_edges

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b, hw = images.shape[0], tuple(images.shape[-2:])
        n = 1 if self.mode == "batch" else b
        applied = torch.rand(n, generator=generator) < self.prob
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = torch.rand(n, generator=generator) < self.switch_prob
        else:
            use_cutmix = torch.full((n,), self.cutmix_alpha > 0)
        lam_mix = sample_beta(self.mixup_alpha, n, generator) if self.mixup_alpha > 0 else torch.ones(n)
        lam_cut = sample_beta(self.cutmix_alpha, n, generator) if self.cutmix_alpha > 0 else torch.ones(n)
        boxes = cutmix_boxes(hw, lam_cut, generator, self.box_edges)
        expand = (lambda t: t.expand(b, *t.shape[1:])) if n == 1 else (lambda t: t)
        return {"applied": expand(applied), "use_cutmix": expand(use_cutmix), "lam_mixup": expand(lam_mix),
                "lam_cutmix_sampled": expand(lam_cut), "boxes": expand(boxes),
                "index": self.partners(b, generator, self.pairing, context)}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        hw = tuple(images.shape[-2:])
        dev = images.device
        index = params["index"].to(dev)
        applied, cut = params["applied"].to(dev), params["use_cutmix"].to(dev)
        boxes = params["boxes"]
        lam_cut = (1.0 - box_area_fraction(boxes, hw)).float() if self.correct_lam else params["lam_cutmix_sampled"]
        lam = torch.where(cut, lam_cut.to(dev), params["lam_mixup"].to(dev))
        lam = torch.where(applied, lam, torch.ones_like(lam))
        if self.mode == "batch" and not bool(applied[0]):
            mixed, share = images.clone(), torch.ones(1, 1, 1, 1, device=dev, dtype=images.dtype)
        elif self.mode == "batch" and bool(cut[0]):
            mixed, share = paste_boxes(images, index, boxes[:1])
        elif self.mode == "batch":
            share = lam[:1].view(1, 1, 1, 1).to(images.dtype)
            mixed = blend(images, index, share)
        else:
            inside = boxes_to_mask(boxes, hw, dev)
            row_share = torch.where(applied, lam, torch.ones_like(lam)).view(-1, 1, 1, 1).to(images.dtype)
            # CutMix rows: 0 inside the box, 1 outside; Mixup rows (and unmixed rows): their constant share
            share = torch.where(inside & (cut & applied).view(-1, 1, 1, 1), 0.0, torch.where(cut.view(-1, 1, 1, 1), 1.0, row_share))
            mixed = blend(images, index, share)
        return self.pair_result(images, mixed, targets, index, share, lam, params)
