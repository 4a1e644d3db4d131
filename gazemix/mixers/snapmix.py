"""SnapMix (Huang, Wang, Tao, "SnapMix: Semantically Proportional Mixing for Augmenting Fine-grained Data",
AAAI 2021).

Paper and official code (Shaoli-Huang/SnapMix ``utils/mixmethod.py``): the semantic percent map (SPM) of each
image is the CAM of its ground-truth class from the model under training, shifted to a zero minimum and
divided by its sum. Two CutMix boxes are drawn, ``box`` for ``lam`` and ``box1`` for ``lam1`` (both
``~ Beta(5, 5)``, centre uniform, clipped; one pair per batch in the official code); the partner's ``box1`` is
bilinearly resized (``align_corners=True``) into the own image's ``box``. Label weights are the SPM mass
(they need not sum to 1): ``lam_own = 1 - SPM_i(box)``, ``lam_partner = SPM_j(box1)``; an empty box leaves the
batch unmixed.

Where paper and code differ: for a pair of the same class the official code adds each weight to the other
(doubling that class's weight, ``official_same_label=True``); the paper's loss ``rho_a L(y_a) + rho_b L(y_b)``
gives weight ``rho_a + rho_b`` once, which is what the default soft target does. A constant CAM (no
semantic information) is treated as a uniform SPM, so labels become box areas; the official code's NaN
fallback gives the partner ``area(box)`` instead of ``area(box1)``.
Replay: the partner map is cropped to ``box1`` and resized into ``box`` mass-preservingly (:class:`BoxWarp`).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from gazemix.attention.cam import class_activation_map, grad_cam
from gazemix.contract import BoxWarp, MixResult, box_sums, check_pairing, check_range, sample_beta
from gazemix.mixers.boxes import box_area_fraction, boxes_to_mask, cutmix_boxes
from gazemix.mixers.saliency_guided import SaliencyGuidedMixer
from gazemix.registry import register_mixer

def box_mass(maps: Tensor, boxes: Tensor) -> Tensor:
    """Mass of each map's semantic percent map inside its ``(B, 4)`` box, ``(B,)`` float64.

    SnapMix's SPM is each ``(B, 1, H, W)`` map minus its minimum, divided by its sum
    (:func:`~gazemix.attention.cam.normalise_cam`); its mass in a box is the shifted map's sum over the box alone
    (slice sums, no mask) divided by its total. A constant or non-finite map (no SPM; a uniform one in SnapMix) gives
    the box's area fraction.
    """
    b, _, h, w = maps.shape
    maps = maps.detach().to(torch.promote_types(maps.dtype, torch.float32))  # half-precision sums would be too coarse
    shifted = maps - maps.flatten(1).min(dim=1).values.view(-1, 1, 1, 1)  # >= 0: no cancellation in the sums
    total = shifted.flatten(1).sum(dim=1).double()
    inside = box_sums(shifted, torch.arange(b, device=maps.device), boxes)[:, 0].double()
    mass = inside / total.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where((total > 0) & torch.isfinite(mass), mass, box_area_fraction(boxes, (h, w)).to(maps.device))


@register_mixer
class SnapMix(SaliencyGuidedMixer):
    """Resize a partner box into an own box; labels are the CAM mass removed and pasted (need not sum to 1).

    Args:
        beta: Beta(beta, beta) for both box sizes (official: 5.0).
        prob: probability of mixing a batch (official: 1.0).
        mode: ``"batch"`` (one box pair per batch, official) or ``"elem"`` (a pair per sample).
        saliency_source: ``"cam"`` (CAM of ``model=``, paper; default), ``"grad_cam"``, ``"context"`` (a
            ``saliency=`` map used as the CAM) or ``"gaze"`` (human gaze as the semantic map).
        official_same_label: add the two weights to each other for same-class pairs (official code).
        pairing: ``"randperm"`` (official), ``"flip"`` or ``"roll"``.
    """

    name = "snapmix"
    summary = "resize a partner box into an own box, labels = CAM mass of each box"
    reference = "Huang, Wang, Tao, SnapMix: Semantically Proportional Mixing for Augmenting Fine-grained Data, AAAI 2021"
    modes = ("batch", "elem")
    saliency_sources = ("cam", "grad_cam", "context", "gaze")

    def __init__(self, *, beta: float = 5.0, prob: float = 1.0, mode: str = "batch", saliency_source: str = "cam",
                 official_same_label: bool = False, pairing: str = "randperm", **kwargs: Any) -> None:
        super().__init__(saliency_source=saliency_source, **kwargs)
        check_range("beta", beta, 0.0, float("inf"), lo_open=True, hi_open=True)
        check_range("prob", prob, 0.0, 1.0)
        if mode not in self.modes:
            raise ValueError(f"mode must be 'batch' or 'elem', got {mode!r}")
        check_pairing(pairing)
        self.beta, self.prob, self.mode, self.pairing = float(beta), float(prob), mode, pairing
        self.official_same_label = bool(official_same_label)

    def _maps(self, images: Tensor, targets: Tensor, context: Mapping[str, Any]) -> Tensor:
        if self.saliency_source in ("cam", "grad_cam"):
            classes = targets.to(images.device)
            fn = class_activation_map if self.saliency_source == "cam" else grad_cam
            return fn(context["model"], images, classes)
        return self.saliency(images, targets, context)

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b, hw = images.shape[0], tuple(images.shape[-2:])
        n = 1 if self.mode == "batch" else b
        applied = bool(torch.rand(1, generator=generator) < self.prob)
        lam, lam1 = sample_beta(self.beta, n, generator), sample_beta(self.beta, n, generator)
        box, box1 = cutmix_boxes(hw, lam, generator).expand(b, 4), cutmix_boxes(hw, lam1, generator).expand(b, 4)
        index = self.partners(b, generator, self.pairing, context)
        empty = (box_area_fraction(box, hw) == 0) | (box_area_fraction(box1, hw) == 0)
        active = torch.full((b,), applied) & ~empty
        params = {"index": index, "box": box, "box1": box1, "active": active}
        if not bool(active.any()):
            return {**params, "lam_own": torch.ones(b), "lam_partner": torch.zeros(b)}
        maps = self._maps(images, targets, context)
        idx = index.to(maps.device)
        lam_own = (1.0 - box_mass(maps, box)).float().cpu()
        lam_partner = box_mass(maps[idx], box1).float().cpu()
        if self.official_same_label:
            soft = self.soft(targets, torch.device("cpu"))
            same = (soft == soft[index]).all(dim=1)
            lam_own, lam_partner = (torch.where(same, lam_own + lam_partner, lam_own),
                                    torch.where(same, lam_partner + lam_own, lam_partner))
        lam_own = torch.where(active, lam_own, torch.ones(b))
        lam_partner = torch.where(active, lam_partner, torch.zeros(b))
        return {**params, "lam_own": lam_own, "lam_partner": lam_partner}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        hw = tuple(images.shape[-2:])
        dev = images.device
        index = params["index"].to(dev)
        active = params["active"].to(dev)
        # a sample that is not mixed pastes nothing, so the partner's share is its warp's dst box throughout
        warp = BoxWarp(src=params["box1"].to(dev), dst=params["box"].to(dev), mode="bilinear",
                       align_corners=True).only(active)
        inside = boxes_to_mask(warp.dst, hw, dev)
        mixed = torch.where(inside, warp.apply(images[index]), images)
        return self.pair_result(images, mixed, targets, index, (~inside).to(images.dtype), params["lam_own"],
                                params, partner_weight=params["lam_partner"], partner_warp=warp, partner_box=warp.dst)
