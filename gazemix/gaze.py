"""Human fixations → gaze maps (densities), registered to the pixels of a resized/cropped image.

Each fixation is an isotropic 2-D Gaussian of standard deviation ``sigma_px`` in pixels of the *original*
image (the blur of the MIT/Tübingen benchmark and of CUB-GHA's reference maps, ``spec/gaze_humans.md``
§2.1); the map is the sum over fixations, integrated over each output pixel, restricted to what the output
shows and divided by its total so it is a density (sums to 1).

**Default sigma.** ``sigma_px=None`` uses 5 % of the original image's long side (25 px on a 500-px CUB
image), about one degree of visual angle. The CUB-GHA authors blur with sd 75 px on a 1920×1080 display
(``generate_heatmap.py``); a 4:3 image shown at full display height is 1440 px wide, so 75 display px is
75/1440 ≈ 5.2 % of its long side. The run files carry no display geometry, so the exact scale cannot be
recovered; 5 % is the same convention the spec's CUB-GHA agreement numbers (§6.3) use. MIT's 24 px on a
1024-px image is 2.3 %; pass ``sigma_px`` explicitly to follow a benchmark's own value.

**Coordinates.** Fixation ``(x, y)`` are 0-based pixel coordinates of the original image: integer
``(x, y)`` is the centre of pixel column ``x``, row ``y`` (so CUB-GHA's integer points sit on pixel centres).

**How it is computed.** A blurred sum of point masses is separable per fixation:
``map = Σ_k w_k · py_k ⊗ px_k`` where ``px_k[j]`` is the mass of a 1-D Gaussian in output column ``j``
(a difference of two normal CDFs at the pixel's edges, so sub-pixel positions are exact and mass beyond the
border is dropped, i.e. zero padding). For a batch this is one ``bmm`` of ``(N, H, K) @ (N, K, W)`` — the
same result as scattering into a grid and blurring with a separable Gaussian, without the quantisation, at
``O(H·W·K)`` per map. Rendering all 11,788 CUB-GHA images at 224×224 takes seconds
(``python -m benchmarks.gaze_render``).

**Registration.** ``fit="resize"`` squeezes the image to ``out_hw``; ``fit="center_crop"`` resizes so the
image covers ``out_hw`` (the shorter side, exactly as ``torchvision`` ``Resize(S)`` + ``CenterCrop(S)``
round it) and crops the centre. :func:`fit_image` applies the same geometry to images, and
:func:`crop_flip` applies a crop box + horizontal flip to images and maps together (training augmentation).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision.ops import roi_align

from data_adapters.base import Fixations

__all__ = ["DEFAULT_SIGMA_FRACTION", "EmptyGazeError", "GazeMaps", "GazeReport", "count_maps", "crop_flip",
           "default_sigma_px", "fit_geometry", "fit_image", "render_gaze_maps", "sample_crop_boxes"]

DEFAULT_SIGMA_FRACTION = 0.05
FITS = ("resize", "center_crop")
ON_EMPTY = ("error", "skip", "uniform")
_MIN_VISIBLE = 1e-6  # a map keeping less than this fraction of its fixations' mass counts as zero-mass
_CACHE_VERSION = 1


class EmptyGazeError(ValueError):
    """Some maps have no usable fixation or no mass in view and ``on_empty="error"`` was asked for."""


# ------------------------------------------------------------------------------------------ geometry
def default_sigma_px(size_hw: tuple[int, int]) -> float:
    """Default blur for an original image of ``size_hw``: 5 % of its long side (see the module docstring)."""
    return DEFAULT_SIGMA_FRACTION * max(size_hw)


def fit_geometry(size_hw: tuple[int, int], out_hw: tuple[int, int], fit: str = "resize") -> tuple[int, int, int, int]:
    """Where an original ``(h, w)`` image lands in the output: ``(resized_h, resized_w, top, left)``.

    The image is resized to ``(resized_h, resized_w)`` and the window ``[top, top + H) × [left, left + W)``
    is kept. ``"center_crop"`` rounds as torchvision does (long side ``int(S · long / short)``, offsets
    ``int(round((r - S) / 2))``), so :func:`fit_image` and ``Resize(S)`` + ``CenterCrop(S)`` agree.
    """
    h, w = (int(v) for v in size_hw)
    oh, ow = (int(v) for v in out_hw)
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive (height, width), got {size_hw}")
    if oh < 1 or ow < 1:
        raise ValueError(f"out_hw must be a positive (height, width), got {out_hw}")
    if fit == "resize":
        return oh, ow, 0, 0
    if fit != "center_crop":
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    if oh / h >= ow / w:  # the height limits: it becomes oh, the width follows
        rh, rw = oh, max(ow, int(oh * w / h))
    else:
        rh, rw = max(oh, int(ow * h / w)), ow
    return rh, rw, int(round((rh - oh) / 2.0)), int(round((rw - ow) / 2.0))


def fit_image(image: Tensor, out_hw: tuple[int, int], fit: str = "resize") -> Tensor:
    """Resize (and centre-crop) an image ``(..., C, h, w)`` exactly as :func:`render_gaze_maps` places its map."""
    rh, rw, top, left = fit_geometry(tuple(image.shape[-2:]), out_hw, fit)
    out = TF.resize(image, [rh, rw], antialias=True)
    return out[..., top:top + out_hw[0], left:left + out_hw[1]]


# ---------------------------------------------------------------------------------------------- report
@dataclass
class GazeReport:
    """What rendering did, so nothing is used silently.

    Attributes:
        n_maps: maps asked for. ``n_valid``: maps built from real fixations.
        empty: indices of maps with no usable fixation. ``zero_mass``: indices whose fixations all fall
            out of view (less than 1e-6 of their mass inside the output, e.g. cropped away).
        dropped_nonfinite / dropped_outside / dropped_short: fixations removed for a NaN/inf coordinate,
            for lying outside the original image, or for lasting less than ``min_duration_ms``.
        on_empty: the policy applied to ``empty`` and ``zero_mass`` maps.
        params: every rendering parameter (sigma rule, weighting, filter, fit, out_hw).
    """

    n_maps: int
    n_valid: int
    empty: list[int] = field(default_factory=list)
    zero_mass: list[int] = field(default_factory=list)
    dropped_nonfinite: int = 0
    dropped_outside: int = 0
    dropped_short: int = 0
    on_empty: str = "error"
    params: dict = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.n_valid}/{self.n_maps} gaze maps valid; {len(self.empty)} without fixations, "
                f"{len(self.zero_mass)} with no mass in view (policy {self.on_empty!r}); fixations dropped: "
                f"{self.dropped_nonfinite} non-finite, {self.dropped_outside} outside the image, "
                f"{self.dropped_short} shorter than the minimum duration")


@dataclass
class GazeMaps:
    """Rendered gaze maps.

    Attributes:
        maps: ``(N, 1, H, W)`` float densities; every valid map sums to 1. Invalid maps are all-NaN
            (``on_empty="skip"``) or uniform (``on_empty="uniform"``).
        valid: ``(N,)`` bool, True where the map comes from real fixations.
        report: a :class:`GazeReport`.
    """

    maps: Tensor
    valid: Tensor
    report: GazeReport

    def __len__(self) -> int:
        return int(self.maps.shape[0])


# ---------------------------------------------------------------------------------------------- render
def _pack(fixations: Sequence[Fixations], sizes: np.ndarray, weight_by_duration: bool,
          min_duration_ms: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Concatenate, filter and count: ``(image_of_fixation, x, y, weight, counts)`` as flat arrays."""
    n = len(fixations)
    lens = np.fromiter((len(f) for f in fixations), dtype=np.int64, count=n)
    img = np.repeat(np.arange(n), lens)
    x, y, dur = (np.concatenate([np.asarray(getattr(f, name), dtype=np.float64).reshape(-1) for f in fixations] or
                                [np.zeros(0)]) for name in ("x", "y", "duration_ms"))
    if x.shape != img.shape or y.shape != img.shape or dur.shape != img.shape:
        raise ValueError("every Fixations must hold x, y and duration_ms arrays of the same length")
    counts = {}
    keep = np.isfinite(x) & np.isfinite(y)
    counts["dropped_nonfinite"] = int((~keep).sum())
    h, w = sizes[img, 0], sizes[img, 1]
    inside = (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5)
    counts["dropped_outside"] = int((keep & ~inside).sum())
    keep &= inside
    if weight_by_duration or min_duration_ms > 0:
        bad = keep & ~(np.isfinite(dur) & (dur >= 0))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ValueError(f"fixations[{img[k]}] has a missing or negative duration ({dur[k]}): durations are "
                             f"needed for weight_by_duration=True or min_duration_ms > 0; pass weight_by_duration="
                             f"False and min_duration_ms=0 for data without durations")
    short = keep & (dur < min_duration_ms) if min_duration_ms > 0 else np.zeros_like(keep)
    counts["dropped_short"] = int(short.sum())
    keep &= ~short
    weight = dur[keep] if weight_by_duration else np.ones(int(keep.sum()))
    return img[keep], x[keep], y[keep], weight, counts


def _profiles(pos: np.ndarray, sigma: np.ndarray, n_pix: int, device: torch.device) -> tuple[np.ndarray, Tensor]:
    """Mass of 1-D Gaussians (centre ``pos`` in edge coordinates, sd ``sigma``) in each of ``n_pix`` unit pixels.

    Returns ``(row, table)``: ``table`` ``(U + 1, n_pix)`` float32 holds one profile per distinct
    ``(pos, sigma)`` (fixations on integer pixels repeat a lot) plus a final all-zero row for padding, and
    ``row[k]`` is fixation ``k``'s row. Tails are computed as ``erfc`` of ``|z|``, so both keep full relative precision.
    """
    keys, row = np.unique(pos + 1j * sigma, return_inverse=True)  # distinct (pos, sigma) pairs
    mu = torch.as_tensor(keys.real[:, None], dtype=torch.float32, device=device)
    sd = torch.as_tensor(keys.imag[:, None], dtype=torch.float32, device=device)
    z = (torch.arange(n_pix + 1, device=device, dtype=torch.float32) - mu) / sd
    tail = 0.5 * torch.special.erfc(z.abs() / math.sqrt(2.0))  # P(Z > |z|)
    lo, hi, t_lo, t_hi = z[:, :-1], z[:, 1:], tail[:, :-1], tail[:, 1:]
    mass = torch.where(lo >= 0, t_lo - t_hi, torch.where(hi <= 0, t_hi - t_lo, 1.0 - t_lo - t_hi))
    table = torch.cat([mass.clamp_min(0), torch.zeros(1, n_pix, device=device)])
    return row.reshape(-1), table


def _gather_profiles(table: Tensor, row: np.ndarray, f: np.ndarray, present: np.ndarray) -> Tensor:
    """Profiles of fixations ``f`` ``(n, K)`` as ``(n, K, P)``; absent slots get the table's all-zero last row."""
    idx = torch.as_tensor(np.where(present, row[f], len(table) - 1).reshape(-1), device=table.device)
    return table.index_select(0, idx).view(*present.shape, -1)


def _cache_key(fixations: Sequence[Fixations], sizes: np.ndarray, params: dict) -> str:
    h = hashlib.sha256(json.dumps({"v": _CACHE_VERSION, **params}, sort_keys=True).encode())
    h.update(np.ascontiguousarray(sizes, dtype=np.int64).tobytes())
    for f in fixations:
        for name in ("x", "y", "duration_ms"):
            a = np.ascontiguousarray(getattr(f, name), dtype=np.float64)
            h.update(np.int64(a.size).tobytes())
            h.update(a.tobytes())
    return h.hexdigest()[:32]


def render_gaze_maps(fixations: Sequence[Fixations], sizes: Sequence[tuple[int, int]], out_hw: tuple[int, int], *,
                     sigma_px: float | None = None, weight_by_duration: bool = False, min_duration_ms: float = 0.0,
                     fit: str = "resize", on_empty: str = "error", device: torch.device | str | None = None,
                     cache_dir: str | os.PathLike | None = None, chunk: int = 1024) -> GazeMaps:
    """Render each image's fixations into a gaze density of size ``out_hw``, registered to the fitted image.

    Args:
        fixations: one :class:`~data_adapters.base.Fixations` per image, in original-image pixels.
        sizes: ``(height, width)`` of each original image.
        out_hw: output ``(H, W)``.
        sigma_px: Gaussian sd in *original* pixels, the same for every image; ``None`` = 5 % of each
            image's long side (about one degree of visual angle; see the module docstring).
        weight_by_duration: weight each fixation by its duration (CUB-GHA's reference maps); off in the
            MIT/Tübingen benchmarks.
        min_duration_ms: drop fixations shorter than this (CUB-GHA's combined file used 100 ms).
        fit: ``"resize"`` or ``"center_crop"`` (see :func:`fit_geometry`).
        on_empty: maps with no usable fixation or no mass in view: ``"error"`` raises
            :class:`EmptyGazeError`; ``"skip"`` marks them invalid and fills them with NaN so accidental
            use shows; ``"uniform"`` marks them invalid and fills them with a uniform density.
        device: where to render (default CPU).
        cache_dir: when given, maps are stored in ``<cache_dir>/gaze-<hash>.npy`` (+ ``.json`` with ``valid``
            and the report) keyed by a hash of every parameter and every fixation, and reloaded on the next
            identical call (memory-mapped: a large cache costs nothing until its maps are used).
        chunk: images per batched ``bmm`` (bounds memory).

    Returns:
        :class:`GazeMaps` with ``maps (N, 1, H, W)`` float32, ``valid (N,)`` and a :class:`GazeReport`.
    """
    n = len(fixations)
    _check_render_args(n, sizes, sigma_px, min_duration_ms, fit, on_empty, chunk)
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    sizes_np = np.asarray(sizes, dtype=np.int64).reshape(n, 2)
    params = {"out_hw": list(out_hw), "sigma_px": sigma_px, "sigma_rule": f"{DEFAULT_SIGMA_FRACTION} * long side"
              if sigma_px is None else "fixed", "weight_by_duration": bool(weight_by_duration),
              "min_duration_ms": float(min_duration_ms), "fit": fit, "on_empty": on_empty}
    device = torch.device(device) if device is not None else torch.device("cpu")
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"gaze-{_cache_key(fixations, sizes_np, params)}"
        cached = _load_cached(path, device)
        if cached is not None:
            return cached
    img, x, y, wt, counts = _pack(fixations, sizes_np, weight_by_duration, min_duration_ms)
    maps = _render(img, x, y, wt, sizes_np, out_hw, sigma_px, fit, device, chunk)
    valid, report = _normalise(maps, img, wt, counts, params, on_empty)
    if path is not None:
        _store_cached(path, maps, valid, report)
    return GazeMaps(maps, valid, report)


def _check_render_args(n: int, sizes: Sequence[tuple[int, int]], sigma_px: float | None, min_duration_ms: float,
                       fit: str, on_empty: str, chunk: int) -> None:
    """Raise ``ValueError`` naming the first argument of :func:`render_gaze_maps` that cannot be used."""
    if len(sizes) != n:
        raise ValueError(f"sizes has {len(sizes)} entries but fixations has {n}: pass one (height, width) per image")
    if on_empty not in ON_EMPTY:
        raise ValueError(f"on_empty must be one of {ON_EMPTY}, got {on_empty!r}")
    if sigma_px is not None and not (isinstance(sigma_px, (int, float)) and math.isfinite(sigma_px) and sigma_px > 0):
        raise ValueError(f"sigma_px must be a positive number of original-image pixels or None, got {sigma_px!r}")
    if not (isinstance(min_duration_ms, (int, float)) and min_duration_ms >= 0):
        raise ValueError(f"min_duration_ms must be a non-negative number, got {min_duration_ms!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")


def _load_cached(path: Path, device: torch.device) -> GazeMaps | None:
    """The maps stored at ``path`` (``.npy`` + ``.json``) by an identical earlier call, or ``None``."""
    meta = path.with_suffix(".json")
    if not meta.is_file():  # written last, so its presence means the maps are complete
        return None
    try:
        info = json.loads(meta.read_text())
        # copy-on-write memory map: pages are read when used, and the cache file is never modified
        maps = torch.from_numpy(np.load(path.with_suffix(".npy"), mmap_mode="c")).to(device)
        valid = torch.tensor(info["valid"], dtype=torch.bool, device=device)
        report = GazeReport(**info["report"])
        if maps.ndim != 4 or maps.shape[0] != valid.shape[0] or maps.shape[0] != report.n_maps:
            raise ValueError(f"{maps.shape[0]} maps for {valid.shape[0]} validity flags")
    except (OSError, ValueError, KeyError, TypeError, EOFError) as err:
        warnings.warn(f"gaze cache {path.with_suffix('.npy')} is corrupt ({type(err).__name__}: {err}); "
                      "it is rebuilt", stacklevel=3)
        meta.unlink(missing_ok=True)
        return None
    return GazeMaps(maps, valid, report)


def _store_cached(path: Path, maps: Tensor, valid: Tensor, report: GazeReport) -> None:
    """Write the maps, then the ``.json`` that marks the entry complete (each by an atomic rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    np.save(tmp.with_suffix(".npy"), maps.cpu().numpy())
    os.replace(tmp.with_suffix(".npy"), path.with_suffix(".npy"))
    tmp.with_suffix(".json").write_text(json.dumps({"valid": valid.tolist(), "report": asdict(report)}))
    os.replace(tmp.with_suffix(".json"), path.with_suffix(".json"))  # last: marks the entry complete


def _render(img: np.ndarray, x: np.ndarray, y: np.ndarray, wt: np.ndarray, sizes: np.ndarray,
            out_hw: tuple[int, int], sigma_px: float | None, fit: str, device: torch.device, chunk: int) -> Tensor:
    """Unnormalised densities ``(N, 1, H, W)``: each fixation a separable Gaussian on the fitted output grid."""
    n = sizes.shape[0]
    geo = np.array([fit_geometry(tuple(s), out_hw, fit) for s in sizes], dtype=np.float64).reshape(n, 4)
    sigma = np.full(n, float(sigma_px)) if sigma_px is not None else DEFAULT_SIGMA_FRACTION * sizes.max(axis=1)
    sy, sx = geo[img, 0] / sizes[img, 0], geo[img, 1] / sizes[img, 1]  # output px per original px
    rx, px = _profiles((x + 0.5) * sx - geo[img, 3], sigma[img] * sx, out_hw[1], device)
    ry, py = _profiles((y + 0.5) * sy - geo[img, 2], sigma[img] * sy, out_hw[0], device)
    lens = np.bincount(img, minlength=n)
    starts = np.cumsum(lens) - lens
    order = np.argsort(lens, kind="stable")  # chunks of similar fixation counts: little padding
    maps = (torch.empty if len(img) else torch.zeros)((n, 1) + out_hw, dtype=torch.float32, device=device)  # every row is written
    for c in range(0, n if len(img) else 0, chunk):
        ids = order[c:c + chunk]
        k = np.arange(max(int(lens[ids].max()), 1))
        present = k < lens[ids, None]  # (n, K) slots holding a fixation
        f = np.where(present, starts[ids, None] + k, 0)
        w = torch.as_tensor(np.where(present, wt[f], 0.0), dtype=torch.float32, device=device)
        # (n, H, K) @ (n, K, W): the sum over fixations of weight * row profile ⊗ column profile
        rows = _gather_profiles(py, ry, f, present) * w.unsqueeze(-1)
        maps.index_copy_(0, torch.as_tensor(ids, device=device),
                         torch.bmm(rows.transpose(1, 2), _gather_profiles(px, rx, f, present)).unsqueeze(1))
    return maps


def _normalise(maps: Tensor, img: np.ndarray, wt: np.ndarray, counts: dict[str, int], params: dict,
               on_empty: str) -> tuple[Tensor, GazeReport]:
    """Scale each map to unit mass in place and apply the empty-map policy; returns ``valid`` and the report."""
    n, out_hw = maps.shape[0], tuple(maps.shape[-2:])
    total = torch.as_tensor(np.bincount(img, weights=wt, minlength=n), dtype=torch.float32, device=maps.device)
    mass = maps.sum(dim=(1, 2, 3))
    has_fix = total > 0
    valid = has_fix & (mass > _MIN_VISIBLE * total)
    maps.div_(torch.where(valid, mass, torch.ones_like(mass)).view(n, 1, 1, 1))
    empty = torch.nonzero(~has_fix).flatten().tolist()
    zero_mass = torch.nonzero(has_fix & ~valid).flatten().tolist()
    report = GazeReport(n_maps=n, n_valid=int(valid.sum()), empty=empty, zero_mass=zero_mass, on_empty=on_empty,
                        params=params, **counts)
    if empty or zero_mass:
        if on_empty == "error":
            raise EmptyGazeError(f"{report.summary()}. First offending indices: {(empty + zero_mass)[:10]}. "
                                 f"Pass on_empty='skip' (NaN maps, valid=False) or 'uniform' to continue")
        maps[~valid] = float("nan") if on_empty == "skip" else 1.0 / (out_hw[0] * out_hw[1])
    return valid, report


def count_maps(fixations: Sequence[Fixations], sizes: Sequence[tuple[int, int]], out_hw: tuple[int, int], *,
               fit: str = "resize", device: torch.device | str | None = None) -> Tensor:
    """Fixation *counts* per output pixel ``(N, H, W)`` (float), for the fixation-based metrics (NSS, AUC, IG).

    Each fixation goes to the output pixel containing its mapped position (the same geometry as
    :func:`render_gaze_maps`); duplicates add up, and fixations outside the image or the crop are dropped.
    """
    n = len(fixations)
    if len(sizes) != n:
        raise ValueError(f"sizes has {len(sizes)} entries but fixations has {n}: pass one (height, width) per image")
    oh, ow = int(out_hw[0]), int(out_hw[1])
    sizes_np = np.asarray(sizes, dtype=np.int64).reshape(n, 2)
    geo = np.array([fit_geometry(tuple(s), (oh, ow), fit) for s in sizes_np], dtype=np.float64).reshape(n, 4)
    img, x, y, _, _ = _pack(fixations, sizes_np, False, 0.0)
    col = np.floor((x + 0.5) * geo[img, 1] / sizes_np[img, 1] - geo[img, 3]).astype(np.int64)
    row = np.floor((y + 0.5) * geo[img, 0] / sizes_np[img, 0] - geo[img, 2]).astype(np.int64)
    ok = (col >= 0) & (col < ow) & (row >= 0) & (row < oh)
    flat = np.bincount((img[ok] * oh + row[ok]) * ow + col[ok], minlength=n * oh * ow)
    return torch.as_tensor(flat.reshape(n, oh, ow), dtype=torch.float32, device=device)


# --------------------------------------------------------------------------------- training transforms
def sample_crop_boxes(n: int, hw: tuple[int, int], *, scale: tuple[float, float] = (0.08, 1.0),
                      ratio: tuple[float, float] = (3 / 4, 4 / 3), generator: torch.Generator | None = None) -> Tensor:
    """``n`` RandomResizedCrop boxes ``(n, 4)`` as ``(y1, x1, y2, x2)`` pixel edges, drawn as torchvision does.

    Ten candidates per sample (area fraction uniform in ``scale``, log aspect ratio uniform in ``ratio``); the
    first that fits is used, otherwise the centre crop with the ratio clamped to ``ratio`` (torchvision's
    fallback). Vectorised over samples; randomness only from ``generator``.
    """
    h, w = int(hw[0]), int(hw[1])
    if not (0 < scale[0] <= scale[1]):
        raise ValueError(f"scale must be (min, max) with 0 < min <= max, got {scale}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio must be (min, max) with 0 < min <= max, got {ratio}")
    tries = 10
    area = h * w * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, tries, generator=generator, dtype=torch.float64))
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(n, tries, generator=generator,
                                                                                      dtype=torch.float64)
    r = torch.exp(log_r)
    cw = torch.round(torch.sqrt(area * r))
    ch = torch.round(torch.sqrt(area / r))
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.argmax(fits.to(torch.int8), dim=1)
    ok = fits.any(dim=1)
    cw = cw.gather(1, first[:, None])[:, 0]
    ch = ch.gather(1, first[:, None])[:, 0]
    # fallback: whole image with the ratio clamped (torchvision)
    in_ratio = w / h
    fw, fh = (w, round(w / ratio[0])) if in_ratio < ratio[0] else ((round(h * ratio[1]), h) if in_ratio > ratio[1] else (w, h))
    cw = torch.where(ok, cw, torch.tensor(float(fw), dtype=torch.float64))
    ch = torch.where(ok, ch, torch.tensor(float(fh), dtype=torch.float64))
    uy, ux = torch.rand(2, n, generator=generator, dtype=torch.float64)
    top = torch.where(ok, torch.floor(uy * (h - ch + 1)), torch.floor((h - ch) / 2))
    left = torch.where(ok, torch.floor(ux * (w - cw + 1)), torch.floor((w - cw) / 2))
    return torch.stack([top, left, top + ch, left + cw], dim=1).float()


def crop_flip(images: Tensor, maps: Tensor, boxes: Tensor, flip: Tensor, out_hw: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """Crop ``boxes`` of images and gaze maps, resize them to ``out_hw`` and flip where ``flip`` — together.

    Args:
        images: ``(B, C, H, W)`` float.
        maps: ``(B, 1, H, W)`` gaze densities of the same pixels.
        boxes: ``(B, 4)`` crop boxes ``(y1, x1, y2, x2)`` in pixel edges (e.g. :func:`sample_crop_boxes`).
        flip: ``(B,)`` bool, horizontal flip after the crop.
        out_hw: output size.

    Returns:
        ``(images, maps, valid)``: the crops ``(B, C, h, w)``; the maps' crops renormalised to sum 1 (the
        gaze density *given* the visible region); ``valid (B,)`` False where the crop holds no gaze mass
        (that map is then all-NaN). Crops are bilinear area averages (``roi_align``), so a map crop keeps the
        mass that lies in the box.
    """
    if images.ndim != 4 or maps.ndim != 4 or maps.shape[1] != 1:
        raise ValueError(f"images must be (B, C, H, W) and maps (B, 1, H, W), got {tuple(images.shape)} and {tuple(maps.shape)}")
    if images.shape[0] != maps.shape[0] or images.shape[-2:] != maps.shape[-2:]:
        raise ValueError(f"images {tuple(images.shape)} and maps {tuple(maps.shape)} must share batch and spatial size")
    b = images.shape[0]
    if boxes.shape != (b, 4) or flip.shape != (b,):
        raise ValueError(f"boxes must be ({b}, 4) and flip ({b},), got {tuple(boxes.shape)} and {tuple(flip.shape)}")
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    rois = torch.cat([torch.arange(b, device=images.device, dtype=images.dtype)[:, None],
                      boxes.to(images.device, images.dtype)[:, [1, 0, 3, 2]]], dim=1)  # (idx, x1, y1, x2, y2)
    img = roi_align(images, rois, out_hw, spatial_scale=1.0, sampling_ratio=0, aligned=True)
    g = roi_align(maps, rois.to(maps.dtype), out_hw, spatial_scale=1.0, sampling_ratio=0, aligned=True).clamp_min(0)
    mass = g.sum(dim=(1, 2, 3))
    valid = mass > 0
    g = torch.where(valid.view(b, 1, 1, 1), g / mass.clamp_min(torch.finfo(g.dtype).tiny).view(b, 1, 1, 1),
                    torch.full_like(g, float("nan")))
    f = flip.to(images.device).view(b, 1, 1, 1)
    return torch.where(f, img.flip(-1), img), torch.where(f, g.flip(-1), g), valid
