"""Mixup (Zhang, Cisse, Dauphin, Lopez-Paz, "mixup: Beyond Empirical Risk Minimization", ICLR 2018).

Official code: facebookresearch/mixup-cifar10 (one ``lam ~ Beta(alpha, alpha)`` per batch, partner
``randperm``, ``alpha = 1.0``). The paper's ImageNet runs used ``alpha = 0.2``; DeiT/timm recipes 0.8.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from gazemix.contract import Mixer, MixResult, blend, check_pairing, check_range, sample_beta
from gazemix.registry import register_mixer


@register_mixer
class Mixup(Mixer):
    """Global pixel blend ``x_i' = lam * x_i + (1 - lam) * x_j`` with label weight ``lam``.

    Args:
        alpha: Beta(alpha, alpha) concentration (official CIFAR code: 1.0).
        mode: ``"batch"`` (one ``lam`` per batch, as the official code) or ``"elem"`` (one per sample).
        pairing: ``"randperm"`` (official), ``"flip"`` (timm) or ``"roll"`` (torchvision).
        num_classes, label_smoothing, seed: see :class:`gazemix.contract.Mixer`.
    """

    name = "mixup"
    summary = "global pixel blend lam*x_i + (1-lam)*x_j, label lam"
    reference = "Zhang et al., mixup: Beyond Empirical Risk Minimization, ICLR 2018"
    modes = ("batch", "elem")

    def __init__(self, *, alpha: float = 1.0, mode: str = "batch", pairing: str = "randperm", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("alpha", alpha, 0.0, float("inf"), lo_open=True, hi_open=True)
        if mode not in self.modes:
            raise ValueError(f"mode must be 'batch' or 'elem', got {mode!r}")
        check_pairing(pairing)
        self.alpha, self.mode, self.pairing = float(alpha), mode, pairing

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b = images.shape[0]
        lam = sample_beta(self.alpha, 1 if self.mode == "batch" else b, generator).expand(b)
        return {"lam": lam, "index": self.partners(b, generator, self.pairing, context)}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        lam = params["lam"].to(images.device, images.dtype)
        index = params["index"].to(images.device)
        share = lam.view(-1, 1, 1, 1)
        mixed = blend(images, index, share)
        return self.pair_result(images, mixed, targets, index, share, lam, params)
