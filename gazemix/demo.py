"""The embedded DEMO data set: synthetic, seeded, generated in seconds, shipped with no data at all.

**This is synthetic data for demos and tests — not human gaze.** Each image is a labelled foreground object
(six classes: disc, ring, square, triangle, cross, star; random size, rotation and position) pasted on a random
crop of a cluttered real photograph that ships inside scikit-image (``astronaut``, ``coffee``, ``chelsea``,
``rocket``, ``immunohistochemistry``, ``hubble_deep_field``) with a few soft, bright distractor blobs, so a
bottom-up saliency model is often drawn to the background. A class is told by three cues on the object
only: its shape, its texture (solid, concentric rings, checkerboard, stripes, dots, diagonal stripes) and its
colour family — three hues (red, green, blue, jittered), each shared by two classes, so colour alone narrows a
class to two and shape or texture decides. Hiding the object (a mixed-in patch, an occluder) removes all three.
Objects are drawn anti-aliased (each pixel averages ``q x q`` samples, ``q = ceil(224 / size)``) and the
photographs are resampled with area averaging, so a set generated at a small size looks like a 224-px set
downsampled: a classifier trained on small images can be run on resized large ones.

Simulated observers fixate mostly on the object (as people looking for the labelled class do; cf. CUB-GHA,
Rong et al., BMVC 2021), with a centre bias and a few fixations on salient background, where "salient" is the
spectral-residual saliency of the image (Hou & Zhang, CVPR 2007). Object masks (pixels at least half covered)
are kept as ground truth. Gaze maps are rendered with :func:`gazemix.gaze.render_gaze_maps` (default sigma: 5 %
of the image side).

For real human gaze on labelled images use CUB-GHA instead (:class:`data_adapters.cub_gha.CubGha`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from data_adapters.base import Fixations
from gazemix.gaze import DEFAULT_SIGMA_FRACTION, render_gaze_maps
from gazemix.sample_images import square_photo

__all__ = ["CLASS_NAMES", "DemoSet", "make_demo"]

CLASS_NAMES = ["disc", "ring", "square", "triangle", "cross", "star"]
CLASS_HUES = (0.0, 1 / 3, 2 / 3, 0.0, 1 / 3, 2 / 3)  # hue (turns) of each class: red, green, blue, twice
HUE_JITTER = 0.03  # +- turns around the class hue
BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
PHOTO_SIDE = 256  # the photographs are kept at this side (or the image size, if larger) and area-resampled
SUPERSAMPLE = 224  # objects are drawn with q = ceil(SUPERSAMPLE / size) samples per pixel side
N_OBSERVERS = 5
FIX_PER_OBSERVER = (4, 8)  # inclusive range of fixations per observer and image
P_OBJECT, P_CENTRE = 0.75, 0.15  # the rest goes to salient background
N_DISTRACTORS = 3
R_MIN, R_MAX = 0.18, 0.32  # object circumradius as a fraction of the image side
_CHUNK = 256


@dataclass
class DemoSet:
    """The synthetic demo set (see the module docstring).

    Attributes:
        images: ``(N, 3, S, S)`` float32 in ``[0, 1]``.
        labels: ``(N,)`` int64 class indices into ``class_names``.
        class_names: the object classes.
        fixations: per image, pixel coordinates of the ``S×S`` image (0-based, integer = pixel centre),
            durations in ms and observer ids ``0..4``.
        gaze: ``(N, 1, S, S)`` float32 gaze densities, each summing to 1.
        object_masks: ``(N, 1, S, S)`` bool ground-truth masks of the labelled object.
        meta: ``{"synthetic": True, "seed", "description", ...}``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    fixations: list[Fixations]
    gaze: torch.Tensor
    object_masks: torch.Tensor
    meta: dict

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _shape_and_texture(label: int, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class ``label``'s shape mask and texture (True = primary colour) in unit object coordinates ``u, v``.

    The object's circumradius is 1. Shapes: disc, ring, square, triangle, cross, five-pointed star; textures:
    solid, concentric rings, checkerboard, stripes, dots, diagonal stripes.
    """
    name = CLASS_NAMES[label]
    rho = torch.sqrt(u * u + v * v)
    au, av = u.abs(), v.abs()
    if name == "disc":
        return rho < 1, torch.ones_like(rho, dtype=torch.bool)
    if name == "ring":
        return (rho < 1) & (rho > 0.55), torch.sin(rho * 15) > 0
    if name == "square":
        return torch.maximum(au, av) < 0.75, (torch.sin(u * 7.2) > 0) ^ (torch.sin(v * 7.2) > 0)
    if name == "triangle":
        edges = torch.stack([u * math.cos(a) + v * math.sin(a) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)])
        return edges.amax(0) < 0.5, torch.sin(v * 12) > 0
    if name == "cross":
        return ((au < 0.3) & (av < 0.95)) | ((av < 0.3) & (au < 0.95)), torch.sin(u * 8.4) * torch.sin(v * 8.4) < 0.3
    return rho < 0.55 + 0.4 * torch.cos(5 * torch.atan2(v, u)), torch.sin((u + v) * 8.4) > 0


def _spectral_residual(images: torch.Tensor) -> torch.Tensor:
    """Bottom-up saliency (Hou & Zhang, CVPR 2007) of ``(n, 3, S, S)`` images: ``(n, S, S)``, each summing to 1."""
    s = images.shape[-1]
    gray = F.interpolate(images.mean(1, keepdim=True), size=(64, 64), mode="area")[:, 0]
    spec = torch.fft.fft2(gray)
    log_amp = torch.log(spec.abs() + 1e-8)
    residual = log_amp - F.avg_pool2d(log_amp.unsqueeze(1), 3, stride=1, padding=1, count_include_pad=False)[:, 0]
    sal = torch.fft.ifft2(torch.exp(residual + 1j * torch.angle(spec))).abs() ** 2
    k = torch.exp(-0.5 * (torch.arange(-6, 7, dtype=sal.dtype) / 2.5) ** 2)  # sd 2.5 cells, as the paper's blur
    k = (k / k.sum()).view(1, 1, 1, -1)
    sal = F.conv2d(F.conv2d(sal.unsqueeze(1), k, padding=(0, 6)), k.transpose(-1, -2), padding=(6, 0))
    sal = F.interpolate(sal, size=(s, s), mode="bilinear", align_corners=False)[:, 0].clamp_min(0)
    return sal / sal.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def _photos(side: int) -> torch.Tensor:
    """The background photographs, centre-squared and resized to ``side``: ``(P, 3, side, side)``."""
    return torch.stack([square_photo(name, side) for name in BACKGROUNDS])


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(n,)`` hue (turns), saturation and value to ``(n, 3)`` RGB in [0, 1]."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + 6 * h.view(-1, 1)) % 6
    return v.view(-1, 1) * (1 - s.view(-1, 1) * torch.minimum(k, 4 - k).clamp(0, 1))


def _object_colours(labels: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``(n, 3, 1, 1)`` primary colours: the class hue +- ``HUE_JITTER``, saturation 0.65-1, value 0.75-1."""
    n = labels.shape[0]
    hue = torch.tensor(CLASS_HUES)[labels] + HUE_JITTER * (2 * torch.rand(n, generator=g) - 1)
    sat, val = 0.65 + 0.35 * torch.rand(n, generator=g), 0.75 + 0.25 * torch.rand(n, generator=g)
    return _hsv_to_rgb(hue % 1.0, sat, val).view(n, 3, 1, 1)


def _chunk(n: int, s: int, photos: torch.Tensor, g: torch.Tensor) -> dict:
    """One chunk of ``n`` samples: images, labels, masks and the fixation arrays (all drawn from ``g``)."""
    side = photos.shape[-1]
    rnd = lambda *shape: torch.rand(*shape, generator=g)
    labels = torch.randint(len(CLASS_NAMES), (n,), generator=g)
    # background: a random square crop (35-100 % of the photo side) of a random photo
    which = torch.randint(len(BACKGROUNDS), (n,), generator=g)
    crop = side * (0.35 + 0.65 * rnd(n))
    x1, y1 = rnd(n) * (side - crop), rnd(n) * (side - crop)
    rois = torch.stack([which.float(), x1, y1, x1 + crop, y1 + crop], 1)
    background = roi_align(photos, rois, (s, s), sampling_ratio=0, aligned=True).clamp(0, 1)  # area-averaging
    # clutter: a few soft, bright blobs (no class looks like them) that pull bottom-up saliency away
    pix = torch.arange(s, dtype=torch.float32)
    for _ in range(N_DISTRACTORS):
        bx, by, sd = rnd(n, 1) * s, rnd(n, 1) * s, s * (0.02 + 0.03 * rnd(n, 1))
        bump = lambda centre: torch.exp(-0.5 * ((pix - centre) / sd) ** 2)  # (n, S): a Gaussian is separable
        alpha = 0.9 * (bump(by).unsqueeze(2) * bump(bx).unsqueeze(1)).unsqueeze(1)
        background = torch.lerp(background, torch.ones_like(background), alpha)
    # object: anywhere it fits, random rotation and colour. Shapes are drawn in a window of side L around each
    # object (not the whole image), supersampled q x q per pixel (anti-aliased), then pasted with one scatter.
    radius = s * (R_MIN + (R_MAX - R_MIN) * rnd(n))
    cx = radius + rnd(n) * (s - 2 * radius)
    cy = radius + rnd(n) * (s - 2 * radius)
    theta = 2 * math.pi * rnd(n)
    win = min(s, int(math.ceil(2 * R_MAX * s)) + 2)
    q = max(1, math.ceil(SUPERSAMPLE / s))
    left = (cx - win / 2).floor().clamp(0, s - win).long()
    top = (cy - win / 2).floor().clamp(0, s - win).long()
    grid = torch.arange(win, dtype=torch.float32)
    sub = (torch.arange(win * q, dtype=torch.float32) + 0.5) / q - 0.5  # sub-pixel sample positions
    dx = (left.view(-1, 1, 1) + sub.view(1, 1, -1)) - cx.view(-1, 1, 1)  # (n, 1, Lq): window columns
    dy = (top.view(-1, 1, 1) + sub.view(1, -1, 1)) - cy.view(-1, 1, 1)  # (n, Lq, 1): window rows
    c, sn, r = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1), radius.view(-1, 1, 1)
    u, v = (c * dx + sn * dy) / r, (-sn * dx + c * dy) / r
    fine_mask = torch.zeros(n, win * q, win * q, dtype=torch.bool)
    fine_tex = torch.zeros(n, win * q, win * q, dtype=torch.bool)
    for label in range(len(CLASS_NAMES)):
        sel = torch.nonzero(labels == label).flatten()
        if len(sel):
            fine_mask[sel], fine_tex[sel] = _shape_and_texture(label, u[sel], v[sel])
    cover = F.avg_pool2d(fine_mask.unsqueeze(1).float(), q)[:, 0]  # (n, L, L) share of the pixel inside
    primary_share = F.avg_pool2d((fine_mask & fine_tex).unsqueeze(1).float(), q)[:, 0]
    flat = ((top.view(-1, 1, 1) + grid.long().view(1, -1, 1)) * s + left.view(-1, 1, 1) + grid.long().view(1, 1, -1)).view(n, -1)
    paste = lambda local: torch.zeros(n, s * s).scatter_(1, flat, local.reshape(n, -1)).view(n, 1, s, s)
    coverage, primary = paste(cover), paste(primary_share)
    mask = coverage[:, 0] >= 0.5
    colour = _object_colours(labels, g)
    images = background * (1 - coverage) + colour * primary + 0.45 * colour * (coverage - primary)
    sal = _spectral_residual(images)
    # simulated observers
    counts = torch.randint(FIX_PER_OBSERVER[0], FIX_PER_OBSERVER[1] + 1, (n, N_OBSERVERS), generator=g)
    k = int(counts.sum(1).max())
    cdx, cdy = left.view(-1, 1, 1) + grid.view(1, 1, -1) - cx.view(-1, 1, 1), top.view(-1, 1, 1) + grid.view(1, -1, 1) - cy.view(-1, 1, 1)
    near_centre = torch.exp(-0.5 * (cdx ** 2 + cdy ** 2) / (0.6 * r) ** 2)  # people look at the object's middle
    on_obj = ((cover >= 0.5) * (near_centre + 1e-6)).view(n, -1)
    obj_pix = flat.gather(1, torch.multinomial(on_obj, k, replacement=True, generator=g))
    bg = sal * (~mask) + 1e-12
    bg_pix = torch.multinomial(bg.view(n, -1), k, replacement=True, generator=g)
    centre = (s / 2 + 0.2 * s * torch.randn(n, k, 2, generator=g)).round().clamp(0, s - 1)
    centre_pix = (centre[..., 1] * s + centre[..., 0]).long()
    pick = rnd(n, k)
    pix = torch.where(pick < P_OBJECT, obj_pix, torch.where(pick < P_OBJECT + P_CENTRE, centre_pix, bg_pix))
    fx = (pix % s).float() + rnd(n, k) - 0.5
    fy = (pix // s).float() + rnd(n, k) - 0.5
    dur = torch.exp(math.log(250.0) + 0.5 * torch.randn(n, k, generator=g)).clamp_min(60.0)
    observer = torch.repeat_interleave(torch.arange(N_OBSERVERS).expand(n, -1), counts.view(-1)).split(
        counts.sum(1).tolist())
    fixations = [Fixations(fx[i, :len(o)].double().numpy(), fy[i, :len(o)].double().numpy(),
                           dur[i, :len(o)].double().numpy(), o.numpy().astype(np.int64))
                 for i, o in enumerate(observer)]
    sal_on_object = (sal * mask).sum((1, 2))
    return {"images": images, "labels": labels, "masks": mask, "fixations": fixations,
            "sal_on_object": sal_on_object, "area": mask.float().mean((1, 2)),
            "sal_peak_on_object": mask.view(n, -1).gather(1, sal.view(n, -1).argmax(1, keepdim=True))[:, 0]}


def make_demo(n: int = 512, size: int = 224, seed: int = 0) -> DemoSet:
    """Generate the synthetic demo set: ``n`` images of ``size × size`` from ``seed`` (same seed, same data).

    Returns:
        A :class:`DemoSet`. ``meta`` states that it is synthetic and records how it was made, plus two
        checks of the premise: ``bottom_up_mass_on_object`` (mean share of spectral-residual saliency on
        the object, against ``object_area``) and ``bottom_up_peak_on_object`` (how often the saliency peak
        falls on the object).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 32:
        raise ValueError(f"size must be an integer of at least 32 pixels, got {size!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    g = torch.Generator().manual_seed(seed)
    photos = _photos(max(size, PHOTO_SIDE))  # roi_align averages every pixel's footprint in a crop
    parts = [_chunk(min(_CHUNK, n - start), size, photos, g) for start in range(0, n, _CHUNK)]
    cat = lambda key: torch.cat([p[key] for p in parts])
    fixations = [f for p in parts for f in p["fixations"]]
    gaze = render_gaze_maps(fixations, [(size, size)] * n, (size, size))
    meta = {
        "synthetic": True,
        "seed": seed,
        "n": n,
        "size": size,
        "description": "SYNTHETIC demo data for demos and tests, not human gaze: procedurally drawn objects on "
                       "crops of scikit-image sample photographs, with simulated observers fixating mostly on "
                       "the object. Use CUB-GHA (data_adapters.cub_gha) for real human gaze.",
        "backgrounds": list(BACKGROUNDS),
        "observers": N_OBSERVERS,
        "fixations_per_observer": list(FIX_PER_OBSERVER),
        "fixation_mix": {"object": P_OBJECT, "centre": P_CENTRE, "salient_background": 1 - P_OBJECT - P_CENTRE},
        "gaze_sigma_px": DEFAULT_SIGMA_FRACTION * size,
        "bottom_up_saliency": "spectral residual (Hou & Zhang, CVPR 2007)",
        "object_area": float(cat("area").mean()),
        "bottom_up_mass_on_object": float(cat("sal_on_object").mean()),
        "bottom_up_peak_on_object": float(cat("sal_peak_on_object").float().mean()),
    }
    return DemoSet(images=cat("images"), labels=cat("labels"), class_names=list(CLASS_NAMES), fixations=fixations,
                   gaze=gaze.maps, object_masks=cat("masks").unsqueeze(1), meta=meta)
