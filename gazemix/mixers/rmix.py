"""R-Mix (Luu, Tran, Nguyen, Nguyen, "Expeditious Saliency-guided Mix-up through Random Gradient
Thresholding", AAAI 2023 Practical-DL workshop, arXiv 2212.04875).

Paper and official code (minhlong94/Random-Mixup ``r_mix.py``): input-gradient saliency of the model under
training, average-pooled to ``P x P`` patches and normalised; per sample a random quantile
``q ~ U{linspace(0, 0.99, 10)}`` marks the "top" patches ``m = [s >= quantile_q(s)]``; one
``lam ~ Beta(alpha, alpha)`` per batch. Where own and partner agree (both top or both not) the pixels are
Mixup-blended; where they disagree the top-salient side is copied. Label:
``area(agree) (lam y_i + (1 - lam) y_j) + area(own only) y_i + area(partner only) y_j`` (sums to 1).
``q = 0`` marks every patch as top, which is plain Mixup.

``num_patches`` defaults to 4 (our choice: the official signature has none usable, docs/methods/rmix.md);
patches are made with adaptive pooling and nearest upsampling, so any image size works (identical to the
official pooling when ``P`` divides the size).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from gazemix.contract import MixResult, check_pairing, check_range, nearest_cell_pixels, sample_beta, upsample_cells
from gazemix.mixers.saliency_guided import SaliencyGuidedMixer
from gazemix.registry import register_mixer


def top_patch_masks(saliency: Tensor, num_patches: int, quantiles: Tensor) -> Tensor:
    """``(B, 1, P, P)`` masks of patches whose pooled saliency is ``>=`` each map's ``quantiles[b]`` quantile."""
    pooled = F.adaptive_avg_pool2d(saliency.double(), num_patches).flatten(1)
    pooled = pooled / pooled.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    q = quantiles.to(pooled).view(-1, 1)
    thresh = torch.quantile(pooled, q.view(-1), dim=1).diagonal().view(-1, 1)  # each row at its own quantile
    return (pooled >= thresh).view(-1, 1, num_patches, num_patches)


@register_mixer
class RMix(SaliencyGuidedMixer):
    """Copy the top-salient side where own and partner disagree, Mixup where they agree.

    Args:
        alpha: Beta(alpha, alpha) (official: 2.0 on CIFAR, 0.2 otherwise; default 0.2).
        num_patches: patches per side ``P`` (official choices 2, 4, 8, 16, 32).
        quantiles: the values ``q`` is drawn from (official: ``linspace(0, 0.99, 10)``).
        saliency_source: ``"gradient"`` (the trained model's input gradients, ``model=``; the paper's and default) or
            any source of :class:`~gazemix.mixers.saliency_guided.SaliencyGuidedMixer`.
        pairing: ``"randperm"`` (official), ``"flip"`` or ``"roll"``.
    """

    name = "rmix"
    summary = "random saliency quantile: copy the salient side where masks disagree, Mixup where they agree"
    reference = "Luu et al., Expeditious Saliency-guided Mix-up through Random Gradient Thresholding, arXiv 2212.04875, 2023"

    def __init__(self, *, alpha: float = 0.2, num_patches: int = 4,
                 quantiles: tuple[float, ...] = tuple(torch.linspace(0.0, 0.99, 10).tolist()),
                 saliency_source: str = "gradient", pairing: str = "randperm", **kwargs: Any) -> None:
        super().__init__(saliency_source=saliency_source, **kwargs)
        check_range("alpha", alpha, 0.0, float("inf"), lo_open=True, hi_open=True)
        if not isinstance(num_patches, int) or isinstance(num_patches, bool) or num_patches < 1:
            raise ValueError(f"num_patches must be a positive integer, got {num_patches!r}")
        if len(quantiles) == 0:
            raise ValueError("quantiles must hold at least one value in [0, 1]")
        for q in quantiles:
            check_range("quantiles[...]", q, 0.0, 1.0)
        check_pairing(pairing)
        self.alpha, self.num_patches, self.quantiles = float(alpha), num_patches, tuple(float(q) for q in quantiles)
        self.pairing = pairing

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b, (h, w) = images.shape[0], images.shape[-2:]
        if self.num_patches > min(h, w):
            raise ValueError(f"num_patches={self.num_patches} exceeds the image size {h}x{w}")
        pick = torch.randint(0, len(self.quantiles), (b,), generator=generator)
        q = torch.tensor(self.quantiles, dtype=torch.float64)[pick]
        lam = sample_beta(self.alpha, 1, generator).expand(b)
        index = self.partners(b, generator, self.pairing, context)
        saliency = self.saliency(images, targets, context)
        top = top_patch_masks(saliency, self.num_patches, q).cpu()
        return {"lam": lam, "q": q, "index": index, "top": top}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        hw = tuple(images.shape[-2:])
        dev, dt = images.device, images.dtype
        index = params["index"].to(dev)
        top = params["top"].to(dev, dt)[:, 0]  # (B, P, P) patches, upsampled by nearest interpolation below
        top_j = top[index]
        agree = (top == top_j).to(dt)
        own_only = top * (1 - top_j)
        lam = params["lam"].to(dev, dt).view(-1, 1, 1)
        share, cells = upsample_cells(agree * lam + own_only, hw)  # own image's per-pixel share, and per patch
        mixed = share * images + (1 - share) * images[index]
        pixels = nearest_cell_pixels(hw, tuple(top.shape[-2:]), dev).double()  # exact pixel shares of the patches
        area = lambda m: (m.double() * pixels).sum(dim=(1, 2)) / (hw[0] * hw[1])  # noqa: E731
        lam_own = (area(agree) * lam.flatten().double() + area(own_only)).float()
        return self.pair_result(images, mixed, targets, index, share, lam_own, params, own_cells=cells)
