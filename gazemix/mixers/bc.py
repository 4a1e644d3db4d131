"""Between-class learning, BC and BC+ (Tokozume, Ushiku, Harada, "Between-class Learning for Image
Classification", CVPR 2018).

Official code: mil-tokyo/bc_learning_image. Each sample is mixed with an image of a *different* class,
``r ~ U(0, 1)`` per sample, label ``r * y_1 + (1 - r) * y_2``. The official code draws the two images at
random inside the data set; here the partner is drawn at random among the batch's other-class samples
(a sample whose class is the only one in the batch is left unmixed and counted in ``params["unpaired"]``).

BC+ treats images as waveforms: each is made zero-mean, then mixed with the coefficient
``p = 1 / (1 + (s_1 / s_2) * (1 - r) / r)`` (``s`` the per-image standard deviation) and renormalised by
``sqrt(p^2 + (1 - p)^2)``. The label still uses ``r``. Its pixel shares are ``p / sqrt(...)`` and
``(1 - p) / sqrt(...)``, which need not sum to 1; ``MixResult.per_pixel_offset`` is True because the
means are removed.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from gazemix.contract import Mixer, MixResult, MixSource, blend
from gazemix.mixers._blocks import for_each_block
from gazemix.registry import register_mixer


def other_class_partners(labels: Tensor, generator: torch.Generator) -> Tensor:
    """A random partner of a different class for each sample (itself when none exists)."""
    b = labels.shape[0]
    different = labels.view(1, -1) != labels.view(-1, 1) if labels.ndim == 1 else \
        (labels.argmax(1).view(1, -1) != labels.argmax(1).view(-1, 1))
    scores = torch.rand(b, b, generator=generator) * different.cpu()
    pick = scores.argmax(dim=1)
    return torch.where(different.cpu().any(dim=1), pick, torch.arange(b))


def image_std_mean(images: Tensor) -> tuple[Tensor, Tensor]:
    """Population standard deviation and mean of each image, two ``(B,)`` tensors (zeros for images without pixels).

    Two-pass within each block of whole images (:func:`~gazemix.mixers._blocks.for_each_block`): the block's means,
    then the norm of its deviations from them (the block is still in cache, so the batch is read from memory once). Equal to
    ``torch.std_mean(images, dim=(1, 2, 3), correction=0)`` within float rounding, and exactly 0 for a constant
    image as there (its rounded mean may differ from its value), without the per-element Welford updates that
    cost several passes' worth of time on CPU.
    """
    b = images.shape[0]
    flat = images.reshape(b, -1)
    n = flat.shape[1]
    if n == 0:  # a shape-only batch: nothing to centre
        return images.new_zeros(b), images.new_zeros(b)
    mean, std = flat.new_empty(b), flat.new_empty(b)

    def stats(rows: slice) -> None:
        block = flat[rows]
        torch.mean(block, dim=1, out=mean[rows])
        deviation = block - mean[rows, None]
        constant = deviation.amax(dim=1) == deviation.amin(dim=1)
        std[rows] = torch.linalg.vector_norm(deviation, dim=1).masked_fill_(constant, 0.0)

    for_each_block(stats, b, n * flat.element_size(), images.device)
    return std.div_(n ** 0.5), mean


@register_mixer
class BCLearning(Mixer):
    """BC: blend with a different-class image, ``r ~ U(0, 1)`` per sample; label ``r``."""

    name = "bc"
    summary = "between-class blend with a different-class image, r ~ U(0,1), label r"
    reference = "Tokozume, Ushiku, Harada, Between-class Learning for Image Classification, CVPR 2018"
    waveform = False

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b = images.shape[0]
        fixed = context.get("index")
        index = fixed.detach().cpu().long() if fixed is not None else other_class_partners(targets.cpu(), generator)
        return {"r": torch.rand(b, generator=generator), "index": index,
                "unpaired": int((index == torch.arange(b)).sum())}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        dev = images.device
        index = params["index"].to(dev)
        paired = index != torch.arange(images.shape[0], device=dev)
        r = torch.where(paired, params["r"].to(dev), torch.ones_like(params["r"].to(dev)))
        if not self.waveform:
            share = r.view(-1, 1, 1, 1).to(images.dtype)
            return self.pair_result(images, blend(images, index, share), targets, index, share, r, params)
        std, mean = image_std_mean(images)
        s1, s2 = std, std[index]
        degenerate = ~(s1 > 0) | ~(s2 > 0)  # constant images, no pixels, NaN
        p = 1.0 / (1.0 + (s1 / s2.clamp_min(1e-12)) * (1.0 - r) / r.clamp_min(1e-12))
        p = torch.where(degenerate, r.to(p.dtype), p)
        norm = torch.sqrt(p ** 2 + (1 - p) ** 2)
        own_share, partner_share = (p / norm).view(-1, 1, 1, 1), ((1 - p) / norm).view(-1, 1, 1, 1)
        # a (x_i - m_i) + b (x_j - m_j) = -(a m_i + b m_j) + b x_j + a x_i: one gather, then two fused passes
        # written into the gathered batch (no other batch-sized temporary)
        neg_offset = -(own_share.view(-1) * mean + partner_share.view(-1) * mean[index]).view(-1, 1, 1, 1)
        mixed = images[index]
        torch.addcmul(neg_offset, mixed, partner_share, out=mixed).addcmul_(images, own_share)
        soft = self.soft(targets, dev)
        sources = (MixSource(torch.arange(images.shape[0], device=dev), own_share, r),
                   MixSource(index, partner_share, 1.0 - r))
        return MixResult(images=mixed, targets=r.view(-1, 1) * soft + (1 - r).view(-1, 1) * soft[index],
                         sources=sources, params=dict(params, p=p.cpu()), mixer=self.name, per_pixel_offset=True)


@register_mixer
class BCPlus(BCLearning):
    """BC+: zero-mean images mixed as waveforms with std-corrected coefficient ``p``; label ``r``."""

    name = "bc_plus"
    summary = "BC+: zero-mean images mixed as waveforms with std-corrected weight, label r"
    waveform = True
    content_independent = False  # the pixel weight p depends on each image's standard deviation
