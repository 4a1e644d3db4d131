"""What the saliency-guided mixers share: one saliency map per image, from a source chosen per instance.

PuzzleMix, Co-Mixup, R-Mix, Saliency Grafting, AttentiveMix, SaliencyMix and SnapMix choose their mix from a
per-pixel saliency map. :class:`SaliencyGuidedMixer` holds the ``saliency_source`` option, derives the instance's
capabilities from it (:func:`gazemix.attention.saliency.source_capabilities`: what the call must pass, whether the
mix reads pixels, which model it reads), says what to pass when the call lacks it, and computes the map
(:func:`gazemix.attention.saliency.saliency_for_mixer`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from torch import Tensor

from gazemix.attention.saliency import SALIENCY_SOURCES, check_saliency_source, saliency_for_mixer, source_capabilities
from gazemix.contract import Mixer

__all__ = ["SOURCE_HELP", "SaliencyGuidedMixer"]

SOURCE_HELP = {
    "gradient": "model= (the model being trained: its input-gradient saliency)",
    "features": "model= (a timm CNN: the channel mean of its last feature map)",
    "cam": "model= (a timm CNN: its CAM of each image's ground-truth class)",
    "grad_cam": "model= (a timm CNN: its Grad-CAM of each image's ground-truth class)",
    "context": "saliency= (B, 1, H, W) non-negative maps, one per image",
    "gaze": "gaze= (B, 1, H, W) human gaze densities, one per image",
    "fine_grained": "nothing more (OpenCV fine-grained saliency of the images)",
    "spectral_residual": "nothing more (spectral-residual saliency of the images)",
}


class SaliencyGuidedMixer(Mixer):
    """A mixer whose mix is chosen from one saliency map per image, from ``saliency_source``.

    Subclasses set ``saliency_sources`` (the sources they accept) and, when their default source reads no model,
    the class-level ``needs`` of that source; an instance's ``needs``, ``content_independent`` and ``model_kind`` follow its own
    source. ``reads_pixels`` marks a mix that also reads pixel values whatever the source (PuzzleMix's smoothness
    term), so it is never content-independent.

    Args:
        saliency_source: where the map comes from: ``"gradient"`` (input gradients of the trained model,
            ``model=``), ``"features"`` / ``"cam"`` / ``"grad_cam"`` (a CNN's feature map or class activation map,
            ``model=``), ``"context"`` (``saliency=`` maps), ``"gaze"`` (``gaze=``: human gaze), ``"fine_grained"`` /
            ``"spectral_residual"`` (bottom-up saliency of the pixels); each mixer accepts its ``saliency_sources``.
    """

    saliency_sources: ClassVar[tuple[str, ...]] = SALIENCY_SOURCES
    reads_pixels: ClassVar[bool] = False
    needs = ("model",)  # class level: what the default sources of most subclasses read; instances set their own
    content_independent = False

    def __init__(self, *, saliency_source: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_saliency_source(saliency_source, self.saliency_sources)
        self.saliency_source = saliency_source
        self.needs, independent, self.model_kind = source_capabilities(saliency_source)
        self.content_independent = independent and not self.reads_pixels

    def context_help(self) -> str:
        others = [s for s in self.saliency_sources if s != self.saliency_source]
        return (f"pass {SOURCE_HELP[self.saliency_source]} for saliency_source={self.saliency_source!r}; other "
                f"sources: {', '.join(repr(s) for s in others)}")

    def saliency(self, images: Tensor, targets: Tensor, context: Mapping[str, Any]) -> Tensor:
        """The ``(B, 1, H, W)`` non-negative saliency of ``images`` from this instance's source."""
        return saliency_for_mixer(self.saliency_source, images, targets, dict(context), self.name)
