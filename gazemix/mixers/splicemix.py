"""SpliceMix (Wang, Xu, Ding, Zhang, Shen, "SpliceMix: A Cross-scale and Semantic Blending Augmentation
Strategy for Multi-label Image Classification", arXiv 2311.15200, 2023).

Official code: zuiran/SpliceMix ``SpliceMix.py`` (default mode). Per batch a grid is chosen (1x2 with
probability 0.3, 2x2 with 0.4, 2x3 with 0.3; asymmetric grids transposed with probability 1/2); ``B // 4``
mixed images are made, each tiling ``g`` down-sampled batch images (bilinear, ``align_corners=True``);
with probability 0.3 some cells are dropped (blank, 1 for 1x2, 1-3 for 2x2, 1-5 for 2x3). The label of a
mixed image is the multi-hot union of its non-dropped sources, and the mixed images are **appended** to
the original batch (output ``B + B // 4``). Sources are drawn from concatenated random permutations.

Deviation: for sizes not divisible by the grid the official code resizes the tiled image once more to
``H x W``; here cells have edges at ``floor(k * H / rows)`` so each tile is resized once, straight into
its cell (no second resampling, same layout).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from gazemix.contract import BoxWarp, Mixer, MixResult, MixSource, check_range
from gazemix.registry import register_mixer

GRIDS = ((1, 2), (2, 2), (2, 3))


@register_mixer
class SpliceMix(Mixer):
    """Tile ``g`` down-sampled images into one and append ``B // 4`` such images; multi-hot labels.

    Args:
        grid_probs: probabilities of the 1x2, 2x2 and 2x3 grids (official: 0.3, 0.4, 0.3).
        drop_prob: probability that a mixed batch drops cells (official: 0.3).
        mix_ratio: mixed images appended per input image (official: 0.25, i.e. ``B // 4``).
    """

    name = "splicemix"
    summary = "tile g down-sampled images into one, appended to the batch; multi-hot label (multi-label)"
    reference = "Wang et al., SpliceMix: A Cross-scale and Semantic Blending Augmentation Strategy for Multi-label Image Classification, arXiv 2311.15200"

    def __init__(self, *, grid_probs: tuple[float, float, float] = (0.3, 0.4, 0.3), drop_prob: float = 0.3,
                 mix_ratio: float = 0.25, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if len(grid_probs) != 3 or any(p < 0 for p in grid_probs) or abs(sum(grid_probs) - 1) > 1e-6:
            raise ValueError(f"grid_probs must be three non-negative probabilities summing to 1, got {grid_probs!r}")
        check_range("drop_prob", drop_prob, 0.0, 1.0)
        check_range("mix_ratio", mix_ratio, 0.0, 1.0, lo_open=True)
        self.grid_probs, self.drop_prob, self.mix_ratio = tuple(float(p) for p in grid_probs), float(drop_prob), float(mix_ratio)

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b = images.shape[0]
        n_mix = int(b * self.mix_ratio)
        grid_id = int(torch.multinomial(torch.tensor(self.grid_probs), 1, generator=generator))
        rows, cols = GRIDS[grid_id]
        if rows != cols and torch.rand(1, generator=generator).item() < 0.5:
            rows, cols = cols, rows
        g = rows * cols
        perms = torch.cat([torch.randperm(b, generator=generator) for _ in range(max(1, -(-n_mix * g // b)))])
        tiles = perms[: n_mix * g].view(n_mix, g)
        dropped = torch.zeros(n_mix, g, dtype=torch.bool)
        if n_mix and torch.rand(1, generator=generator).item() < self.drop_prob:
            n_drop = 1 if g == 2 else int(torch.randint(1, g, (1,), generator=generator))
            order = torch.rand(n_mix, g, generator=generator).argsort(dim=1)
            dropped = order < n_drop
        return {"grid": (rows, cols), "tiles": tiles, "dropped": dropped}

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        b, _, h, w = images.shape
        dev = images.device
        rows, cols = params["grid"]
        tiles, dropped = params["tiles"].to(dev), params["dropped"].to(dev)
        n_mix, g = tiles.shape
        ys = [k * h // rows for k in range(rows + 1)]
        xs = [k * w // cols for k in range(cols + 1)]
        keep = (~dropped).to(images.dtype)
        soft = self.soft(targets, dev)
        # Outputs 0..B-1 are the original batch (one source, weight 1); outputs B.. are the mosaics, written
        # straight into one output batch.
        out = images.new_empty((b + n_mix, *images.shape[1:]))
        out[:b] = images
        cells = [(ys[r], ys[r + 1], xs[c], xs[c + 1]) for r in range(rows) for c in range(cols)]
        if n_mix:
            self._paste_tiles(images, tiles, keep, cells, out[b:])
        identity = torch.arange(b, device=dev)
        whole = torch.tensor([0, 0, h, w], device=dev)
        sources = []
        for cell, (y0, y1, x0, x1) in enumerate(cells):
            # the originals are all own image in cell 0's source and absent from the others; a mosaic shows
            # source ``cell`` (the whole image, down-sampled) in that cell unless it was dropped
            shown = torch.cat([torch.full((b,), cell == 0, device=dev), ~dropped[:, cell]])
            share = torch.zeros((b + n_mix, 1, h, w), dtype=torch.bool, device=dev)
            share[:b] = cell == 0
            share[b:, :, y0:y1, x0:x1] = ~dropped[:, cell].view(-1, 1, 1, 1)
            box = torch.tensor([y0, x0, y1, x1], device=dev)
            weight = torch.cat([torch.full((b,), float(cell == 0), device=dev), keep[:, cell]])
            index = torch.cat([identity, tiles[:, cell]])
            # the share is the warp's dst box throughout, so replay sums boxes alone (a shown tile keeps its
            # image's whole mass)
            warp = BoxWarp(src=whole.repeat(b + n_mix, 1), dst=torch.cat([whole.expand(b, 4), box.expand(n_mix, 4)]),
                           mode="bilinear", align_corners=True).only(shown)
            sources.append(MixSource(index, share, weight, warp, box=warp.dst))
        mixed_targets = sum(s.weight.view(-1, 1) * soft[s.index] for s in sources).clamp(max=1.0)
        return MixResult(images=out, targets=mixed_targets, sources=tuple(sources), params=dict(params),
                         mixer=self.name)

    @staticmethod
    def _paste_tiles(images: Tensor, tiles: Tensor, keep: Tensor, cells: list[tuple[int, int, int, int]],
                     mosaics: Tensor) -> None:
        """Write tile ``tiles[m, k]``, resized to cell ``k`` and times ``keep[m, k]``, into every mosaic ``m``.

        Resizing is bilinear with ``align_corners=True`` (the sampling of the replay warp), straight from the
        full image to the cell size. Cells of one size are served by one resize of the whole batch when they
        need at least as many tiles as there are images, else each cell resizes just its own tiles.
        """
        n_mix, b = tiles.shape[0], images.shape[0]
        by_size: dict[tuple[int, int], list[int]] = {}
        for k, (y0, y1, x0, x1) in enumerate(cells):
            by_size.setdefault((y1 - y0, x1 - x0), []).append(k)
        for size, same in by_size.items():
            whole_batch = resize_bilinear(images, size) if n_mix * len(same) >= b else None
            for k in same:
                y0, y1, x0, x1 = cells[k]
                if whole_batch is not None:
                    tile = whole_batch[tiles[:, k]]
                else:
                    tile = resize_bilinear(images[tiles[:, k]], size)
                torch.mul(tile, keep[:, k].view(-1, 1, 1, 1), out=mosaics[:, :, y0:y1, x0:x1])


def resize_bilinear(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize with ``align_corners=True`` (as the official code), ``(N, C, H, W) -> (N, C, *size)``.

    Channels are resized as single-channel images: with one channel the CPU kernel needs no conversion to
    channels-last and back (2-3x faster than on ``(N, 3, H, W)``; the same interpolation up to float rounding).
    """
    n, c, h, w = images.shape
    planes = images.reshape(n * c, 1, h, w)
    return F.interpolate(planes, size=size, mode="bilinear", align_corners=True).view(n, c, *size)
