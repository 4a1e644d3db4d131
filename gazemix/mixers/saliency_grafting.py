"""Saliency Grafting (Park, Yang, Shin, Hwang, Yang, "Saliency Grafting: Innocuous Attribution-Guided Mixup
with Calibrated Label Mixing", AAAI 2022, arXiv 2112.08796). EXPERIMENTAL: no official code exists.

The saliency of the model under training guides a *stochastic* choice of the partner's patches (not always the
maximum-saliency region, to keep samples diverse), the chosen patches are grafted onto the own image at the same
positions, and the label is mixed in a *saliency-calibrated* way. The rules are gazemix's choices, exposed as
options (docs/methods/saliency_grafting.md):

1. saliency (input gradients by default, as PuzzleMix) is average-pooled to a ``grid x grid`` patch grid and
   sharpened with a temperature softmax ``p = softmax(s / max(s) / temperature)``;
2. candidate patches are those with ``p >= mean(p)``; each candidate is grafted independently with
   probability ``rho ~ Beta(alpha, alpha)`` (one ``rho`` per sample);
3. the label weight of each image is the (sum-normalised) saliency it still shows:
   ``lam_partner = S_j(G) / (S_j(G) + S_i(1 - G))``; when both are 0, the pasted area.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from gazemix.contract import MixResult, check_pairing, check_range, nearest_cell_pixels, sample_beta, upsample_cells
from gazemix.mixers.saliency_guided import SaliencyGuidedMixer
from gazemix.registry import register_mixer


def graft_candidates(saliency: Tensor, grid: int, temperature: float) -> tuple[Tensor, Tensor]:
    """Pooled, sum-normalised patch saliency ``(B, g, g)`` and the candidate mask ``p >= mean(p)``."""
    pooled = F.adaptive_avg_pool2d(saliency.double(), grid)[:, 0]
    flat = pooled.flatten(1)
    norm = flat / flat.sum(1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    sharp = torch.softmax(flat / flat.max(1, keepdim=True).values.clamp_min(torch.finfo(torch.float64).tiny) / temperature, dim=1)
    candidates = sharp >= sharp.mean(1, keepdim=True)
    return norm.view_as(pooled), candidates.view_as(pooled)


@register_mixer
class SaliencyGrafting(SaliencyGuidedMixer):
    """Graft randomly sampled salient patches of the partner; label = saliency each image still shows.

    Args:
        alpha: Beta(alpha, alpha) for the grafting probability ``rho`` (our choice; default 1.0).
        grid: patches per side (our choice; default 8).
        temperature: softmax temperature of the patch saliency (our choice; default 0.2).
        saliency_source: ``"gradient"`` (the trained model's input gradients, ``model=``; default) or any source of
            :class:`~gazemix.mixers.saliency_guided.SaliencyGuidedMixer`.
        pairing: ``"randperm"``, ``"flip"`` or ``"roll"``.
    """

    name = "saliency_grafting"
    summary = "EXPERIMENTAL: graft stochastically sampled salient partner patches, saliency-calibrated label"
    reference = ("Park et al., Saliency Grafting: Innocuous Attribution-Guided Mixup with Calibrated Label Mixing, "
                 "AAAI 2022")

    def __init__(self, *, alpha: float = 1.0, grid: int = 8, temperature: float = 0.2,
                 saliency_source: str = "gradient", pairing: str = "randperm", **kwargs: Any) -> None:
        super().__init__(saliency_source=saliency_source, **kwargs)
        check_range("alpha", alpha, 0.0, float("inf"), lo_open=True, hi_open=True)
        if not isinstance(grid, int) or isinstance(grid, bool) or grid < 1:
            raise ValueError(f"grid must be a positive integer, got {grid!r}")
        check_range("temperature", temperature, 0.0, float("inf"), lo_open=True, hi_open=True)
        check_pairing(pairing)
        self.alpha, self.grid, self.temperature, self.pairing = float(alpha), grid, float(temperature), pairing

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b, (h, w) = images.shape[0], images.shape[-2:]
        if self.grid > min(h, w):
            raise ValueError(f"grid={self.grid} patches per side exceeds the image size {h}x{w}")
        index = self.partners(b, generator, self.pairing, context)
        rho = sample_beta(self.alpha, b, generator).double()
        coins = torch.rand((b, self.grid, self.grid), generator=generator, dtype=torch.float64)
        sal = self.saliency(images, targets, context).detach()
        norm, candidates = graft_candidates(sal, self.grid, self.temperature)
        norm, candidates = norm.cpu(), candidates.cpu()
        graft = candidates[index] & (coins < rho.view(-1, 1, 1))
        shown_partner = (norm[index] * graft).flatten(1).sum(1)
        shown_own = (norm * ~graft).flatten(1).sum(1)
        return {"index": index, "rho": rho.float(), "graft": graft, "shown_own": shown_own.float(),
                "shown_partner": shown_partner.float()}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        h, w = images.shape[-2:]
        dev, dt = images.device, images.dtype
        index = params["index"].to(dev)
        own_cells = 1 - params["graft"].to(dev, dt)  # patches, upsampled by nearest interpolation
        own_share, cells = upsample_cells(own_cells, (h, w))
        pasted = 1 - own_share
        mixed = own_share * images + pasted * images[index]
        own, partner = params["shown_own"].to(dev), params["shown_partner"].to(dev)
        total = own + partner
        pixels = nearest_cell_pixels((h, w), tuple(own_cells.shape[-2:]), dev).double()
        area = ((own_cells.double() * pixels).sum(dim=(1, 2)) / (h * w)).float()  # the own image's pixel share
        lam = torch.where(total > 0, own / total.clamp_min(torch.finfo(torch.float32).tiny), area)
        return self.pair_result(images, mixed, targets, index, own_share, lam, params, own_cells=cells)
