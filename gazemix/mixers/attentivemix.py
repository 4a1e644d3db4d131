"""Attentive CutMix (Walawalkar, Shen, Liu, Savvides, "Attentive CutMix: An Enhanced Data Augmentation
Approach for Deep Learning Based Image Classification", ICASSP 2020).

Paper: a pretrained classifier (ResNet-50) gives the partner's final feature map (a 7 x 7 grid at 224 px);
its ``k = 6`` most activated cells are pasted onto the own image at the same positions; the label weight is
the pasted share, ``k / 49`` for the partner. A cell's score is the channel mean of the feature map, as
OpenMixup's ``attentivemix`` (the paper does not state it precisely; docs/methods/attentivemix.md). OpenMixup's
"AttentiveMix+" (``top_k=None``: ``k = int(lam * cells)``, ``lam ~ Beta(alpha, alpha)``) is offered too.

The grid is whatever the feature extractor yields (``saliency_source="features"``, ``model=`` any timm CNN),
or a ``saliency=``/``gaze=`` map average-pooled to ``grid x grid`` cells. Cells are mapped to pixels by
nearest upsampling, so any image size works; ``lam`` is the exact pixel share of the mask (``1 - k / cells``
when the image divides into the grid).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from gazemix.contract import (MixerInputError, MixResult, check_pairing, check_range, nearest_cell_pixels, sample_beta,
                              upsample_cells)
from gazemix.mixers.saliency_guided import SaliencyGuidedMixer
from gazemix.registry import register_mixer


def top_k_cell_mask(scores: Tensor, k: Tensor) -> Tensor:
    """``(B, h, w)`` boolean mask of each map's ``k[b]`` highest cells (ties broken by ``topk``)."""
    b, h, w = scores.shape
    order = scores.flatten(1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=scores.device).expand(b, -1).contiguous())
    return (rank < k.to(scores.device).view(-1, 1)).view(b, h, w)


@register_mixer
class AttentiveMix(SaliencyGuidedMixer):
    """Paste the partner's ``top_k`` most activated feature-grid cells; label = pasted share.

    Args:
        top_k: cells pasted (paper: 6 of 7 x 7); ``None`` draws ``k = int(lam * cells)`` per sample
            (OpenMixup's AttentiveMix+).
        alpha: Beta(alpha, alpha) for AttentiveMix+ (``top_k=None``).
        saliency_source: ``"features"`` (channel-mean of ``model.forward_features``: a pretrained teacher CNN,
            paper; default), ``"context"`` (``saliency=``) or ``"gaze"`` (``gaze=``).
        grid: cells per side when pooling a ``saliency=``/``gaze=`` map (paper's grid: 7).
        pairing: ``"randperm"`` (OpenMixup), ``"flip"`` or ``"roll"``.
    """

    name = "attentivemix"
    summary = "paste the partner's top-k feature-map cells (6 of 7x7), label = pasted share"
    reference = ("Walawalkar et al., Attentive CutMix: An Enhanced Data Augmentation Approach for Deep Learning "
                 "Based Image Classification, ICASSP 2020")
    saliency_sources = ("features", "context", "gaze")

    def __init__(self, *, top_k: int | None = 6, alpha: float = 1.0, saliency_source: str = "features",
                 grid: int = 7, pairing: str = "randperm", **kwargs: Any) -> None:
        super().__init__(saliency_source=saliency_source, **kwargs)
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0):
            raise ValueError(f"top_k must be a non-negative integer or None, got {top_k!r}")
        check_range("alpha", alpha, 0.0, float("inf"), lo_open=True, hi_open=True)
        if not isinstance(grid, int) or grid < 1:
            raise ValueError(f"grid must be a positive integer, got {grid!r}")
        check_pairing(pairing)
        self.top_k, self.alpha, self.grid, self.pairing = top_k, float(alpha), grid, pairing

    def _scores(self, images: Tensor, targets: Tensor, context: Mapping[str, Any]) -> Tensor:
        if self.saliency_source == "features":
            model = context["model"]
            if not callable(getattr(model, "forward_features", None)):
                raise MixerInputError(f"{self.name}: model= must be a timm CNN with forward_features(), "
                                      f"got {type(model).__name__}")
            with torch.no_grad():
                feats = model.forward_features(images)
            if not isinstance(feats, Tensor) or feats.ndim != 4:
                raise MixerInputError(f"{self.name}: model.forward_features must return (B, C, h, w) feature maps")
            return feats.float().mean(dim=1)
        sal = self.saliency(images, targets, context)
        return F.adaptive_avg_pool2d(sal.float(), self.grid)[:, 0]

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b, (h, w) = images.shape[0], images.shape[-2:]
        index = self.partners(b, generator, self.pairing, context)
        lam = sample_beta(self.alpha, b, generator)
        scores = self._scores(images, targets, context)
        cells = scores.shape[1] * scores.shape[2]
        if self.top_k is not None and self.top_k > cells:
            raise MixerInputError(f"{self.name}: top_k={self.top_k} but the grid has only {cells} cells "
                                  f"({scores.shape[1]}x{scores.shape[2]}); use larger images or a smaller top_k")
        k = torch.full((b,), self.top_k) if self.top_k is not None else (lam * cells).floor().long()
        cell_mask = top_k_cell_mask(scores[index.to(scores.device)], k)
        return {"index": index, "k": k, "grid": tuple(scores.shape[1:]), "pasted_cells": cell_mask.cpu()}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        index = params["index"].to(images.device)
        hw = tuple(images.shape[-2:])
        own_cells = ~params["pasted_cells"].to(images.device)  # cells, upsampled by nearest interpolation
        own, cells = upsample_cells(own_cells, hw)
        mixed = torch.where(own, images, images[index])
        pixels = nearest_cell_pixels(hw, tuple(own_cells.shape[-2:]), images.device)
        lam = ((own_cells * pixels).sum(dim=(1, 2)).double() / (hw[0] * hw[1])).float()  # the own pixel share
        return self.pair_result(images, mixed, targets, index, own.to(images.dtype), lam, params, own_cells=cells)
