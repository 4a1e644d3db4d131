"""GazeMix: TdAttenMix driven by human gaze alone — "the label humans would give".

gazemix's own mixer (no paper of its own). It is :class:`~gazemix.mixers.tdattenmix.TdAttenMix` (Wang, Gu, Lu,
AAAI 2025) with the Top-down Attention Guided Module replaced by human gaze: each image's gaze density
``gaze=`` ``(B, 1, H, W)`` is summed per token and thresholded like the module's read-out
(``max(0, g - (0.7 max + 0.3 min))``); the partner's most-looked-at s x s token square is pasted over the own
image's least-looked-at square; the label is ½ area + ½ gaze ratio (``T / (T + S)`` with gaze mass). No model is
involved, so every mix — and its label — can be scored against the same human gaze it came from.

Unlike TdAttenMix's training recipe, GazeMix mixes every batch with squares (``switch_prob=1``); pass
``switch_prob=0.5`` for the official Mixup switch.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor

from gazemix.contract import MixerInputError
from gazemix.mixers.tdattenmix import TdAttenMix
from gazemix.registry import register_mixer

__all__ = ["GazeMix"]


@register_mixer
class GazeMix(TdAttenMix):
    """Human-gaze-guided max-min token-square mixing; label ½ area + ½ gaze mass ratio.

    Args:
        switch_prob: probability of the square paste per batch (default 1; TdAttenMix's recipe: 0.5).
        patch_size: token size in pixels; the grid is ``(H // patch_size, W // patch_size)`` (default 16).
        threshold, ratio_mode, attn_weight, mixup_alpha, min_side_ratio, max_side_ratio, pairing: as TdAttenMix.
    """

    name = "gazemix"
    summary = "TdAttenMix driven by human gaze alone: most-looked-at partner square over the least-looked-at own square"
    reference = ("gazemix; TdAttenMix (Wang, Gu, Lu, AAAI 2025, arXiv 2501.15409) with human gaze as the "
                 "top-down attention")
    needs = ("gaze",)

    def __init__(self, *, switch_prob: float = 1.0, **kwargs: Any) -> None:
        for key in ("balance", "gaze_weight"):
            if key in kwargs:
                raise ValueError(f"{key}= does not apply to GazeMix (gaze is its only map); use TdAttenMix to blend")
        super().__init__(switch_prob=switch_prob, balance=1.0, gaze_weight=1.0, **kwargs)

    def context_help(self) -> str:
        return "pass gaze= (B, 1, H, W) human gaze densities of the input images (non-negative)"

    def check_context(self, images: Tensor, targets: Tensor, context: Mapping[str, Any]) -> None:
        if context.get("gaze") is None:
            raise MixerInputError(f"{self.name} needs gaze= in the call: {self.context_help()}")
        super().check_context(images, targets, {"gaze": context["gaze"]})

    def selection_maps(self, images: Tensor, targets: Tensor,
                       context: Mapping[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        return super().selection_maps(images, targets, {"gaze": context["gaze"]})
