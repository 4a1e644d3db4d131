"""GridMix (Baek, Bang, Shim, "GridMix: Strong regularization through local context mapping",
Pattern Recognition 110, 2021).

The image is divided into an ``n x n`` grid and every cell is taken from the own image or from the
partner; the global label is the share of cells of each image, and each cell's own label ("local context
mapping") is exposed in ``params["cell_from_own"]`` for a patch-level head that the trainer may add.
No official code was released. The own share is ``lam ~ Beta(alpha, alpha)`` and exactly ``round(lam * n^2)``
own cells are picked uniformly at random (so the label equals the pixel share exactly); ``n = 4`` by default.
Both are gazemix's choices (docs/methods/gridmix.md).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from gazemix.contract import Mixer, MixResult, blend, check_pairing, check_range, grid_cell_ids, sample_beta
from gazemix.registry import register_mixer


def cells_to_mask(cells: Tensor, hw: tuple[int, int]) -> Tensor:
    """Upsample ``(B, n, n)`` cell choices to a ``(B, 1, H, W)`` mask; pixel ``(y, x)`` in cell ``(y n // H, x n // W)``."""
    h, w = hw
    n = cells.shape[-1]
    rows = grid_cell_ids(h, n, cells.device)
    cols = grid_cell_ids(w, n, cells.device)
    return cells.index_select(1, rows).index_select(2, cols).unsqueeze(1)


@register_mixer
class GridMix(Mixer):
    """Every cell of an ``n x n`` grid from the own image or the partner; label = own pixel share.

    Args:
        grid: cells per side (default 4; our choice).
        alpha: Beta(alpha, alpha) of the own share (default 1.0, i.e. uniform).
        pairing: ``"randperm"``, ``"flip"`` or ``"roll"``.
    """

    name = "gridmix"
    summary = "n x n grid, each cell from own or partner, label = own cell share (+ per-cell labels)"
    reference = "Baek, Bang, Shim, GridMix: Strong regularization through local context mapping, Pattern Recognition 2021"

    def __init__(self, *, grid: int = 4, alpha: float = 1.0, pairing: str = "randperm", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(grid, int) or grid < 2:
            raise ValueError(f"grid must be an integer >= 2, got {grid!r}")
        check_range("alpha", alpha, 0.0, float("inf"), lo_open=True, hi_open=True)
        check_pairing(pairing)
        self.grid, self.alpha, self.pairing = grid, float(alpha), pairing

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b, n = images.shape[0], self.grid
        h, w = images.shape[-2:]
        if h < n or w < n:
            raise ValueError(f"gridmix with grid={n} needs images of at least {n}x{n} pixels, got {h}x{w}")
        lam = sample_beta(self.alpha, b, generator)
        count = torch.round(lam * n * n).long()
        rank = torch.rand(b, n * n, generator=generator).argsort(dim=1).argsort(dim=1)
        cells = (rank < count.view(-1, 1)).view(b, n, n)
        return {"cell_from_own": cells, "index": self.partners(b, generator, self.pairing, context)}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        index = params["index"].to(images.device)
        cells = params["cell_from_own"].to(images.device)
        mask = cells_to_mask(cells, tuple(images.shape[-2:]))
        mixed = blend(images, index, mask)
        lam = mask.float().mean(dim=(1, 2, 3))
        return self.pair_result(images, mixed, targets, index, mask, lam, params, own_cells=cells)
