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

import numpy as np
import torch
from torch import Tensor

from gazemix.contract import Mixer, MixResult, blend, check_pairing, check_range, sample_beta
from gazemix.mixers._blocks import for_each_block
from gazemix.registry import register_mixer


def low_frequency_spectra(n: int, hw: tuple[int, int], decay_power: float, generator: torch.Generator) -> Tensor:
    """``n`` random complex spectra ``(n, H, W // 2 + 1)`` scaled by ``1/f^decay_power`` (``rfft2`` layout).

    The real parts of all ``n`` are drawn first, then the imaginary parts (two normal tensors).
    """
    h, w = hw
    fy = torch.fft.fftfreq(h, dtype=torch.float32).view(-1, 1)
    fx = torch.fft.rfftfreq(w, dtype=torch.float32).view(1, -1)
    freqs = torch.sqrt(fy ** 2 + fx ** 2)
    scale = 1.0 / freqs.clamp_min(1.0 / max(h, w)) ** decay_power
    re = torch.randn((n, *freqs.shape), generator=generator)
    im = torch.randn((n, *freqs.shape), generator=generator)
    return torch.complex(re.mul_(scale), im.mul_(scale))


def low_frequency_images(n: int, hw: tuple[int, int], decay_power: float, generator: torch.Generator) -> Tensor:
    """``n`` grey images of ``1/f^decay_power`` noise, ``(n, H, W)`` (the official ``make_low_freq_image``)."""
    return torch.fft.irfft2(low_frequency_spectra(n, hw, decay_power, generator), s=hw)


def binarise_top_k(grey: Tensor, lam: Tensor, round_up: Tensor) -> Tensor:
    """1 on the ``ceil``/``floor(lam * H * W)`` largest pixels of each ``(n, H, W)`` image, 0 elsewhere.

    The threshold of each row is its k-th largest value, found by a linear-time selection per row
    (``numpy.partition``, no sort); the mask is ``grey >= threshold``. The low-frequency images are
    continuous, so ties have probability zero.
    """
    n, h, w = grey.shape
    total = h * w
    raw = lam.double() * total
    k = torch.where(round_up, torch.ceil(raw), torch.floor(raw)).long().clamp(0, total)
    flat = grey.reshape(n, -1)
    values = flat.detach().cpu().numpy()
    thresholds = np.full((n, 1), np.inf, dtype=values.dtype)  # k = 0: no pixel reaches +inf
    for row, k_row in enumerate(k.tolist()):
        if k_row:
            thresholds[row, 0] = np.partition(values[row], total - k_row)[total - k_row]
    return (flat >= torch.from_numpy(thresholds).to(flat.device)).reshape(n, h, w)


def fourier_masks(spectra: Tensor, lam: Tensor, round_up: Tensor, hw: tuple[int, int]) -> Tensor:
    """FMix masks ``(n, H, W)``: :func:`binarise_top_k` of the inverse FFT of ``spectra``.

    Computed block by block of images (:func:`~gazemix.mixers._blocks.for_each_block`: blocks spread over the CPU
    threads, each on one intra-op thread), so each block's grey images stay in cache between the inverse FFT and the
    threshold; equal to ``binarise_top_k(torch.fft.irfft2(spectra, s=hw), lam, round_up)`` computed on one thread.
    The masks do not depend on the thread count: MKL's inverse FFT on several threads can differ in the last bit,
    enough to move a pixel across the top-k threshold now and then, and per-call FFT set-up on several threads costs
    more than the FFT of a block.
    """
    masks = torch.empty((spectra.shape[0], *hw), dtype=torch.bool, device=spectra.device)

    def fill(rows: slice) -> None:
        masks[rows] = binarise_top_k(torch.fft.irfft2(spectra[rows], s=hw), lam[rows], round_up[rows])

    for_each_block(fill, spectra.shape[0], hw[0] * hw[1] * 4, spectra.device)
    return masks


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
        spectra = low_frequency_spectra(n, hw, self.decay_power, generator)
        round_up = torch.rand(n, generator=generator) > 0.5
        mask = fourier_masks(spectra, lam, round_up, hw)
        return {"lam": lam.expand(b), "mask": mask.unsqueeze(1),
                "index": self.partners(b, generator, self.pairing, context)}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        index = params["index"].to(images.device)
        mask = params["mask"].to(images.device)
        # A float 0/1 share blends with lerp: on CPU, torch.where with a broadcast boolean mask takes several times
        # longer than converting the mask and lerping. Lerp with weight exactly 0 or 1 returns the partner or the own
        # pixel unchanged (finite pixels).
        mixed = blend(images, index, mask.to(images.dtype))
        return self.pair_result(images, mixed, targets, index, mask, params["lam"], params)
