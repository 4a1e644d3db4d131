"""SaliencyMix (Uddin, Monira, Shin, Chung, Bae, "SaliencyMix: A Saliency Guided Data Augmentation Strategy
for Better Regularization", ICLR 2021).

Paper: the partner's saliency map is computed, its peak ``(r, c)`` is the centre of a CutMix-sized box
(side ``int(H sqrt(1 - lam))``, clipped), and that box of the partner is pasted onto the own image *at the
same place*; ``lam = 1 - pasted area / (H W)``.
Official code (afm-shahab-uddin/SaliencyMix ``saliency_bbox``/``train.py``): OpenCV's fine-grained static
saliency; one ``lam`` and **one box for the whole batch**, from the saliency of the first partner only
(``per_sample=False`` here). The default ``per_sample=True`` follows the paper: a ``lam``, a saliency map and a
box per sample. The official code takes the argmax of the map quantised to ``uint8``; here the float map's
argmax (first in raster order on ties) is used.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from gazemix.attention.saliency import BACKENDS, bottom_up_saliency
from gazemix.contract import MixResult, check_pairing, check_range, sample_beta
from gazemix.mixers.boxes import box_area_fraction, boxes_around
from gazemix.mixers.cutmix import paste_boxes
from gazemix.mixers.saliency_guided import SaliencyGuidedMixer
from gazemix.registry import register_mixer


def saliency_peaks(saliency: Tensor) -> tuple[Tensor, Tensor]:
    """Row and column of each ``(n, 1, H, W)`` map's maximum (first in raster order on ties)."""
    w = saliency.shape[-1]
    flat = saliency.flatten(1).argmax(dim=1)
    return flat // w, flat % w


def peak_boxes(saliency: Tensor, lam: Tensor) -> Tensor:
    """SaliencyMix boxes: CutMix sides for ``lam`` ``(n,)``, centred on each map's peak, clipped. ``(n, 4)``."""
    h, w = saliency.shape[-2:]
    ratio = torch.sqrt((1.0 - lam.double()).clamp(0.0, 1.0)).to(saliency.device)
    cy, cx = saliency_peaks(saliency)
    return boxes_around(cy, cx, (h * ratio).floor().long() // 2, (w * ratio).floor().long() // 2, (h, w))


@register_mixer
class SaliencyMix(SaliencyGuidedMixer):
    """Paste the box around the partner's saliency peak at the same place; label ``1 - pasted area``.

    Saliency comes from ``saliency_source``: ``"fine_grained"`` (OpenCV contrib, the paper's and official
    map; default), ``"spectral_residual"`` (batched torch FFT, fast deviation), ``"context"`` (a
    ``saliency=`` map passed in the call) or ``"gaze"`` (the ``gaze=`` map: human saliency).

    Args:
        alpha: Beta(alpha, alpha) for the box size (paper and official: 1.0).
        per_sample: a box per sample (paper, default) or one box for the batch from the first partner's
            saliency (official code).
        prob: probability of mixing a batch (official: 0.5 on CIFAR, 1.0 on ImageNet); unmixed batches keep
            ``lam = 1``.
        saliency_source: see above.
        pairing: ``"randperm"`` (official), ``"flip"`` or ``"roll"``.
    """

    name = "saliencymix"
    summary = "paste the box around the partner's saliency peak at the same place, label 1 - pasted area"
    reference = ("Uddin et al., SaliencyMix: A Saliency Guided Data Augmentation Strategy for Better "
                 "Regularization, ICLR 2021")
    saliency_sources = BACKENDS + ("context", "gaze")
    needs = ()  # the default source reads the pixels only

    def __init__(self, *, alpha: float = 1.0, per_sample: bool = True, prob: float = 1.0,
                 saliency_source: str = "fine_grained", pairing: str = "randperm", **kwargs: Any) -> None:
        super().__init__(saliency_source=saliency_source, **kwargs)
        check_range("alpha", alpha, 0.0, float("inf"), lo_open=True, hi_open=True)
        check_range("prob", prob, 0.0, 1.0)
        check_pairing(pairing)
        self.alpha, self.per_sample, self.prob, self.pairing = float(alpha), bool(per_sample), float(prob), pairing

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b = images.shape[0]
        applied = bool(torch.rand(1, generator=generator) < self.prob)
        lam = sample_beta(self.alpha, b if self.per_sample else 1, generator)
        index = self.partners(b, generator, self.pairing, context)
        if not applied:
            return {"applied": False, "lam_sampled": lam.expand(b), "index": index,
                    "boxes": torch.zeros(b, 4, dtype=torch.long)}
        rows = index.to(images.device) if self.per_sample else index[:1].to(images.device)  # the partners' maps
        if self.saliency_source in BACKENDS and not self.per_sample:  # the one partner's map alone
            saliency = bottom_up_saliency(images[rows], self.saliency_source)
        elif self.saliency_source in BACKENDS:  # every image is a partner: the whole batch (shared by callers)
            saliency = bottom_up_saliency(images, self.saliency_source)[rows]
        else:
            saliency = self.saliency(images, targets, context)[rows]
        boxes = peak_boxes(saliency, lam.to(images.device)).cpu()
        return {"applied": True, "lam_sampled": lam.expand(b), "index": index, "boxes": boxes.expand(b, 4)}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        b, hw = images.shape[0], tuple(images.shape[-2:])
        index = params["index"].to(images.device)
        if not params["applied"]:
            share = torch.ones(1, 1, 1, 1, device=images.device, dtype=images.dtype)
            return self.pair_result(images, images.clone(), targets, index, share, torch.ones(b), params)
        boxes = params["boxes"]
        mixed, own_share = paste_boxes(images, index, boxes)
        lam = (1.0 - box_area_fraction(boxes, hw)).float()
        return self.pair_result(images, mixed, targets, index, own_share, lam, params)
