"""MixPro (Zhao, Wang, Li, Zhang, Ding, Liu, "MixPro: Data Augmentation with MaskMix and Progressive Attention
Labeling for Vision Transformer", ICLR 2023).

**MaskMix** (with probability ``maskmix_prob`` = 0.5 per batch; otherwise the timm Mixup/CutMix switch): the image
is cut into cells of ``mask_patch_size`` pixels — a whole multiple of the model's ``patch_size``, so every cell is
made of whole patches; ``r ~ Beta(alpha, alpha)`` (alpha 1) once per batch, ``ceil(c r)`` of the ``c`` cells are
kept from the own image (a random set per sample), the rest come from a ``randperm`` partner. Official code
(fistyee/MixPro ``utils.py``) labels with ``count / c``; gazemix labels with the own pixel share ``mean(M)``, the
same whenever the cells tile the image, and right when the last row/column of cells is cropped.

**Progressive Attention Labeling** (PAL, after the forward on the mixed batch; ``relabel(result, attention=,
logits=)``): with ``a`` the last block's class-token attention over patch tokens (head mean) and ``m_t`` the own
share of token ``t`` (the mask at each token's top-left pixel),

    lam_attn = sum_t m_t a_t / sum_t a_t,   sim = cos(y_area, softmax(logits)),
    lam = sim * lam_attn + (1 - sim) * lam_area

so the label leans on attention as the model's predictions come to agree with the area label. The paper describes
PAL as part of MixPro (``pal=True``, default); some released configs set ``PAL_ATTN: False`` (``pal=False``: area
labels only). ``sim`` is detached (the official code lets the gradient flow through it; OpenMixup detaches).
PAL applies to every mixed batch: on a Mixup batch ``m`` is constant and PAL leaves ``lam`` unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from gazemix.contract import Mixer, MixerInputError, MixResult, check_range, sample_beta
from gazemix.mixers.switch import MixupCutMixSwitch
from gazemix.mixers.transmix import pasted_attention_fraction, with_label_weights
from gazemix.registry import register_mixer

__all__ = ["MixPro", "maskmix_masks"]


def maskmix_masks(b: int, hw: tuple[int, int], cell: int, ratio: float, generator: torch.Generator) -> Tensor:
    """MaskMix own masks ``(B, 1, H, W)``: ``ceil(c * ratio)`` random cells of side ``cell`` per sample set to 1."""
    ch, cw = math.ceil(hw[0] / cell), math.ceil(hw[1] / cell)
    c = ch * cw
    count = math.ceil(c * ratio)
    ranks = torch.rand(b, c, generator=generator).argsort(dim=1).argsort(dim=1)
    cells = (ranks < count).float().view(b, 1, ch, cw)
    return cells.repeat_interleave(cell, dim=2).repeat_interleave(cell, dim=3)[:, :, :hw[0], :hw[1]]


@register_mixer
class MixPro(Mixer):
    """MaskMix grid-cell masks (or the Mixup/CutMix switch) + Progressive Attention Labeling after the forward.

    Args:
        patch_size: the model's patch size in pixels (official DeiT configs: 14; timm ViTs: 16).
        mask_patch_size: MaskMix cell side, a multiple of ``patch_size`` (official: 56 = 4 x 14; default 64 = 4 x 16).
        alpha: Beta(alpha, alpha) of the MaskMix ratio (official 1).
        maskmix_prob: probability of MaskMix per batch (official 0.5); otherwise the switch.
        pal: apply Progressive Attention Labeling in :meth:`relabel` (paper: True).
        mixup_alpha, cutmix_alpha, switch_prob: the switch branch (official 0.8, 1.0, 0.5; partner flip).
    """

    name = "mixpro"
    summary = "MaskMix patch-aligned grid cells + progressive attention labeling after the forward"
    reference = ("Zhao et al., MixPro: Data Augmentation with MaskMix and Progressive Attention Labeling for "
                 "Vision Transformer, ICLR 2023")
    content_independent = False
    model_kind = "vit"
    relabels_after_forward = True
    uses_patch_grid = True

    def __init__(self, *, patch_size: int = 16, mask_patch_size: int = 64, alpha: float = 1.0,
                 maskmix_prob: float = 0.5, pal: bool = True, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 switch_prob: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for key, value in (("patch_size", patch_size), ("mask_patch_size", mask_patch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if mask_patch_size % patch_size:
            raise ValueError(f"mask_patch_size ({mask_patch_size}) must be a multiple of patch_size ({patch_size}) so "
                             f"that mask cells are whole patches: pass e.g. mask_patch_size={4 * patch_size}")
        check_range("alpha", alpha, 0.0, float("inf"), lo_open=True, hi_open=True)
        check_range("maskmix_prob", maskmix_prob, 0.0, 1.0)
        self.patch_size, self.mask_patch_size, self.alpha = patch_size, mask_patch_size, float(alpha)
        self.maskmix_prob, self.pal = float(maskmix_prob), bool(pal)
        self._switch = MixupCutMixSwitch(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, switch_prob=switch_prob,
                                         num_classes=self.num_classes, label_smoothing=self.label_smoothing, seed=0)

    def config(self) -> dict[str, Any]:
        return {**super().config(), **{k: v for k, v in self._switch.config().items() if k.endswith(("alpha", "prob"))}}

    def context_help(self) -> str:
        return ("call relabel(result, attention=, logits=) after the forward on result.images: last-block class-token "
                "attention (B, N) or (B, h, w) and the logits (B, K)")

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b, hw = images.shape[0], tuple(images.shape[-2:])
        use_maskmix = bool(torch.rand(1, generator=generator) < self.maskmix_prob)
        ratio = float(sample_beta(self.alpha, 1, generator))
        masks = maskmix_masks(b, hw, self.mask_patch_size, ratio, generator)
        switch = self._switch.sample(images, targets, generator=generator, **context)
        if not use_maskmix:
            return {**switch, "use_maskmix": False}
        return {"use_maskmix": True, "ratio": ratio, "masks": masks, "index": self.partners(b, generator, "randperm", context)}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        soft = self.soft(targets, images.device)
        if not params["use_maskmix"]:
            r = self._switch.apply(images, targets, params)
            return dataclasses.replace(r, mixer=self.name, params={**r.params, "soft": soft})
        index = params["index"].to(images.device)
        share = params["masks"].to(images.device, images.dtype)
        mixed = torch.lerp(images[index], images, share)
        lam = share.mean(dim=(1, 2, 3))
        return self.pair_result(images, mixed, targets, index, share, lam, {**params, "soft": soft})

    def relabel(self, result: MixResult, **outputs: Any) -> MixResult:
        """PAL: ``lam = sim lam_attn + (1 - sim) lam_area`` from ``attention=`` and ``logits=`` of the forward."""
        if not self.pal:
            return result
        missing = [k for k in ("attention", "logits") if outputs.get(k) is None]
        if missing:
            keys = ", ".join(k + "=" for k in missing)
            raise MixerInputError(f"{self.name}.relabel needs {keys}: {self.context_help()}")
        logits = outputs["logits"].detach().float().to(result.images.device)
        if logits.shape != result.targets.shape:
            raise MixerInputError(f"logits= must be {tuple(result.targets.shape)} like the targets, "
                                  f"got {tuple(logits.shape)}")
        lam_area = result.lam.float()
        lam_attn = 1.0 - pasted_attention_fraction(result, outputs["attention"])
        sim = F.cosine_similarity(result.targets.float(), logits.softmax(dim=-1), dim=-1).clamp(0, 1)
        lam = sim * lam_attn + (1.0 - sim) * lam_area
        return with_label_weights(result, lam, {"lam_attn": lam_attn, "pal_sim": sim, "relabelled": True})
