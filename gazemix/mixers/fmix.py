"""FMix (Harris, Marcu, Painter, Niranjan, Prügel-Bennett, Hare, "FMix: Enhancing Mixed Sample Data
Augmentation", arXiv 2002.12047, 2020).

Official code: ecs-vlc/FMix ``fmix.py``. A binary mask is made by thresholding a low-frequency image:
random complex Fourier coefficients scaled by ``1 / f ** decay_power`` are inverted, and the top
``lam * H * W`` pixels (ceil or floor, with probability 1/2 each) come from the own image. The label weight
is the sampled ``lam`` (as in the official code), which differs from the mask mean by less than ``1/(HW)``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor

from gazemix.contract import Mixer, MixResult, blend, check_pairing, check_range, sample_beta
from gazemix.registry import register_mixer


def low_frequency_images(n: int, hw: tuple[int, int], decay_power: float, generator: torch.Generator) -> Tensor:
    """``n`` grey images of ``1/f^decay_power`` noise, ``(n, H, W)`` (the official ``make_low_freq_image``)."""
    h, w = hw
    fy = torch.fft.fftfreq(h, dtype=torch.float32).view(-1, 1)
    fx = torch.fft.rfftfreq(w, dtype=torch.float32).view(1, -1)
    freqs = torch.sqrt(fy ** 2 + fx ** 2)
    scale = 1.0 / freqs.clamp_min(1.0 / max(h, w)) ** decay_power
    re = torch.randn((n, *freqs.shape), generator=generator)
    im = torch.randn((n, *freqs.shape), generator=generator)
    spectrum = torch.complex(re * scale, im * scale)
    return torch.fft.irfft2(spectrum, s=(h, w))


def binarise_top_k(grey: Tensor, lam: Tensor, round_up: Tensor) -> Tensor:
    """1 on the ``ceil``/``floor(lam * H * W)`` largest pixels of each ``(n, H, W)`` image, 0 elsewhere.

    The threshold of each row is its k-th largest value (one batched sort of the values, then a gather);
    the low-frequency images are continuous, so ties have probability zero.
    """
    n, h, w = grey.shape
    total = h * w
    raw = lam.double() * total
    k = torch.where(round_up, torch.ceil(raw), torch.floor(raw)).long().clamp(0, total)
    flat = grey.reshape(n, -1)
    ordered = flat.sort(dim=1, descending=True).values
    thresholds = ordered.gather(1, (k - 1).clamp_min(0).view(-1, 1))
    return ((flat >= thresholds) & (k > 0).view(-1, 1)).reshape(n, h, w)


@register_mixer
class FMix(Mixer):
    """Mix with a thresholded low-frequency Fourier mask; label ``lam``.

    Args:
        alpha: Beta(alpha, alpha) concentration (official: 1.0).
        decay_power: spectral decay ``delta`` (official: 3).
        mode: ``"batch"`` (one mask per batch, official) or ``"elem"`` (a mask per sample).
        pairing: ``"randperm"`` (official), ``"flip"`` or ``"roll"``.
    """

    name = "fmix"
    summary = "binary mask thresholded from low-frequency Fourier noise, label lam"
    reference = "Harris et al., FMix: Enhancing Mixed Sample Data Augmentation, arXiv 2002.12047, 2020"
    modes = ("batch", "elem")

    def __init__(self, *, alpha: float = 1.0, decay_power: float = 3.0, mode: str = "batch",
                 pairing: str = "randperm", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("alpha", alpha, 0.0, math.inf, lo_open=True, hi_open=True)
        check_range("decay_power", decay_power, 0.0, math.inf, lo_open=True, hi_open=True)
        if mode not in self.modes:
            raise ValueError(f"mode must be 'batch' or 'elem', got {mode!r}")
        check_pairing(pairing)
        self.alpha, self.decay_power, self.mode, self.pairing = float(alpha), float(decay_power), mode, pairing

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b, hw = images.shape[0], tuple(images.shape[-2:])
        n = 1 if self.mode == "batch" else b
        lam = sample_beta(self.alpha, n, generator)
        grey = low_frequency_images(n, hw, self.decay_power, generator)
        round_up = torch.rand(n, generator=generator) > 0.5
        mask = binarise_top_k(grey, lam, round_up)
        return {"lam": lam.expand(b), "mask": mask.unsqueeze(1), "index": self.partners(b, generator, self.pairing, context)}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        index = params["index"].to(images.device)
        mask = params["mask"].to(images.device)
        mixed = blend(images, index, mask)
        return self.pair_result(images, mixed, targets, index, mask, params["lam"], params)
