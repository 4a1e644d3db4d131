"""TransMix (Chen, Tang, Zhang, Li, Mei, Zhou, Xie, "TransMix: Attend to Mix for Vision Transformers", CVPR 2022).

The pixels are the timm Mixup/CutMix switch (official configs: mixup alpha 0.8, cutmix alpha 1.0,
``switch_prob`` 0.8, one choice per batch, partner ``flip(0)``). The label is set **after** the model's forward on
the mixed batch, from the last block's class-token attention ``a`` over the patch tokens (head mean; in gazemix
from :class:`gazemix.attention.vit.AttentionHook` or :func:`~gazemix.attention.vit.class_token_attention`):

    lam_attn = sum_t m_t a_t / sum_t a_t,   m_t = 1 if token t shows the partner

with ``m`` the pasted-pixel mask sampled at each token's top-left pixel (nearest down-sampling, as the official
code). Paper (default, ``area_weight=0``): the partner's label weight is ``lam_attn``. Official code
(Beckschen/TransMix ``transmix.py``, ``area_weight=0.5``): the average of the pasted area and ``lam_attn``.
Mixup batches keep their area label. Two-phase use::

    result = mixer(images, targets)               # pixels + provisional (area) label
    logits, attention = class_token_attention(model, result.images)
    result = mixer.relabel(result, attention=attention)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from gazemix.attention.vit import as_patch_grid
from gazemix.contract import Mixer, MixerInputError, MixResult, check_range
from gazemix.mixers.switch import MixupCutMixSwitch
from gazemix.registry import register_mixer

__all__ = ["TransMix", "pasted_attention_fraction", "with_label_weights"]


def pasted_attention_fraction(result: MixResult, attention: Tensor) -> Tensor:
    """``sum(m a) / sum(a)`` per output ``(B,)``: attention mass on tokens whose top-left pixel shows a partner.

    ``attention`` ``(B, N)`` or ``(B, h, w)`` over patch tokens. Where the attention sums to 0 the pasted area
    fraction is returned instead.
    """
    b, _, h, w = result.images.shape
    a = as_patch_grid(attention, (h, w)).to(result.images.device)
    if a.shape[0] != b:
        raise MixerInputError(f"attention= has {a.shape[0]} rows for a mixed batch of {b}")
    pasted = 1.0 - result.mask.float()
    m = F.interpolate(pasted, size=tuple(a.shape[-2:]), mode="nearest")[:, 0]
    total = a.flatten(1).sum(1)
    frac = (m * a).flatten(1).sum(1) / total.clamp_min(torch.finfo(total.dtype).tiny)
    return torch.where(total > 0, frac, pasted.mean(dim=(1, 2, 3)))


def with_label_weights(result: MixResult, lam: Tensor, params: Mapping[str, Any]) -> MixResult:
    """``result`` with own weight ``lam`` and partner weight ``1 - lam``, targets rebuilt from ``params["soft"]``."""
    lam = lam.float().to(result.images.device)
    soft = result.params["soft"].to(result.images.device)
    own, partner = result.sources[0], result.sources[1]
    targets = lam.view(-1, 1) * soft[own.index] + (1.0 - lam).view(-1, 1) * soft[partner.index]
    sources = (dataclasses.replace(own, weight=lam), dataclasses.replace(partner, weight=1.0 - lam))
    return dataclasses.replace(result, targets=targets, sources=sources, params={**result.params, **params})


@register_mixer
class TransMix(Mixer):
    """Mixup/CutMix switch whose CutMix label is re-weighted by the attention on the pasted patches.

    Args:
        area_weight: weight of the pasted area in the partner's label (paper 0; official code 0.5).
        mixup_alpha, cutmix_alpha, switch_prob, prob, mode, pairing: the switch's (official 0.8, 1.0, 0.8, 1.0,
            ``"batch"``, ``"flip"``); see :class:`gazemix.mixers.switch.MixupCutMixSwitch`.
    """

    name = "transmix"
    summary = "Mixup/CutMix switch; CutMix label = class-token attention mass on the pasted patches (after the forward)"
    reference = "Chen et al., TransMix: Attend to Mix for Vision Transformers, CVPR 2022"
    content_independent = False
    model_kind = "vit"
    relabels_after_forward = True
    modes = ("batch", "elem")

    def __init__(self, *, area_weight: float = 0.0, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 switch_prob: float = 0.8, prob: float = 1.0, mode: str = "batch", pairing: str = "flip",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("area_weight", area_weight, 0.0, 1.0)
        self.area_weight = float(area_weight)
        self._switch = MixupCutMixSwitch(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, switch_prob=switch_prob,
                                         prob=prob, mode=mode, pairing=pairing, num_classes=self.num_classes,
                                         label_smoothing=self.label_smoothing, seed=0)

    def config(self) -> dict[str, Any]:
        return {"area_weight": self.area_weight, **self._switch.config()}

    def context_help(self) -> str:
        return ("call relabel(result, attention=) after the forward: last-block class-token attention, "
                "(B, N) or (B, h, w)")

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        return self._switch.sample(images, targets, generator=generator, **context)

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        r = self._switch.apply(images, targets, params)
        return dataclasses.replace(r, mixer=self.name, params={**r.params, "soft": self.soft(targets, images.device)})

    def relabel(self, result: MixResult, **outputs: Any) -> MixResult:
        """Re-weight CutMix outputs by ``attention=`` from the forward on ``result.images``; Mixup ones keep ``lam``."""
        if outputs.get("attention") is None:
            raise MixerInputError(f"{self.name}.relabel needs attention=: {self.context_help()}")
        dev = result.images.device
        lam_attn = pasted_attention_fraction(result, outputs["attention"])
        area = 1.0 - result.mask.float().mean(dim=(1, 2, 3))
        partner = self.area_weight * area + (1.0 - self.area_weight) * lam_attn
        cut = (result.params["use_cutmix"] & result.params["applied"]).to(dev)
        lam = torch.where(cut, 1.0 - partner, result.lam.to(dev))
        return with_label_weights(result, lam, {"lam_attn": lam_attn, "relabelled": True})
