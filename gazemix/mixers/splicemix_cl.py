"""SpliceMix-CL: SpliceMix with its consistency-learning extension (Wang, Zhan, Ma, Tao, Ding, Gong, "SpliceMix: A
Cross-scale and Semantic Blending Augmentation Strategy for Multi-label Image Classification", arXiv 2311.15200,
2023; IEEE TMM 2025).

The mix is SpliceMix's (:class:`~gazemix.mixers.splicemix.SpliceMix`: ``B // 4`` mosaics of down-sampled batch
images appended to the batch). Training adds a consistency term (:class:`SpliceConsistencyHooks`, through the
mixer's training hooks): the final feature map of each mosaic, from the same training forward as everything else,
is cut into the mosaic's grid cells; each cell is pooled and classified by the model's own head, and that cell
prediction ``z_cell`` is pulled towards the model's prediction ``z_src`` on the cell's source image (the original
images are the first ``B`` outputs of the same forward):

    L_cl = (1 / #cells) sum over kept cells of  mean_k BCE(sigmoid(z_cell,k), sigmoid(z_src,k))

added with weight ``cl_weight`` to the classification loss.

Confirmed from the official code (zuiran/SpliceMix ``models/SpliceMix_CL.py``, ``model.forward`` and ``Loss_fn``):

* the *feature map* is split (not the image): equal chunks of the last feature map in the mosaic's grid, in
  raster order, after a bilinear (``align_corners=True``) resize to a multiple of the grid when the map does not
  divide;
* each chunk goes through the model's global pooling and the same linear classifier as whole images;
* the target is the source image's prediction from the same forward, through a sigmoid; it is detached for
  MS-COCO "and others" and not detached for VOC2007 (``detach_target``, default True);
* the loss is ``MultiLabelSoftMarginLoss`` (the BCE above, mean over classes and cells), weight 1, no warm-up or
  schedule (``cl_weight=1``);
* dropped (blank) cells are set to ``-1e3`` on both sides: they add exactly 0 and no gradient but count in the
  mean over cells (reproduced here by masking them).

Our choices (the official model is a ResNet-101 trained with multi-label BCE): for ViTs the feature map is the
final patch tokens on their grid, and a cell is its tokens' mean through the model's head path
(``forward_head``: final norm of the pooled token, head dropout, classifier); a feature map smaller than the grid
is first resized to one feature per cell; ``loss="ce"`` offers a softmax variant (soft-target CE of the cell
against ``softmax(z_src)``) for models trained with softmax CE, as ``gazemix train`` trains them
(docs/methods/splicemix.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gazemix.attention.vit import num_prefix_tokens, token_grid
from gazemix.contract import ForwardOutputs, ForwardRequest, MixResult, TrainingHooks, check_range
from gazemix.mixers.splicemix import SpliceMix
from gazemix.registry import register_mixer

__all__ = ["SpliceConsistencyHooks", "SpliceMixCL", "cell_logits", "consistency_loss", "split_cells"]

CL_LOSSES = ("bce", "ce")


def split_cells(maps: Tensor, rows: int, cols: int) -> Tensor:
    """Cut feature maps ``(n, C, h, w)`` into ``rows x cols`` equal cells: ``(n * rows * cols, C, h', w')``.

    Cells are in raster order per map. A map whose sides are not multiples of the grid is first resized
    (bilinear, ``align_corners=True``) to ``(max(h // rows, 1) * rows, max(w // cols, 1) * cols)``.
    """
    n, c, h, w = maps.shape
    th, tw = max(h // rows, 1) * rows, max(w // cols, 1) * cols
    if (th, tw) != (h, w):
        maps = F.interpolate(maps, size=(th, tw), mode="bilinear", align_corners=True)
    ch, cw = th // rows, tw // cols
    return maps.reshape(n, c, rows, ch, cols, cw).permute(0, 2, 4, 1, 3, 5).reshape(n * rows * cols, c, ch, cw)


def cell_logits(model: nn.Module, features: Tensor, grid: tuple[int, int], hw: tuple[int, int]) -> Tensor:
    """The model's logits of every grid cell of each mosaic's final features: ``(n * rows * cols, K)``.

    ``features``: ``forward_features`` of the mosaics, a CNN's maps ``(n, C, h, w)`` (each cell through
    ``forward_head``: the model's pooling and classifier) or a ViT's tokens ``(n, P + N, D)`` (the patch tokens on
    their grid; each cell's mean token, in every prefix slot, through ``forward_head``, so class-token and
    average pooling both read the cell mean). ``hw``: the image size, for a token grid the model does not state.
    """
    rows, cols = grid
    if features.ndim == 4:
        return model.forward_head(split_cells(features, rows, cols))
    if features.ndim != 3:
        raise ValueError(f"features must be a CNN map (n, C, h, w) or ViT tokens (n, P + N, D), got "
                         f"{tuple(features.shape)}")
    prefix = num_prefix_tokens(model)
    tokens = features[:, prefix:]
    gh, gw = token_grid(model, tokens.shape[1], hw)
    maps = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], gh, gw)
    means = split_cells(maps, rows, cols).mean(dim=(2, 3))  # (cells, D)
    return model.forward_head(means.unsqueeze(1).expand(-1, prefix + 1, -1))


def consistency_loss(cells: Tensor, sources: Tensor, kept: Tensor, *, loss: str = "bce",
                     detach_target: bool = True) -> Tensor:
    """SpliceMix-CL's term: each cell's logits ``cells (M, K)`` against its source image's ``sources (M, K)``.

    ``kept (M,)`` is False for dropped (blank) cells: they add 0 but count in the mean, as in the official code.
    ``loss="bce"``: ``mean_k BCE(sigmoid(cell), sigmoid(source))`` (official ``MultiLabelSoftMarginLoss``);
    ``"ce"``: ``-sum_k softmax(source)_k log softmax(cell)_k``. The target is detached unless ``detach_target``
    is False.
    """
    if loss not in CL_LOSSES:
        raise ValueError(f"loss must be one of {CL_LOSSES}, got {loss!r}")
    cells, sources = cells.float(), sources.float()
    if detach_target:
        sources = sources.detach()
    if loss == "bce":
        per_cell = F.multilabel_soft_margin_loss(cells, torch.sigmoid(sources), reduction="none")
    else:
        per_cell = torch.sum(-F.softmax(sources, dim=-1) * F.log_softmax(cells, dim=-1), dim=-1)
    return (per_cell * kept.to(per_cell.dtype)).sum() / max(cells.shape[0], 1)


class SpliceConsistencyHooks(TrainingHooks):
    """SpliceMix-CL's training extra: the final features of the training forward, and the consistency term."""

    def __init__(self, mixer: "SpliceMixCL") -> None:
        self.mixer = mixer

    def request(self, result: MixResult) -> ForwardRequest:
        return ForwardRequest(features=True)

    def losses(self, out: ForwardOutputs) -> dict[str, Tensor]:
        tiles, dropped = out.result.params["tiles"], out.result.params["dropped"]
        b, n_mix = out.images.shape[0], tiles.shape[0]
        if n_mix == 0:
            return {"consistency": out.logits.new_zeros(())}
        with out.autocast():
            cells = cell_logits(out.model, out.features[b:b + n_mix], out.result.params["grid"],
                                tuple(out.images.shape[-2:]))
        tiles = tiles.to(out.logits.device).reshape(-1)
        kept = ~dropped.to(out.logits.device).reshape(-1)
        term = consistency_loss(cells, out.logits[tiles], kept, loss=self.mixer.cl_loss,
                                detach_target=self.mixer.detach_target)
        return {"consistency": self.mixer.cl_weight * term}


@register_mixer
class SpliceMixCL(SpliceMix):
    """SpliceMix with consistency learning: each mosaic cell's prediction is pulled towards its source image's.

    Args:
        cl_weight: weight of the consistency term (official 1).
        cl_loss: ``"bce"`` (official, sigmoid targets) or ``"ce"`` (softmax targets; our variant).
        detach_target: stop the gradient through the source predictions (official for MS-COCO and other data
            sets; the official VOC2007 branch does not detach).
        grid_probs, drop_prob, mix_ratio: the mix, see :class:`~gazemix.mixers.splicemix.SpliceMix`.
    """

    name = "splicemix_cl"
    summary = ("SpliceMix + consistency learning: each mosaic cell's prediction pulled towards its source image's "
               "(training)")
    reference = SpliceMix.reference + " (SpliceMix-CL)"

    def __init__(self, *, cl_weight: float = 1.0, cl_loss: str = "bce", detach_target: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("cl_weight", cl_weight, 0.0, float("inf"), hi_open=True)
        if cl_loss not in CL_LOSSES:
            raise ValueError(f"cl_loss must be one of {CL_LOSSES}, got {cl_loss!r}")
        self.cl_weight, self.cl_loss, self.detach_target = float(cl_weight), cl_loss, bool(detach_target)

    def training_hooks(self, *, auxiliary_losses: bool = True) -> TrainingHooks:
        return SpliceConsistencyHooks(self) if auxiliary_losses else TrainingHooks()
