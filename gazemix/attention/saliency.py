"""Bottom-up (image-only) saliency maps for the saliency-guided mixers.

Two backends, both ``(B, C, H, W) -> (B, 1, H, W)`` with values in ``[0, 1]``:

* ``"fine_grained"`` — OpenCV contrib's ``StaticSaliencyFineGrained`` (Montabone & Soto, "Human detection
  using a mobile platform and novel features derived from a visual saliency mechanism", Image and Vision
  Computing 2010). **This is the map SaliencyMix uses** (Uddin et al., ICLR 2021, official code
  ``saliency_bbox``). OpenCV works on one image at a time, so this backend loops over the batch on the CPU.
* ``"spectral_residual"`` — Hou & Zhang, "Saliency Detection: A Spectral Residual Approach", CVPR 2007,
  computed with one FFT on the whole batch (CPU or CUDA, no Python loop). It follows the steps of OpenCV's
  ``StaticSaliencySpectralResidual`` (grey image resized to 64 x 64, 3 x 3 box filter on the log amplitude,
  5 x 5 Gaussian with sigma 8 on the squared reconstruction, min-max normalised, resized back). This is the
  **fast deviation**: a different saliency model from the one SaliencyMix's paper/code used.

The OpenCV backend is fed each image min-max scaled to ``uint8``. (The official SaliencyMix code passes the
mean/std-normalised float tensor, which OpenCV saturates to a handful of integer grey levels; scaling first
keeps the image's contrast and is what a user calling OpenCV on a photograph would do.)
"""

from __future__ import annotations

import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BACKENDS", "SaliencyInputError", "bottom_up_saliency", "fine_grained_saliency", "saliency_for_mixer",
           "spectral_residual_saliency"]

BACKENDS = ("fine_grained", "spectral_residual")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as OpenCV's RGB -> grey conversion


class SaliencyInputError(ValueError):
    """The images given to a saliency backend cannot be used; the message says what to pass."""


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise SaliencyInputError(f"images must be a (B, 1 or 3, H, W) tensor, got {shape}")
    if not images.is_floating_point():
        raise SaliencyInputError(f"images must be floating point, got {images.dtype}: convert with .float()")


def _grey(images: Tensor) -> Tensor:
    if images.shape[1] == 1:
        return images
    w = torch.tensor(_LUMA, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * w).sum(dim=1, keepdim=True)


def _minmax(maps: Tensor) -> Tensor:
    """Scale each map to ``[0, 1]``; a constant map becomes all zeros (one min/max pass, one scaling pass)."""
    lo, hi = torch.aminmax(maps.flatten(1), dim=1)
    span = hi - lo
    inv = torch.where(span > 0, 1.0 / span.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(span))
    return (maps - lo.view(-1, 1, 1, 1)).mul_(inv.view(-1, 1, 1, 1))


def _gaussian_kernel(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    k = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return k / k.sum()


def _separable_filter(x: Tensor, k: Tensor) -> Tensor:
    """Filter ``(B, 1, H, W)`` by the 1-D kernel ``k`` along both axes, borders reflected (OpenCV's default)."""
    r = k.numel() // 2
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))


def spectral_residual_saliency(images: Tensor, *, size: int = 64, blur_size: int = 5, blur_sigma: float = 8.0) -> Tensor:
    """Spectral-residual saliency (Hou & Zhang, CVPR 2007) of a whole batch with one FFT.

    ``A = log|F(I)|``, ``P = arg F(I)``, ``R = A - box_3x3(A)``, ``S = G_sigma * |F^-1(exp(R + iP))|^2`` on the
    grey image resized to ``size x size``; normalised to ``[0, 1]`` and resized back to ``(H, W)``.

    Args:
        images: ``(B, 1 or 3, H, W)`` float images (any range; RGB order for 3 channels).
        size: working resolution (OpenCV and the paper: 64).
        blur_size, blur_sigma: the final Gaussian (OpenCV: 5 x 5, sigma 8).

    Returns:
        ``(B, 1, H, W)`` in ``[0, 1]``, on the device and in the dtype of ``images``.
    """
    _check_images(images)
    if size < 4:
        raise SaliencyInputError(f"size must be at least 4 pixels, got {size}")
    h, w = images.shape[-2:]
    work = torch.float64 if images.dtype == torch.float64 else torch.float32
    # Resize first, then convert to grey: both are linear, so the order does not change the result, and the
    # channel mix then runs on size x size pixels instead of H x W.
    grey = _grey(F.interpolate(images.to(work), size=(size, size), mode="bilinear", align_corners=False))
    spec = torch.fft.fft2(grey)
    log_amp = torch.log(spec.abs().clamp_min(1e-12))
    box = torch.full((3,), 1.0 / 3, device=images.device, dtype=work)
    residual = log_amp - _separable_filter(log_amp, box)
    recon = torch.fft.ifft2(torch.polar(torch.exp(residual), spec.angle()))
    sal = recon.real ** 2 + recon.imag ** 2
    sal = _separable_filter(sal, _gaussian_kernel(blur_size, blur_sigma, images.device, work))
    sal = F.interpolate(_minmax(sal), size=(h, w), mode="bilinear", align_corners=False)
    return _minmax(sal).to(images.dtype)


def fine_grained_saliency(images: Tensor) -> Tensor:
    """OpenCV's fine-grained static saliency of each image (the map of SaliencyMix's official code).

    Each image is min-max scaled to ``uint8`` grey levels and passed to
    ``cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency``; one OpenCV call per image (inherent
    to OpenCV), the images shared out among as many threads as PyTorch uses (one detector each; OpenCV releases
    the GIL). Needs the OpenCV *contrib* build (``opencv-contrib-python-headless``).

    Returns:
        ``(B, 1, H, W)`` in ``[0, 1]``, on the device and in the dtype of ``images``.
    """
    _check_images(images)
    try:
        import cv2
        cv2.saliency.StaticSaliencyFineGrained_create()
    except (ImportError, AttributeError) as err:
        raise ImportError("the 'fine_grained' saliency backend needs OpenCV's contrib build: "
                          "pip install opencv-contrib-python-headless (or use backend='spectral_residual')") from err
    grey = _minmax(_grey(images.detach().to(torch.float32)))
    grey8 = (grey[:, 0] * 255).round().to(torch.uint8).cpu().numpy()
    maps = np.empty(grey8.shape, dtype=np.float32)

    def compute(rows: range) -> None:
        detector = cv2.saliency.StaticSaliencyFineGrained_create()
        for i in rows:
            ok, sal = detector.computeSaliency(np.ascontiguousarray(grey8[i]))
            if not ok:
                raise RuntimeError("OpenCV StaticSaliencyFineGrained failed on an image of shape "
                                   f"{grey8[i].shape}; use backend='spectral_residual'")
            maps[i] = sal

    workers = max(1, min(len(grey8), torch.get_num_threads()))
    shares = [range(k, len(grey8), workers) for k in range(workers)]
    if workers == 1:
        compute(shares[0])
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(compute, shares))  # waits for every worker and re-raises a worker's exception
    out = torch.from_numpy(maps).unsqueeze(1).to(device=images.device, dtype=images.dtype)
    return _minmax(out)


_LAST: list = [None]  # (weak reference to the input batch, its version, backend, saliency) of the last call


def bottom_up_saliency(images: Tensor, backend: str = "fine_grained") -> Tensor:
    """Saliency of each image with the named backend (see the module docstring): ``(B, 1, H, W)`` in ``[0, 1]``.

    The result for the most recent batch is kept: several mixers called on the same, unmodified batch tensor
    (scoring runs every mixer on one gathered batch) compute it once.
    """
    if backend not in BACKENDS:
        raise ValueError(f"saliency backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    last = _LAST[0]
    if last is not None and last[0]() is images and last[1] == images._version and last[2] == backend:
        return last[3]
    sal = fine_grained_saliency(images) if backend == "fine_grained" else spectral_residual_saliency(images)
    _LAST[0] = (weakref.ref(images), images._version, backend, sal)
    return sal


SALIENCY_SOURCES = ("gradient", "context", "gaze") + BACKENDS


def check_saliency_source(source: str, allowed: tuple[str, ...] = SALIENCY_SOURCES) -> str:
    """Validate a mixer's ``saliency_source`` option."""
    if source not in allowed:
        raise ValueError(f"saliency_source must be one of {', '.join(repr(a) for a in allowed)}, got {source!r}")
    return source


def needs_for_source(source: str) -> tuple[str, ...]:
    """The call-context keys a mixer needs for a saliency source."""
    return {"gradient": ("model",), "features": ("model",), "cam": ("model",), "grad_cam": ("model",),
            "context": ("saliency",), "gaze": ("gaze",)}.get(source, ())


def source_capabilities(source: str) -> tuple[tuple[str, ...], bool, str | None]:
    """``(needs, content_independent, model_kind)`` of a mixer whose only content input is saliency ``source``.

    ``"context"`` and ``"gaze"`` maps come with the call, so the mix never reads pixels; every other source is
    computed from the pixels (bottom-up backends) or from a model's forward on them (``"gradient"``: any
    differentiable model; ``"features"``, ``"cam"``, ``"grad_cam"``: a CNN's last feature map).
    """
    kind = {"gradient": "any", "features": "cnn", "cam": "cnn", "grad_cam": "cnn"}.get(source)
    return needs_for_source(source), source in ("context", "gaze"), kind


def saliency_for_mixer(source: str, images: Tensor, targets: Tensor, context: dict, mixer: str) -> Tensor:
    """The ``(B, 1, H, W)`` non-negative saliency a mixer uses, from the named source.

    ``"gradient"``: input-gradient saliency of ``context["model"]`` (PuzzleMix, Co-Mixup, R-Mix);
    ``"context"`` / ``"gaze"``: the ``saliency=`` / ``gaze=`` map passed in the call;
    ``"fine_grained"`` / ``"spectral_residual"``: bottom-up saliency computed from ``images``.
    """
    from gazemix.contract import MixerInputError

    if source == "gradient":
        from gazemix.attention.gradients import input_gradient_saliency
        model = context.get("model")
        if model is None:
            raise MixerInputError(f"{mixer} needs model= (the nn.Module being trained) for gradient saliency, "
                                  "or build it with saliency_source='context' and pass saliency=")
        return input_gradient_saliency(model, images, targets)
    if source in ("context", "gaze"):
        key = "saliency" if source == "context" else "gaze"
        maps = context.get(key)
        if maps is None:
            raise MixerInputError(f"{mixer} needs {key}= (B, 1, H, W) in the call (saliency_source={source!r})")
        b, _, h, w = images.shape
        if not isinstance(maps, Tensor) or tuple(maps.shape) != (b, 1, h, w):
            shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
            raise MixerInputError(f"{mixer}: {key}= must have shape {(b, 1, h, w)} (one map per image, image size), got {shape}")
        if bool((maps < 0).any()) or not bool(torch.isfinite(maps).all()):
            raise MixerInputError(f"{mixer}: {key}= must be finite and non-negative")
        return maps.to(device=images.device, dtype=images.dtype)
    return bottom_up_saliency(images, source)
