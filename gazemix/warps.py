"""Geometric warps beside :class:`gazemix.contract.BoxWarp`: block transport (PuzzleMix).

A warp moves a source image's content before its share mask is applied; it implements the same three
methods as ``BoxWarp`` (``apply`` for pixels, ``apply_density`` for per-pixel maps, ``index_select``) and keeps
its tensors in the fields ``src`` and ``dst`` so :meth:`gazemix.contract.MixResult.to` can move it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["BlockTransportWarp"]


@dataclass(frozen=True)
class BlockTransportWarp:
    """Rearrange an ``n x n`` grid of equal blocks: destination block ``k`` shows source block ``src[b, k]``.

    The grid covers the region ``dst[b] = (0, 0, n * bh, n * bw)`` (blocks of ``bh x bw`` pixels, the
    largest that fit); pixels outside it (the remainder strip of sizes not divisible by ``n``) are left in
    place. ``src == -1`` marks a destination block that receives nothing (it becomes 0), as in PuzzleMix's
    transport when no block wins a position. Blocks are moved whole, so ``apply_density`` is exactly
    ``apply``: the mass of every moved block is kept, the mass of blocks that are not shown is dropped.

    Args:
        src: ``(B, n * n)`` long, row-major source block of each destination block, or -1.
        dst: ``(B, 4)`` long, the gridded region ``(0, 0, n * bh, n * bw)``.
    """

    src: Tensor
    dst: Tensor

    @property
    def grid(self) -> int:
        return int(round(self.src.shape[1] ** 0.5))

    @property
    def plan(self) -> Tensor:
        """The transport plan ``(B, n*n, n*n)``: ``plan[b, i, k] = 1`` when source block ``i`` goes to ``k``."""
        b, nn = self.src.shape
        plan = torch.zeros(b, nn + 1, nn, device=self.src.device)
        plan.scatter_(1, torch.where(self.src < 0, nn, self.src).unsqueeze(1), 1.0)
        return plan[:, :nn]

    def apply(self, x: Tensor) -> Tensor:
        """Move the blocks of ``x`` ``(B, C, H, W)``."""
        b, c, h, w = x.shape
        n = self.grid
        rh, rw = int(self.dst[0, 2]), int(self.dst[0, 3])
        bh, bw = rh // n, rw // n
        region = x[:, :, :rh, :rw].reshape(b, c, n, bh, n, bw).permute(0, 1, 2, 4, 3, 5).reshape(b, c, n * n, bh, bw)
        src = self.src.to(x.device)
        idx = src.clamp_min(0).view(b, 1, n * n, 1, 1).expand(b, c, n * n, bh, bw)
        moved = region.gather(2, idx) * (src >= 0).view(b, 1, n * n, 1, 1).to(x.dtype)
        moved = moved.reshape(b, c, n, n, bh, bw).permute(0, 1, 2, 4, 3, 5).reshape(b, c, rh, rw)
        if (rh, rw) == (h, w):
            return moved
        out = x.clone()
        out[:, :, :rh, :rw] = moved
        return out

    def apply_density(self, g: Tensor) -> Tensor:
        """Move the blocks of maps ``(B, C, H, W)``: whole blocks, so mass is kept exactly."""
        return self.apply(g)

    def move_cells(self, cell_mass: Tensor) -> Tensor:
        """The mass each destination block receives, from the mass ``(B, C, n, n)`` of each source block."""
        b, c, n, _ = cell_mass.shape
        src = self.src.to(cell_mass.device)
        moved = cell_mass.reshape(b, c, n * n).gather(2, src.clamp_min(0).view(b, 1, n * n).expand(b, c, n * n))
        return (moved * (src >= 0).view(b, 1, n * n).to(moved.dtype)).view(b, c, n, n)

    def index_select(self, rows: Tensor) -> "BlockTransportWarp":
        return dataclasses.replace(self, src=self.src[rows], dst=self.dst[rows])


def identity_transport(b: int, n: int, hw: tuple[int, int], device: torch.device | None = None) -> BlockTransportWarp:
    """The transport that leaves every block in place."""
    h, w = hw
    src = torch.arange(n * n, device=device).expand(b, -1).clone()
    dst = torch.tensor([0, 0, (h // n) * n, (w // n) * n], device=device).expand(b, 4).clone()
    return BlockTransportWarp(src=src, dst=dst)
