"""TdAttenMix (Wang, Gu, Lu, "TdAttenMix: Top-Down Attention Guided Mixup", AAAI 2025, arXiv 2501.15409).

The rules below are those of the official code (``morning12138/AAAI2025_TdAttenMix`` ``tdattenmix.py``; what is
confirmed and what is a choice: docs/methods/tdattenmix.md), which is SMMix (:mod:`gazemix.mixers.smmix`) with two
changes:

* the map that picks the squares is the **top-down attention** of the Top-down Attention Guided Module
  (:class:`gazemix.attention.topdown.TopDownViT`; official: a frozen AbSViT-B/16, ``tau = 1``), conditioned on
  each image's label;
* the label is ``lam = 1/2 lam_area + 1/2 lam_attn`` with ``lam_area = (N - s^2) / N`` (own area) and
  ``lam_attn = T / (T + S)``, ``T`` the own map's mass outside the replaced square, ``S`` the attention mass of the
  pasted square.

Per batch, with probability ``switch_prob`` (0.5) the square paste, otherwise Mixup (alpha 0.8); partner
``flip(0)``; ``s`` uniform in ``{int(G/4) .. int(3G/4)}``, one per batch; the own least-attended s x s square is
replaced by the partner's most-attended one (a translation, replayed on gaze maps by a ``BoxWarp``).

``ratio_mode``:

* ``"per_sample"`` (default): ``S_i`` from the **partner's** map on its pasted square, one ratio per pair —
  what the label rule means.
* ``"official"``: the released code's rule: ``T`` and ``S`` summed over the whole batch (one ratio per batch) and
  ``S`` read from the **own** map at the partner square's coordinates (an indexing slip in the code), with its
  float32 arithmetic — window sums by ``unfold(...).sum(dim=1)`` and ``T``, ``S`` by summing the selected entries —
  so exact ties (small thresholded maps) break as they break there. The same operations give the same values on
  the same device and PyTorch build; the label is then combined as in every mode.

Guards: when ``T + S = 0`` (all-zero maps: a constant similarity map is thresholded to 0) ``lam_attn`` falls back
to ``lam_area``; any grid and image size work (see :mod:`gazemix.mixers.smmix`).

Map sources (the call context), combined as the module's "balance" of top-down and bottom-up attention:

* top-down: ``topdown=`` a precomputed ``(B, h, w)`` map, or ``model=`` a provider (a ``TopDownViT``, the timm ViT
  being trained, or a callable ``(images, labels) -> (B, h, w)``; see
  :func:`gazemix.attention.topdown.topdown_attention`), and/or ``gaze=`` human gaze ``(B, 1, H, W)``, ignored by
  default (``gaze_weight=0``), blended with the model's map (``0 < gaze_weight < 1``) or in its place (``1``);
* bottom-up: ``attention=`` the class-token attention of the model being trained (``(B, N)`` or ``(B, h, w)``),
  used when ``balance < 1``.

The selection map is ``(1 - balance) * bottom-up + balance * top-down`` (unit-mass maps when blended): ``balance=1``
(default, the official module's output) is class-driven selection, ``balance=0`` attention-only selection (SMMix-like
with the class-token map). The top-down strength *inside* the module is ``TopDownViT(tau=...)`` (official 1).

Trainer side: :func:`gazemix.mixers.smmix.consistency_loss` (pass ``logits=`` of the unmixed batch from the
model in eval mode, or give them to the loss) and the fine-grained targets/loss
(:func:`~gazemix.mixers.smmix.region_token_means`, :func:`~gazemix.mixers.smmix.fine_grained_loss`; the official
code uses the smoothed one-hots ``y_i`` for the own region and ``y_j`` for the pasted square). Official label
smoothing is 0.1 (pass ``label_smoothing=0.1``; gazemix does not smooth by default).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from gazemix.attention.topdown import blend_maps, gaze_topdown, topdown_attention
from gazemix.attention.vit import as_patch_grid
from gazemix.contract import MixerInputError, check_range
from gazemix.mixers.smmix import MaxMinSquareMixer, consistency_loss, fine_grained_loss, region_token_means
from gazemix.registry import register_mixer

__all__ = ["TdAttenMix", "attention_ratio", "consistency_loss", "fine_grained_loss", "region_token_means"]

RATIO_MODES = ("per_sample", "official")


def attention_ratio(maps: Tensor, index: Tensor, own_sq: Tensor, src_sq: Tensor, lam_area: Tensor,
                    mode: str = "per_sample") -> Tensor:
    """``lam_attn = T / (T + S)`` per output ``(B,)``; ``lam_area`` where ``T + S = 0``.

    ``maps`` ``(B, h, w)``; ``own_sq`` the replaced square of each own image, ``src_sq`` the pasted square in the
    partner's coordinates (both boolean ``(B, h, w)``). See the module docstring for the two modes.
    """
    if mode == "per_sample":
        maps = maps.double()
        t = (maps * ~own_sq).flatten(1).sum(1)
        s = (maps[index] * src_sq).flatten(1).sum(1)
    elif mode == "official":  # float32 sums of the selected entries, batch-pooled, own map at the partner's squares
        flat = maps.float().flatten(1)
        t = flat[(~own_sq).flatten(1)].sum().expand(maps.shape[0])
        s = flat[src_sq.flatten(1)].sum().expand_as(t)
    else:
        raise ValueError(f"ratio_mode must be one of {RATIO_MODES}, got {mode!r}")
    den = t + s
    return torch.where(den > 0, t / den.clamp_min(torch.finfo(den.dtype).tiny), lam_area.double()).float()


@register_mixer
class TdAttenMix(MaxMinSquareMixer):
    """Top-down attention guided max-min square mixing; label ½ area + ½ attention (official code).

    Args:
        ratio_mode: ``"per_sample"`` (default) or ``"official"`` (batch-pooled, own-map indexing and float32 sums as
            released).
        attn_weight: weight of ``lam_attn`` in the label (official 0.5).
        balance: weight of the top-down map against the bottom-up ``attention=`` (1: top-down only, official).
        gaze_weight: weight of human ``gaze=`` in the top-down map: 0 (default, the official method) ignores gaze;
            0.5 blends it with the model's map (gaze-guided TdAttenMix); 1 uses gaze in place of the model's map.
        threshold: read-out threshold applied to gaze maps, as the module applies it to its own map (0.7).
        patch_size: token size in pixels for gaze-only maps (grid ``(H // p, W // p)``; default 16).
        switch_prob, mixup_alpha, min_side_ratio, max_side_ratio, pairing: see
            :class:`~gazemix.mixers.smmix.MaxMinSquareMixer` (official 0.5, 0.8, 0.25, 0.75, flip).
    """

    name = "tdattenmix"
    summary = ("paste the partner's most top-down-attended token square over the own least-attended; "
               "label ½ area + ½ attention")
    reference = "Wang, Gu, Lu, TdAttenMix: Top-Down Attention Guided Mixup, AAAI 2025 (arXiv 2501.15409)"
    needs = ("model",)
    uses_patch_grid = True

    def __init__(self, *, ratio_mode: str = "per_sample", attn_weight: float = 0.5, balance: float = 1.0,
                 gaze_weight: float = 0.0, threshold: float | None = 0.7, patch_size: int = 16, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if ratio_mode not in RATIO_MODES:
            raise ValueError(f"ratio_mode must be one of {RATIO_MODES}, got {ratio_mode!r}")
        check_range("attn_weight", attn_weight, 0.0, 1.0)
        check_range("balance", balance, 0.0, 1.0)
        check_range("gaze_weight", gaze_weight, 0.0, 1.0)
        if threshold is not None:
            check_range("threshold", threshold, 0.0, 1.0)
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
        self.ratio_mode, self.attn_weight, self.balance = ratio_mode, float(attn_weight), float(balance)
        self._float32_windows = ratio_mode == "official"
        self.gaze_weight, self.threshold, self.patch_size = float(gaze_weight), threshold, patch_size
        gaze_only = self.gaze_weight == 1 and self.balance == 1  # human gaze alone picks the squares
        topdown = () if self.balance == 0 else ("gaze",) if self.gaze_weight == 1 else ("model",)
        self.needs = topdown + (("attention",) if self.balance < 1 else ())
        self.content_independent = gaze_only
        self.model_kind = None if gaze_only else "vit"

    @property
    def reads_gaze(self) -> bool:
        return self.gaze_weight > 0 and self.balance > 0

    def context_help(self) -> str:
        return ("pass model= (a gazemix.attention.TopDownViT with your weights, the timm ViT being trained, or a "
                "callable (images, labels) -> (B, h, w)), or topdown= a (B, h, w) map, or gaze= (B, 1, H, W) human "
                "gaze with gaze_weight > 0 (gaze_weight=1: human gaze alone, no model); with balance < 1 also "
                "attention= (the trained model's class-token attention)")

    def _uses_gaze(self, context: Mapping[str, Any]) -> bool:
        return context.get("gaze") is not None and self.gaze_weight > 0

    def check_context(self, images: Tensor, targets: Tensor, context: Mapping[str, Any]) -> None:
        has_td = context.get("topdown") is not None or context.get("model") is not None or self._uses_gaze(context)
        if self.balance > 0 and not has_td:
            raise MixerInputError(f"{self.name} needs a top-down map: {self.context_help()}")
        if self.balance < 1 and context.get("attention") is None:
            raise MixerInputError(f"{self.name} with balance={self.balance} needs attention= (bottom-up class-token "
                                  "attention, (B, N) or (B, h, w), e.g. from gazemix.attention.class_token_attention)")
        gaze = context.get("gaze")
        want = (images.shape[0], 1, *images.shape[-2:])
        if gaze is not None and (not isinstance(gaze, Tensor) or tuple(gaze.shape) != want):
            got = tuple(gaze.shape) if isinstance(gaze, Tensor) else type(gaze).__name__
            raise MixerInputError(f"gaze= must be {want} like the images, got {got}")

    def gaze_grid(self, hw: tuple[int, int]) -> tuple[int, int]:
        return max(1, hw[0] // self.patch_size), max(1, hw[1] // self.patch_size)

    def topdown_maps(self, images: Tensor, targets: Tensor, context: Mapping[str, Any]) -> Tensor | None:
        """The top-down map: ``topdown=`` or the ``model=`` provider, blended with ``gaze=`` (see class Args)."""
        hw = tuple(images.shape[-2:])
        td = None
        if context.get("topdown") is not None:
            td = as_patch_grid(context["topdown"], hw, "topdown")
        elif context.get("model") is not None and not (self._uses_gaze(context) and self.gaze_weight == 1):
            td = topdown_attention(context["model"], images, targets)
        if self._uses_gaze(context):
            gaze = gaze_topdown(context["gaze"].to(images.device), tuple(td.shape[-2:]) if td is not None
                                else self.gaze_grid(hw), threshold=self.threshold)
            td = gaze if td is None else blend_maps(td.to(images.device), gaze, self.gaze_weight)
        return td

    def selection_maps(self, images: Tensor, targets: Tensor,
                       context: Mapping[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        td = self.topdown_maps(images, targets, context) if self.balance > 0 else None
        if self.balance < 1:
            bu = as_patch_grid(context["attention"], tuple(images.shape[-2:])).to(images.device)
            maps = bu if td is None else blend_maps(bu, td.to(images.device), self.balance)
        else:
            maps = td
        if maps.shape[0] != images.shape[0]:
            raise MixerInputError(f"the attention maps hold {maps.shape[0]} maps for {images.shape[0]} images")
        extra: dict[str, Any] = {"maps": maps, "ratio_mode": self.ratio_mode}
        if context.get("logits") is not None:
            extra["clean_logits"] = context["logits"].detach()
        return maps, extra

    def square_lam(self, maps: Tensor, index: Tensor, own_sq: Tensor, src_sq: Tensor,
                   lam_area: Tensor) -> dict[str, Tensor]:
        lam_attn = attention_ratio(maps, index, own_sq, src_sq, lam_area, self.ratio_mode)
        return {"lam_attn": lam_attn, "lam": (1.0 - self.attn_weight) * lam_area + self.attn_weight * lam_attn}
