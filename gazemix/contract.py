"""The mixing contract: every gazemix mixer returns a :class:`MixResult` that can be replayed on gaze maps.

A mixed image is a sum of *sources*. Source 0 is the sample's **own** image; source 1 its **partner**;
multi-source methods (SpliceMix, Co-Mixup) add more. Each source has

* ``index`` ``(B,)``: which input image it comes from,
* ``share`` (broadcastable to ``(B, 1, H, W)``): the per-pixel share of that source in the output,
* ``weight`` ``(B,)``: its label weight (need not sum to 1 across sources: SnapMix, TokenMix),
* ``warp``: an optional geometric transform applied to the source before masking (ResizeMix shrinks
  the partner, SMMix/TdAttenMix translate a square of tokens, SpliceMix tiles down-sampled images).

So the pixels obey ``out_b = sum_s share_s[b] * warp_s(x[index_s[b]])`` (BC+ additionally subtracts each
image's mean), and :meth:`MixResult.replay` applies exactly the same sum to any per-pixel map — human gaze,
a saliency map, an object mask — returning the map mass each output keeps from its own image and from its
partner(s). Warps are applied to maps *mass-preservingly*: a shrunk partner keeps all its gaze mass; a
cropped region keeps exactly the mass inside the crop.

Conventions (the same for every mixer, whatever its source paper used): ``lam`` is the label weight of
the own image, and ``mask == 1`` means the output pixel came from the own image.
"""

from __future__ import annotations

import abc
import dataclasses
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, ContextManager, Iterable, Mapping, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BoxWarp", "ForwardOutputs", "ForwardRequest", "MixResult", "MixSource", "Mixer", "MixerInputError",
           "TrackedTargets", "TrainingHooks", "box_sums", "cell_sums", "check_index", "check_pairing", "grid_cell_ids",
           "nearest_cell_ids", "nearest_cell_pixels", "scale_to_mass", "soft_target_ce", "soft_targets",
           "upsample_cells"]


class MixerInputError(ValueError):
    """A mixer was called with inputs it cannot use; the message says what to pass instead."""


# --------------------------------------------------------------------------------------------- warps
@dataclass(frozen=True)
class BoxWarp:
    """Move the content of ``src`` boxes of a source image into ``dst`` boxes of the output, resizing it.

    Boxes are ``(B, 4)`` integer pixel boxes ``(y1, x1, y2, x2)`` (half-open). Pixels outside ``dst`` are 0
    after the warp (a source's ``share`` is 0 there anyway).

    Args:
        src: region of the source image that is shown.
        dst: region of the output it is shown in.
        mode: pixel interpolation, ``"nearest"`` or ``"bilinear"``.
        align_corners: as in :func:`torch.nn.functional.grid_sample` (SnapMix and SpliceMix use True).
    """

    src: Tensor
    dst: Tensor
    mode: str = "bilinear"
    align_corners: bool = False

    def _grid(self, b: int, h: int, w: int, device: torch.device, dtype: torch.dtype,
              out_hw: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """Sampling grid over an output of ``out_hw`` (default: the source size ``(h, w)``)."""
        oh, ow = out_hw or (h, w)
        src = self.src.to(device=device, dtype=dtype)
        dst = self.dst.to(device=device, dtype=dtype)
        ys = torch.arange(oh, device=device, dtype=dtype).view(1, oh, 1)
        xs = torch.arange(ow, device=device, dtype=dtype).view(1, 1, ow)
        sy1, sx1, sy2, sx2 = (src[:, k].view(-1, 1, 1) for k in range(4))
        dy1, dx1, dy2, dx2 = (dst[:, k].view(-1, 1, 1) for k in range(4))
        dh = (dy2 - dy1).clamp_min(1)
        dw = (dx2 - dx1).clamp_min(1)
        if self.align_corners:  # corner pixel centres map onto corner pixel centres
            fy = (ys - dy1) / (dh - 1).clamp_min(1) * (sy2 - sy1 - 1) + sy1
            fx = (xs - dx1) / (dw - 1).clamp_min(1) * (sx2 - sx1 - 1) + sx1
            gy = fy / max(h - 1, 1) * 2 - 1
            gx = fx / max(w - 1, 1) * 2 - 1
        else:  # pixel areas map onto pixel areas
            fy = (ys + 0.5 - dy1) / dh * (sy2 - sy1) + sy1
            fx = (xs + 0.5 - dx1) / dw * (sx2 - sx1) + sx1
            gy = fy / h * 2 - 1
            gx = fx / w * 2 - 1
        grid = torch.stack(torch.broadcast_tensors(gx, gy), dim=-1)  # (B, H, W, 2) as (x, y)
        inside = (ys >= dy1) & (ys < dy2) & (xs >= dx1) & (xs < dx2)
        return grid, inside.unsqueeze(1)

    def apply(self, x: Tensor) -> Tensor:
        """Warp pixels ``x`` ``(B, C, H, W)``: the source box, resized into the destination box."""
        b, c, h, w = x.shape
        if c == 0:  # a batch without channels (gaze-only scoring) has no pixel to sample
            return x.new_zeros(x.shape)
        grid, inside = self._grid(b, h, w, x.device, x.dtype if x.is_floating_point() else torch.float32)
        out = F.grid_sample(x, grid.to(x.dtype), mode=self.mode, padding_mode="border",
                            align_corners=self.align_corners)
        return out * inside

    def apply_at(self, x: Tensor, out_hw: tuple[int, int]) -> Tensor:
        """Like :meth:`apply` but onto an output canvas of ``out_hw`` (e.g. just the destination box)."""
        b, c, h, w = x.shape
        if c == 0:
            return x.new_zeros((b, 0, *out_hw))
        grid, _ = self._grid(b, h, w, x.device, x.dtype if x.is_floating_point() else torch.float32, out_hw)
        grid = grid.expand(b, *grid.shape[1:])
        return F.grid_sample(x, grid.to(x.dtype), mode=self.mode, padding_mode="border",
                             align_corners=self.align_corners)

    def apply_density(self, g: Tensor) -> Tensor:
        """Warp maps ``g`` ``(B, C, H, W)`` so each destination box holds exactly the mass ``g`` has in ``src``."""
        b, _, h, w = g.shape
        shape = self.apply(g).clamp_min(0)
        ys = torch.arange(h, device=g.device).view(1, 1, h, 1)
        xs = torch.arange(w, device=g.device).view(1, 1, 1, w)
        src = self.src.to(g.device).view(b, 4, 1, 1)
        in_src = (ys >= src[:, 0:1]) & (ys < src[:, 2:3]) & (xs >= src[:, 1:2]) & (xs < src[:, 3:4])
        return scale_to_mass(shape, (g * in_src).sum(dim=(2, 3)))

    def index_select(self, rows: Tensor) -> "BoxWarp":
        return dataclasses.replace(self, src=self.src[rows], dst=self.dst[rows])

    def only(self, shown: Tensor) -> "BoxWarp":
        """The same warp for the outputs where ``shown`` ``(B,)`` is True; an empty box onto an empty box elsewhere.

        A source that shows nothing in some outputs then still has its warp's ``dst`` as its exact box (an empty
        one there), so it can be declared as a :class:`MixSource` ``box`` and replayed from box sums.
        """
        keep = shown.to(self.dst.device).view(-1, 1)
        return dataclasses.replace(self, src=torch.where(keep, self.src, 0), dst=torch.where(keep, self.dst, 0))


def scale_to_mass(shape: Tensor, mass: Tensor) -> Tensor:
    """Rescale each warped map ``(B, C, H, W)`` to total ``mass`` ``(B, C)`` (or ``(B,)`` for one channel; 0 where
    the warp shows nothing).

    Warps interpolate a map's *shape*; this makes the replay mass-exact: a shown region keeps exactly the gaze
    mass it had in the source image.
    """
    total = shape.sum(dim=(2, 3))
    mass = mass.reshape(total.shape)
    scale = torch.where(total > 0, mass / total.clamp_min(torch.finfo(shape.dtype).tiny), torch.zeros_like(total))
    return shape * scale.view(*total.shape, 1, 1)


# ------------------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class MixSource:
    """One source of every mixed output: which image, its per-pixel share, its label weight, its warp.

    ``share`` is float, or boolean for hard masks (cheaper to build and store; replay converts it).
    ``box`` ``(B, 4)`` (optional) says that ``share`` is exactly the indicator of that box (True inside), or
    of its complement with ``box_complement=True``; with a :class:`BoxWarp` the box is the warp's ``dst``.
    ``cells`` ``(B, n, m)`` (optional) says that ``share`` is constant on the cells of an ``n x m`` grid (pixel
    ``(y, x)`` in cell ``(y * n // H, x * m // W)``, :func:`grid_cell_ids`) with these values; with a warp, the warp
    moves whole cells and has ``move_cells`` (:class:`~gazemix.warps.BlockTransportWarp`).
    Replay then sums each map over its box or its cells alone (:meth:`MixResult.replay_masses`).
    """

    index: Tensor
    share: Tensor
    weight: Tensor
    warp: BoxWarp | None = None
    box: Tensor | None = None
    box_complement: bool = False
    cells: Tensor | None = None


def soft_targets(targets: Tensor, num_classes: int | None, smoothing: float = 0.0) -> Tensor:
    """Class indices ``(B,)`` or soft/multi-hot ``(B, K)`` → float ``(B, K)``, label-smoothed as in timm.

    Smoothing ``s`` spreads ``s`` evenly: ``off = s / K``, ``on = 1 - s + s / K``.
    """
    if targets.ndim == 1:
        if targets.is_floating_point():
            raise MixerInputError("targets of shape (B,) must be integer class indices, got a float tensor")
        if num_classes is None:
            raise MixerInputError("targets are class indices (B,): pass num_classes= to the mixer")
        if targets.numel():
            lo, hi = (int(v) for v in torch.aminmax(targets))  # one device sync for both bounds
            if lo < 0 or hi >= num_classes:
                raise MixerInputError(f"targets must lie in [0, {num_classes - 1}] (num_classes={num_classes}), "
                                      f"got values in [{lo}, {hi}]")
        soft = F.one_hot(targets.long(), num_classes).float()
    elif targets.ndim == 2:
        if num_classes is not None and targets.shape[1] != num_classes:
            raise MixerInputError(f"soft targets have {targets.shape[1]} classes but num_classes={num_classes}")
        soft = targets.float()
    else:
        raise MixerInputError(f"targets must be (B,) class indices or (B, K) soft labels, got shape {tuple(targets.shape)}")
    if smoothing:
        k = soft.shape[1]
        soft = soft * (1.0 - smoothing) + smoothing / k
    return soft


def soft_target_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """``mean_i sum_c -t_ic log softmax(z_i)_c`` (timm ``SoftTargetCrossEntropy``) against soft targets ``(B, K)``."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


# ---------------------------------------------------------------------------------------------- result
@dataclass(frozen=True)
class MixResult:
    """What a mixer returns: the mixed batch, its soft targets, and everything needed to replay the mix.

    Attributes:
        images: mixed batch ``(B', C, H, W)`` (``B' = B`` except for methods that append, e.g. SpliceMix).
        targets: soft targets ``(B', K)``.
        sources: the sources of every output; ``sources[0]`` is the own image, ``sources[1]`` the partner.
        params: the sampled parameters (plain Python values and small tensors), kept for provenance.
        mixer: the registered name of the mixer that produced it.
        per_pixel_offset: True when the image rule is not a pure convex sum of sources (BC+ subtracts means);
            replay still reports the shares.
    """

    images: Tensor
    targets: Tensor
    sources: tuple[MixSource, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    mixer: str = ""
    per_pixel_offset: bool = False

    # --- the named two-source view (public API) ---
    @property
    def index(self) -> Tensor:
        """Partner of each output, ``(B',)`` indices into the input batch."""
        return self.sources[1].index

    @property
    def own_index(self) -> Tensor:
        """Own image of each output, ``(B',)`` (``arange(B)`` unless the mixer appends outputs)."""
        return self.sources[0].index

    @property
    def lam(self) -> Tensor:
        """Label weight of each output's own image, ``(B',)``."""
        return self.sources[0].weight

    @property
    def partner_lam(self) -> Tensor:
        """Label weight of the partner(s), ``(B',)`` — ``1 - lam`` unless the method says otherwise."""
        return sum((s.weight for s in self.sources[1:]), torch.zeros_like(self.lam))

    @property
    def mask(self) -> Tensor:
        """Per-pixel share of the own image ``(B', 1, H, W)``, float."""
        b, _, h, w = self.images.shape
        share = self.sources[0].share
        dtype = self.images.dtype if self.images.is_floating_point() else torch.float32
        return share.expand(b, 1, h, w).to(dtype)

    @property
    def num_sources(self) -> int:
        return len(self.sources)

    # --- replay ---
    def source_maps(self, maps: Tensor) -> Tensor:
        """Each source's contribution to each output when the mix is replayed on ``maps``.

        Args:
            maps: per-pixel maps of the *input* batch ``(B, 1, H, W)`` (e.g. gaze densities).

        Returns:
            ``(B', S, H, W)``: ``share_s * warp_s(maps[index_s])``, warps applied mass-preservingly.
        """
        self._check_maps(maps)
        out = []
        for src in self.sources:
            g = maps[src.index]
            if src.warp is not None:
                g = src.warp.apply_density(g)
            out.append((src.share.to(g.dtype) * g)[:, 0])
        return torch.stack(out, dim=1)

    def replay_sources(self, maps: Tensor) -> Tensor:
        """Map mass that each output keeps from each source: ``(B', S)``, for maps ``(B, 1, H, W)``.

        Sources that declare a ``box`` are summed over that box alone (a warped box keeps exactly the mass of
        its ``src`` box, as :meth:`BoxWarp.apply_density` defines it), sources with ``cells`` over their grid
        cells, without building or reading a mask.
        """
        self._check_maps(maps)
        return self.replay_masses(maps)[..., 0]

    def replay_masses(self, maps: Tensor, totals: Tensor | None = None) -> Tensor:
        """:meth:`replay_sources` of ``C`` map sets at once: ``maps`` ``(B, C, H, W)`` -> ``(B', S, C)``.

        Each channel is replayed on its own (e.g. the evaluation and the guide gaze of the same images); the
        masks, warps and boxes are built or read once for all of them. ``totals`` ``(B, C)``: the maps' sums, when
        the caller already has them.
        """
        self._check_maps(maps, channels=None)
        b = self.images.shape[0]
        n, c = maps.shape[:2]
        totals = maps.sum(dim=(2, 3)) if totals is None else totals.to(maps.dtype)
        flat = maps.reshape(n, c, -1)
        per_cell: dict[tuple[int, int], Tensor] = {}
        masses = []
        for src in self.sources:
            if src.box is not None:
                box = src.box if src.warp is None else src.warp.src
                inside = box_sums(maps, src.index, box, totals)
                masses.append(totals[src.index] - inside if src.box_complement else inside)
                continue
            if src.cells is not None:
                grid = tuple(src.cells.shape[-2:])
                if grid not in per_cell:
                    per_cell[grid] = cell_sums(maps, grid)  # (N, C, n, m), shared by the sources on this grid
                moved = per_cell[grid][src.index] if src.warp is None else src.warp.move_cells(per_cell[grid][src.index])
                masses.append(torch.einsum("bcnm,bnm->bc", moved, src.cells.to(maps.dtype)))
                continue
            share = src.share
            if share.shape[0] == b == n and share.shape[-2:] != (1, 1) and src.warp is None \
                    and not _is_identity(src.index, n) and _is_permutation(src.index, n):
                # per-sample masks on permuted maps: move the (small) masks to their maps instead of gathering
                # the maps, i.e. output ``index[j]``'s mask meets map ``j``
                inverse = torch.argsort(src.index)
                g = torch.bmm(flat, share[inverse].to(maps.dtype).reshape(b, -1, 1)).view(b, c)
                masses.append(g[src.index])
                continue
            share = share.to(maps.dtype)
            if src.warp is not None:
                g = src.warp.apply_density(maps[src.index])
                masses.append((share * g).sum(dim=(2, 3)))
            elif share.shape[-2:] == (1, 1):  # constant share per sample: no per-pixel product needed
                masses.append(share.reshape(share.shape[0], 1).expand(b, 1) * totals[src.index])
            elif share.shape[0] == 1:  # one mask for the whole batch: a matrix-vector product
                masses.append(flat[src.index] @ share.reshape(-1))
            else:  # per-sample masks: batched dot products, no temporary map-sized product
                g = flat if _is_identity(src.index, n) else flat[src.index]
                masses.append(torch.bmm(g, share.reshape(b, -1, 1)).view(b, c))
        return torch.stack(masses, dim=1)

    def replay(self, maps: Tensor) -> tuple[Tensor, Tensor]:
        """Replay the mix on per-pixel ``maps`` ``(B, 1, H, W)`` of the input batch.

        Returns:
            ``(own, partner)``, two ``(B',)`` tensors: the map mass each mixed image keeps from its own
            image and from its partner(s) (all non-own sources summed), exactly as the pixels were mixed.
        """
        masses = self.replay_sources(maps)
        return masses[:, 0], masses[:, 1:].sum(dim=1)

    def _check_maps(self, maps: Tensor, channels: int | None = 1) -> None:
        n = int(max(int(s.index.max()) for s in self.sources)) + 1 if self.images.shape[0] else 0
        if maps.ndim != 4 or (channels is not None and maps.shape[1] != channels):
            raise MixerInputError(f"maps must have shape (B, {channels or 'C'}, H, W), got {tuple(maps.shape)}")
        if maps.shape[-2:] != self.images.shape[-2:]:
            raise MixerInputError(f"maps are {tuple(maps.shape[-2:])} but the mixed images are "
                                  f"{tuple(self.images.shape[-2:])}: resize the maps to the image size first")
        if maps.shape[0] < n:
            raise MixerInputError(f"maps hold {maps.shape[0]} maps but the mix draws on {n} input images")

    def select(self, rows: Tensor) -> "MixResult":
        """The outputs ``rows`` only (sources, warps and targets sliced alike); ``params`` are kept whole."""
        if _is_identity(rows, self.images.shape[0]):
            return self
        rows = rows.to(self.images.device)

        def pick(s: MixSource) -> MixSource:
            share = s.share if s.share.shape[0] == 1 else s.share[rows]
            return MixSource(s.index[rows], share, s.weight[rows], None if s.warp is None else s.warp.index_select(rows),
                             None if s.box is None else s.box[rows], s.box_complement,
                             None if s.cells is None else s.cells[rows])
        return dataclasses.replace(self, images=self.images[rows], targets=self.targets[rows],
                                   sources=tuple(pick(s) for s in self.sources))

    def to(self, device: torch.device | str) -> "MixResult":
        def move(s: MixSource) -> MixSource:
            warp = None if s.warp is None else dataclasses.replace(s.warp, src=s.warp.src.to(device), dst=s.warp.dst.to(device))
            return MixSource(s.index.to(device), s.share.to(device), s.weight.to(device), warp,
                             None if s.box is None else s.box.to(device), s.box_complement,
                             None if s.cells is None else s.cells.to(device))
        return dataclasses.replace(self, images=self.images.to(device), targets=self.targets.to(device),
                                   sources=tuple(move(s) for s in self.sources))


def box_sums(maps: Tensor, index: Tensor, boxes: Tensor, totals: Tensor | None = None) -> Tensor:
    """Sums ``(B, C)`` of maps ``maps[index[b]]`` (``(N, C, H, W)``) inside half-open boxes ``boxes[b] = (y1, x1, y2, x2)``.

    One slice sum per box: each reads only its box (no mask is built), which on the CPU is several times
    faster than a masked pass over the whole map. Empty boxes sum to 0 and whole-image boxes to the map's total
    (``totals`` ``(N, C)`` when given) without reading a pixel. Sums accumulate in the maps' dtype (float32 sums
    are pairwise, relative error about 1e-7, and several times faster than float64 ones on the CPU).
    """
    n, c, h, w = maps.shape
    out = torch.zeros(index.shape[0], c, dtype=maps.dtype, device=maps.device)
    boxes = boxes.to(maps.device)
    empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    whole = (boxes == boxes.new_tensor([0, 0, h, w])).all(dim=1)
    if bool(whole.any()):
        out[whole] = (maps.sum(dim=(2, 3)) if totals is None else totals.to(maps.dtype))[index[whole]]
    rows = (~empty & ~whole).nonzero().flatten().tolist()
    for k, i, (y1, x1, y2, x2) in zip(rows, index[rows].tolist(), boxes[rows].tolist()):
        out[k] = maps[i, :, y1:y2, x1:x2].sum(dim=(1, 2))
    return out


def grid_cell_ids(size: int, cells: int, device: torch.device | None = None) -> Tensor:
    """Cell of each of ``size`` pixels along one side cut into ``cells`` cells: ``pixel * cells // size``."""
    return torch.arange(size, device=device) * cells // size


def upsample_cells(cells: Tensor, hw: tuple[int, int]) -> tuple[Tensor, Tensor | None]:
    """Cell values ``(B, n, m)`` as pixels ``(B, 1, H, W)``, exactly as ``F.interpolate(mode="nearest")`` upsamples them.

    Returns the pixels and, when nearest upsampling puts every pixel in its :func:`grid_cell_ids` cell, the cells
    themselves, ready to be declared as :class:`MixSource` ``cells``; else ``None``. It does for most sizes but not
    all, even some the grid divides (PyTorch places nearest samples with a float scale: 82 pixels in 2 cells).
    """
    (h, w), (n, m) = hw, cells.shape[-2:]
    rows, cols = nearest_cell_ids(h, n, cells.device), nearest_cell_ids(w, m, cells.device)
    pixels = cells.index_select(1, rows).index_select(2, cols).unsqueeze(1)
    on_grid = torch.equal(rows, grid_cell_ids(h, n, cells.device)) and torch.equal(cols, grid_cell_ids(w, m, cells.device))
    return pixels, cells if on_grid else None


def nearest_cell_ids(size: int, cells: int, device: torch.device | None = None) -> Tensor:
    """The cell ``F.interpolate(mode="nearest")`` reads for each of ``size`` pixels (its float scale, not integers)."""
    ids = F.interpolate(torch.arange(cells, dtype=torch.float32).view(1, 1, cells, 1), size=(size, 1), mode="nearest")
    return ids.view(-1).long().to(device)


def nearest_cell_pixels(hw: tuple[int, int], grid: tuple[int, int], device: torch.device | None = None) -> Tensor:
    """Pixels ``(n, m)`` (int64) that nearest upsampling of an ``n x m`` grid to ``hw`` gives each cell."""
    rows = torch.bincount(nearest_cell_ids(hw[0], grid[0]), minlength=grid[0])
    cols = torch.bincount(nearest_cell_ids(hw[1], grid[1]), minlength=grid[1])
    return (rows.view(-1, 1) * cols.view(1, -1)).to(device)


def cell_sums(maps: Tensor, grid: tuple[int, int]) -> Tensor:
    """Sums ``(N, C, n, m)`` of maps ``(N, C, H, W)`` over the cells of an ``n x m`` grid (:func:`grid_cell_ids`).

    One pass over the maps: a reshape when the grid divides the size, else one slice per row and column band.
    """
    n_rows, n_cols = grid
    n, c, h, w = maps.shape
    if h % n_rows == 0 and w % n_cols == 0:
        return maps.reshape(n, c, n_rows, h // n_rows, n_cols, w // n_cols).sum(dim=(3, 5))
    row_edges = torch.bincount(grid_cell_ids(h, n_rows), minlength=n_rows).cumsum(0).tolist()
    col_edges = torch.bincount(grid_cell_ids(w, n_cols), minlength=n_cols).cumsum(0).tolist()
    rows = torch.stack([maps[:, :, y0:y1].sum(dim=2) for y0, y1 in zip([0] + row_edges[:-1], row_edges)], dim=2)
    return torch.stack([rows[..., x0:x1].sum(dim=-1) for x0, x1 in zip([0] + col_edges[:-1], col_edges)], dim=3)


def _is_permutation(index: Tensor, n: int) -> bool:
    """True when ``index`` holds every one of ``0 .. n - 1`` exactly once."""
    return index.numel() == n and bool((torch.bincount(index, minlength=n) == 1).all())


def _is_identity(index: Tensor, n: int) -> bool:
    """True when ``index`` is ``arange(n)`` (a cheap check that skips a gather)."""
    return index.numel() == n and bool((index == torch.arange(n, device=index.device)).all())


# ------------------------------------------------------------------------------------------ training hooks
@dataclass(frozen=True)
class ForwardRequest:
    """What one mixed batch asks of the trainer's forward pass (returned by :meth:`TrainingHooks.request`).

    Attributes:
        teacher_logits: the model's logits on the clean batch in eval mode without gradient (the teacher of a
            consistency loss). The trainer uses ``kept_teacher`` when given, else the final tokens of a no-grad
            read-out the mixer ran on the model during the call, else one extra eval-mode forward.
        kept_teacher: those logits when the mixer already computed them (SMMix's own eval forward).
        clean_logits: run the clean batch through the *same* training forward as the mixed one (with gradient:
            one pass, BatchNorm sees both halves); the logits arrive as :attr:`ForwardOutputs.clean_logits`.
        features: return the final features of the training forward (``forward_features``: tokens
            ``(B', P + N, D)`` for a ViT, a map ``(B', C, h, w)`` for a CNN) as :attr:`ForwardOutputs.features`.
    """

    teacher_logits: bool = False
    kept_teacher: Tensor | None = None
    clean_logits: bool = False
    features: bool = False


@dataclass(frozen=True)
class ForwardOutputs:
    """What the trainer hands to :meth:`TrainingHooks.losses` after the training forward of one step.

    Attributes:
        images, labels: the clean (augmented, normalised) input batch and its labels.
        result: the mix (after :meth:`Mixer.relabel`).
        logits: float32 logits of the training forward on ``result.images``, ``(B', K)``.
        model: the model being trained (unwrapped from DDP).
        clean_logits: float32 logits of the clean batch from the same forward (:attr:`ForwardRequest.clean_logits`).
        teacher_logits: float32 eval-mode, no-grad logits of the clean batch (:attr:`ForwardRequest.teacher_logits`).
        features: final features of the training forward (:attr:`ForwardRequest.features`).
        token_head: the module :meth:`TrainingHooks.token_head` built, when the trainer built it.
        autocast: the trainer's mixed-precision context, for losses that run in it (a no-op context on CPU).
    """

    images: Tensor
    labels: Tensor
    result: MixResult
    logits: Tensor
    model: nn.Module
    clean_logits: Tensor | None = None
    teacher_logits: Tensor | None = None
    features: Tensor | None = None
    token_head: nn.Module | None = None
    autocast: Callable[[], ContextManager[Any]] = nullcontext


class TrackedTargets(Protocol):
    """What :meth:`TrainingHooks.track_targets` yields: the targets, readable after the forward ran."""

    @property
    def targets(self) -> Tensor: ...


class TrainingHooks:
    """How a mixer takes part in training beyond ``mixer(images, labels, **context)``; every hook here is a no-op.

    A trainer gets one object from :meth:`Mixer.training_hooks` and drives it without knowing the mixer:

    * :meth:`token_head` once, when the model is built: an extra module trained with the model (SMMix's linear
      token head), or ``None``;
    * :meth:`setup` before the first epoch (a learned mixer's own networks, a search phase) and :meth:`save` at the
      end of every epoch (its state, next to the model's checkpoints);
    * per step, after the mixer call: :meth:`request` (what this batch needs from the forward); the forward runs
      inside :meth:`track_targets` when :attr:`tracks_targets` is set (the targets then come from the forward);
      :meth:`losses` after it (terms added to the classification loss before the one backward);
      :meth:`after_step` after the optimiser step (the mixer's own update).

    Relabelling after the forward is part of the mixing contract itself (:attr:`Mixer.relabels_after_forward`,
    :meth:`Mixer.relabel`), because scoring uses it too. Hooks keep no state of their own beyond their mixer, so a
    trainer may ask for them more than once.
    """

    tracks_targets: bool = False
    """True when :meth:`track_targets` replaces the mix's targets by targets tracked through the training forward."""

    def token_head(self, model: nn.Module, num_classes: int) -> nn.Module | None:
        """A module the losses use, trained with the model (kept in the model's checkpoint), or ``None``."""
        return None

    def setup(self, model: nn.Module, *, loader: Iterable, augment: Callable, total_steps: int,
              device: torch.device, max_steps: int | None = None, quiet: bool = True,
              state_dir: str | Path | None = None, resume: bool = False, start_step: int = 0) -> None:
        """Prepare for training ``model`` (unwrapped): ``loader``/``augment`` the training batches (for a search
        phase), ``total_steps`` the optimiser steps of the run, ``state_dir`` where :meth:`save` writes (read back
        when ``resume``), ``start_step`` the steps already taken."""

    def request(self, result: MixResult) -> ForwardRequest:
        """What the forward on ``result.images`` must also provide for :meth:`losses`."""
        return ForwardRequest()

    def track_targets(self, model: nn.Module, result: MixResult) -> ContextManager[TrackedTargets]:
        """A context around the training forward of ``model`` on ``result.images`` yielding the tracked targets."""
        raise NotImplementedError(f"{type(self).__name__} tracks no targets")

    def losses(self, out: ForwardOutputs) -> dict[str, Tensor]:
        """Extra loss terms of this step by name (each added to the classification loss)."""
        return {}

    def after_step(self) -> None:
        """The mixer's own update, after the model's optimiser step."""

    def save(self, state_dir: str | Path) -> None:
        """Write the mixer's training state into ``state_dir`` (called on one process only)."""


# ---------------------------------------------------------------------------------------------- mixers
class Mixer(abc.ABC):
    """Base class of all mixers: validate in ``__init__``, *sample* parameters, then *apply* them.

    ``mixer(images, targets, *, generator=None, **context) -> MixResult``.

    Standard ``context`` keys (a mixer lists the ones it requires in ``needs``):
    ``gaze`` human gaze maps ``(B, 1, H, W)``; ``saliency`` any per-pixel saliency ``(B, 1, H, W)``;
    ``attention`` a model's class-token attention over patch tokens ``(B, N)`` or a patch-grid map
    ``(B, h, w)``; ``model`` the ``nn.Module`` being trained (or a teacher); ``logits`` ``(B, K)``;
    ``epoch`` (int) for progressive schedules; ``index`` ``(B,)`` a partner for every sample chosen by the
    caller instead of drawn (``gazemix score`` uses it to compare every mixer on the same pairs).

    Subclasses set ``name``, ``summary``, ``reference`` and their capabilities, and implement :meth:`sample`
    and :meth:`apply`. Capabilities describe the **built instance** (options can change them, e.g. a saliency
    mixer's ``saliency_source``), so callers read them from the instance, never from the class:

    * ``needs``: context keys that must be passed to the call;
    * ``content_independent``: the mask, the label weights and the warps never depend on pixel values (they
      may depend on shapes and on context maps such as ``gaze=``);
    * ``model_kind``: the model the mixer reads, if any: ``"cnn"`` (a feature map, CAM), ``"vit"`` (class-token
      or patch attention), ``"any"`` (input gradients, a teacher's logits) or ``None``;
    * ``relabels_after_forward``: the label comes from :meth:`relabel` after the model's forward;
    * :attr:`reads_gaze`: the mix or the label is chosen from the ``gaze=`` maps;
    * ``modes`` (class-level): the values of the ``mode`` option (``"batch"``: one draw per batch; ``"elem"``:
      one per sample); empty when the mixer has no such option;
    * ``uses_patch_grid`` (class-level): the mix is laid on a token grid set by the ``patch_size`` option (a
      trainer passes its ViT's patch size).

    Training extras (auxiliary losses, a token head, a learned mixer's own update) come from
    :meth:`training_hooks`.

    Args (shared by every mixer):
        num_classes: number of classes, required when targets are class indices.
        label_smoothing: timm-style smoothing of each one-hot before mixing (default 0: off).
        seed: seed of the mixer's own ``torch.Generator``; a ``generator=`` passed to a call wins.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    modes: ClassVar[tuple[str, ...]] = ()
    uses_patch_grid: ClassVar[bool] = False
    needs: tuple[str, ...] = ()
    content_independent: bool = True
    model_kind: str | None = None
    relabels_after_forward: bool = False

    def __init__(self, *, num_classes: int | None = None, label_smoothing: float = 0.0, seed: int | None = None) -> None:
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        check_range("label_smoothing", label_smoothing, 0.0, 1.0, hi_open=True)
        self.num_classes = num_classes
        self.label_smoothing = float(label_smoothing)
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(int(seed))
        else:
            self.generator.seed()

    @property
    def reads_gaze(self) -> bool:
        """True when the mix or its label is chosen from ``gaze=`` (scoring must then hold those observers out)."""
        return "gaze" in self.needs

    # -- the public call --
    def __call__(self, images: Tensor, targets: Tensor, *, generator: torch.Generator | None = None,
                 **context: Any) -> MixResult:
        self.check_inputs(images, targets)
        self.check_context(images, targets, context)
        check_index(images, context)
        gen = generator if generator is not None else self.generator
        params = self.sample(images, targets, generator=gen, **context)
        return self.apply(images, targets, params)

    @abc.abstractmethod
    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        """Draw every random quantity of one call (the only place randomness is used)."""

    @abc.abstractmethod
    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        """Mix deterministically with ``params``; never modifies ``images`` or ``targets``."""

    def relabel(self, result: MixResult, **outputs: Any) -> MixResult:
        """Second phase of methods whose label needs the model's forward pass on the *mixed* batch.

        TransMix and MixPro set ``relabels_after_forward = True`` and read ``outputs`` such as
        ``attention=`` (last block class-token attention over patch tokens, ``(B, N)``) and ``logits=``;
        every other mixer returns ``result`` unchanged.
        """
        return result

    def training_hooks(self, *, auxiliary_losses: bool = True) -> TrainingHooks:
        """How a trainer drives this mixer beyond the call (see :class:`TrainingHooks`; default: nothing more).

        ``auxiliary_losses=False`` leaves out the optional loss terms a method adds to the model's objective
        (SMMix/TdAttenMix's consistency and fine-grained terms, SpliceMix-CL's consistency term); terms that
        train the mixer itself (a learned mixer's) stay.
        """
        return TrainingHooks()

    # -- helpers for subclasses --
    def partners(self, b: int, generator: torch.Generator, pairing: str, context: Mapping[str, Any]) -> Tensor:
        """The partner of each sample: ``context["index"]`` when the caller fixed it, else drawn by ``pairing``."""
        if context.get("index") is not None:
            return context["index"].detach().to("cpu", torch.long)
        return draw_partners(b, generator, pairing)

    def context_help(self) -> str:
        return "see the mixer's docstring"

    def check_context(self, images: Tensor, targets: Tensor, context: Mapping[str, Any]) -> None:
        """Raise :class:`MixerInputError` naming what to pass when the call context cannot serve this mixer.

        Default: every key of ``needs`` must be given; mixers with alternatives (``attention=`` or ``model=``)
        override it.
        """
        missing = [k for k in self.needs if context.get(k) is None]
        if missing:
            raise MixerInputError(f"{self.name} needs {', '.join(f'{k}=' for k in missing)} in the call: "
                                  f"{self.context_help()}")

    def check_inputs(self, images: Tensor, targets: Tensor) -> None:
        if not isinstance(images, Tensor) or images.ndim != 4:
            raise MixerInputError(f"images must be a (B, C, H, W) tensor, got "
                                  f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__}")
        if not images.is_floating_point():
            raise MixerInputError(f"images must be floating point, got {images.dtype}: convert with .float()")
        if images.shape[0] < 1:
            raise MixerInputError("images is an empty batch")
        if not isinstance(targets, Tensor) or targets.shape[0] != images.shape[0]:
            raise MixerInputError(f"targets must be a tensor with one row per image: {images.shape[0]} images, "
                                  f"targets of shape {tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__}")

    def soft(self, targets: Tensor, device: torch.device) -> Tensor:
        return soft_targets(targets, self.num_classes, self.label_smoothing).to(device)

    def pair_result(self, images: Tensor, mixed: Tensor, targets: Tensor, index: Tensor, own_share: Tensor,
                    lam: Tensor, params: Mapping[str, Any], *, partner_weight: Tensor | None = None,
                    partner_warp: BoxWarp | None = None, partner_box: Tensor | None = None,
                    own_cells: Tensor | None = None) -> MixResult:
        """Build the two-source result ``own = arange(B)``, ``partner = index`` with label weights.

        ``partner_box`` ``(B, 4)``: the partner fills exactly this box (its warp's ``dst``) and the own image the
        rest, so replay sums both over the box alone. ``own_cells`` ``(B, n, m)``: ``own_share`` is constant on these
        grid cells with these values (:class:`MixSource` ``cells``), the partner's is the complement.
        """
        b = images.shape[0]
        device = images.device
        lam = lam.to(device=device, dtype=torch.float32)
        partner_weight = (1.0 - lam) if partner_weight is None else partner_weight.to(device=device, dtype=torch.float32)
        own = MixSource(torch.arange(b, device=device), own_share, lam, box=partner_box, box_complement=True,
                        cells=own_cells)
        partner_share = ~own_share if own_share.dtype == torch.bool else 1.0 - own_share
        partner = MixSource(index.to(device), partner_share, partner_weight, partner_warp, box=partner_box,
                            cells=None if own_cells is None else ~own_cells if own_cells.dtype == torch.bool
                            else 1 - own_cells)
        soft = self.soft(targets, device)
        mixed_targets = lam.view(-1, 1) * soft + partner_weight.view(-1, 1) * soft[partner.index]
        return MixResult(images=mixed, targets=mixed_targets, sources=(own, partner), params=dict(params), mixer=self.name)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({opts})"

    def config(self) -> dict[str, Any]:
        """The mixer's options (what ``__init__`` was given), for provenance tables."""
        hidden = {"generator", "needs", "content_independent", "model_kind", "relabels_after_forward"}
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in hidden}


def check_index(images: Tensor, context: Mapping[str, Any]) -> None:
    """Validate a caller-fixed partner ``index=`` in ``context``: an integer tensor ``(B,)`` with values in ``[0, B)``."""
    index, b = context.get("index"), images.shape[0]
    if index is None:
        return
    if not isinstance(index, Tensor) or index.shape != (b,) or index.is_floating_point():
        raise MixerInputError(f"index= must be an integer tensor of shape ({b},), got "
                              f"{tuple(index.shape) if isinstance(index, Tensor) else type(index).__name__}")
    if b and (int(index.min()) < 0 or int(index.max()) >= b):
        raise MixerInputError(f"index= values must lie in [0, {b - 1}]")


def blend(images: Tensor, index: Tensor, own_share: Tensor) -> Tensor:
    """Pixels of a two-source mix: ``own_share * images + (1 - own_share) * images[index]``.

    ``own_share`` is a boolean mask (True = own pixel) or a float share broadcastable to the batch. The
    partner batch is gathered once and the own pixels are written into it in place, so a mix costs one
    gather and one blend pass (close to the bandwidth floor of reading two batches and writing one).
    """
    mixed = images[index]
    if own_share.dtype == torch.bool:
        return torch.where(own_share, images, mixed, out=mixed)
    return mixed.lerp_(images, own_share.to(images.dtype))


def check_range(name: str, value: float, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` when ``value`` is outside ``[lo, hi]`` (ends optionally open)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"{name} must be in {left}{lo}, {hi}{right}, got {value!r}")


PAIRINGS = ("randperm", "flip", "roll")


def check_pairing(pairing: str) -> None:
    """Raise ``ValueError`` unless ``pairing`` is one of :data:`PAIRINGS`."""
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be 'randperm', 'flip' or 'roll', got {pairing!r}")


def draw_partners(b: int, generator: torch.Generator, pairing: str = "randperm") -> Tensor:
    """Partner index of each sample: ``randperm`` (official CutMix/SaliencyMix), ``flip`` (timm) or ``roll`` (torchvision).

    A batch of 1 is paired with itself (the mix is then the identity on pixels).
    """
    check_pairing(pairing)
    if pairing == "randperm":
        return torch.randperm(b, generator=generator)
    if pairing == "flip":
        return torch.arange(b - 1, -1, -1)
    return torch.roll(torch.arange(b), 1)


def sample_beta(alpha: float, n: int, generator: torch.Generator) -> Tensor:
    """``n`` draws of Beta(alpha, alpha) from ``generator`` (ratio of two Gammas, so it is reproducible)."""
    a = torch.full((n,), float(alpha), dtype=torch.float64)
    x = torch._standard_gamma(a, generator=generator)
    y = torch._standard_gamma(a, generator=generator)
    return (x / (x + y)).float()
