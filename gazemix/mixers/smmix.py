"""SMMix (Chen, Lin, Zheng, Luo, Ji, Ji, "SMMix: Self-Motivated Image Mixing for Vision Transformers", ICCV 2023),
and the max-min token-square machinery it shares with TdAttenMix.

Official code: ChenMnZ/SMMix ``smmix.py``/``engine.py``. Per batch, with probability ``switch_prob`` (0.5) an
s x s square of tokens, ``s`` uniform in ``{int(G/4) .. int(3G/4)}`` (one per batch), is cut from the partner
where the partner's attention is largest and pasted over the own image where the own attention is smallest
(window sums of stride 1, ties to the first window in raster order); otherwise Mixup (alpha 0.8). Partner
``flip(0)``. Label: the own area ``(N - s^2) / N``.

The attention is the model's own **patch-to-patch** attention of the last block, averaged over heads and
query patches, from an **extra eval-mode, no-grad forward on the unmixed batch** (official code; pass it as
``attention=``, or pass ``model=`` and the mixer runs that forward: :func:`gazemix.attention.vit.patch_attention`).
That forward's logits are the teacher of the consistency loss: ``KL(softmax(lam p_i + (1 - lam) p_j) || softmax(z))``
with ``z`` the logits on the mixed batch (:func:`consistency_loss`). The fine-grained loss asks a token head to
classify the mean final token of each region (:func:`region_token_means`, :func:`fine_grained_loss`).
These follow the official code (docs/methods/smmix.md).

gazemix conventions: ``lam`` is the own label weight (SMMix's code calls it the target area); the pasted square is
a translation, stored as a :class:`~gazemix.contract.BoxWarp` from the partner's square to the own square, so
replay moves the partner's gaze mass with it. Grids other than 14 x 14 and image sizes that the grid does not
divide work: token edges are ``floor(r H / h)``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gazemix.attention.vit import as_patch_grid, num_prefix_tokens, patch_attention, token_edges
from gazemix.contract import (BoxWarp, ForwardOutputs, ForwardRequest, Mixer, MixerInputError, MixResult,
                              TrainingHooks, check_pairing, check_range, sample_beta, soft_target_ce)
from gazemix.models import is_vit
from gazemix.mixers.boxes import boxes_to_mask
from gazemix.registry import register_mixer

__all__ = ["MaxMinSquareMixer", "SMMix", "SquareMixHooks", "consistency_loss", "fine_grained_loss",
           "region_token_means", "square_side_range", "window_extrema"]


def square_side_range(grid: tuple[int, int], min_ratio: float, max_ratio: float) -> tuple[int, int]:
    """``(s_min, s_max)`` of the square side: ``int(G * ratio)`` with ``G`` the shorter grid side, at least 1."""
    g = min(grid)
    lo = max(1, int(g * min_ratio))
    return lo, max(lo, min(g, int(g * max_ratio)))


def window_extrema(maps: Tensor, side: int, *, float32_sums: bool = False) -> tuple[Tensor, Tensor]:
    """Top-left token ``(row, col)`` of the least and of the most attended ``side x side`` window of each map.

    ``maps`` ``(B, h, w)``; window sums with stride 1, in float64 so equal sums tie exactly; ties go to the first
    window in raster order (as ``argmin``/``argmax`` in the official code). ``float32_sums``: the official code's
    float32 ``unfold(...).sum(dim=1)`` instead, so rounded sums tie where they tie there. Returns two ``(B, 2)``
    long tensors.
    """
    wcols = maps.shape[-1] - side + 1
    if float32_sums:
        flat = F.unfold(maps.float().unsqueeze(1), side, stride=1).sum(dim=1)
    else:
        flat = F.avg_pool2d(maps.double().unsqueeze(1), side, stride=1, divisor_override=1).flatten(1)
    lo, hi = flat.argmin(dim=1), flat.argmax(dim=1)
    return torch.stack([lo // wcols, lo % wcols], 1), torch.stack([hi // wcols, hi % wcols], 1)


def _square_tokens(pos: Tensor, side: int, grid: tuple[int, int]) -> Tensor:
    """Boolean ``(B, h, w)``, True on the ``side x side`` token square with top-left ``pos``."""
    r = torch.arange(grid[0], device=pos.device).view(1, -1, 1)
    c = torch.arange(grid[1], device=pos.device).view(1, 1, -1)
    pr, pc = pos[:, 0].view(-1, 1, 1), pos[:, 1].view(-1, 1, 1)
    return (r >= pr) & (r < pr + side) & (c >= pc) & (c < pc + side)


def _square_pixels(pos: Tensor, side: int, grid: tuple[int, int], hw: tuple[int, int]) -> Tensor:
    """Pixel boxes ``(B, 4)`` ``(y1, x1, y2, x2)`` of token squares."""
    ey, ex = token_edges(grid[0], hw[0], pos.device), token_edges(grid[1], hw[1], pos.device)
    r, c = pos[:, 0], pos[:, 1]
    return torch.stack([ey[r], ex[c], ey[r + side], ex[c + side]], dim=1)


class MaxMinSquareMixer(Mixer):
    """Shared engine of SMMix, TdAttenMix and GazeMix: per batch a max-min token-square paste or Mixup.

    Subclasses implement :meth:`selection_maps` (the ``(B, h, w)`` map that picks the squares),
    :meth:`~gazemix.contract.Mixer.check_context`, and may override :meth:`square_lam` (the label of a square
    batch). Training adds the consistency and fine-grained losses on square batches (:class:`SquareMixHooks`).

    Args:
        switch_prob: probability that a batch uses the square paste (official 0.5); otherwise Mixup.
        mixup_alpha: Beta(alpha, alpha) of the Mixup branch (official 0.8).
        min_side_ratio, max_side_ratio: square side range as fractions of the grid side (official 0.25, 0.75).
        pairing: ``"flip"`` (official), ``"randperm"`` or ``"roll"``.
    """

    content_independent = False

    def __init__(self, *, switch_prob: float = 0.5, mixup_alpha: float = 0.8, min_side_ratio: float = 0.25,
                 max_side_ratio: float = 0.75, pairing: str = "flip", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("switch_prob", switch_prob, 0.0, 1.0)
        check_range("mixup_alpha", mixup_alpha, 0.0, float("inf"), lo_open=True, hi_open=True)
        check_range("min_side_ratio", min_side_ratio, 0.0, 1.0, lo_open=True)
        check_range("max_side_ratio", max_side_ratio, min_side_ratio, 1.0)
        check_pairing(pairing)
        self.switch_prob, self.mixup_alpha = float(switch_prob), float(mixup_alpha)
        self.min_side_ratio, self.max_side_ratio, self.pairing = float(min_side_ratio), float(max_side_ratio), pairing
        self._float32_windows = False  # TdAttenMix's ratio_mode="official" sums windows as its released code

    # -- subclass hooks --
    def selection_maps(self, images: Tensor, targets: Tensor,
                       context: Mapping[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """``(maps (B, h, w), extra params)`` for a square batch."""
        raise NotImplementedError

    def square_lam(self, maps: Tensor, index: Tensor, own_sq: Tensor, src_sq: Tensor,
                   lam_area: Tensor) -> dict[str, Tensor]:
        """Label weights of a square batch; SMMix: the own area."""
        return {"lam": lam_area}

    def training_hooks(self, *, auxiliary_losses: bool = True) -> TrainingHooks:
        return SquareMixHooks() if auxiliary_losses else TrainingHooks()

    # -- the call --
    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b, hw, dev = images.shape[0], tuple(images.shape[-2:]), images.device
        use_square = bool(torch.rand(1, generator=generator) < self.switch_prob)
        lam_mixup = sample_beta(self.mixup_alpha, 1, generator).expand(b)
        u_side = float(torch.rand(1, generator=generator))
        index = self.partners(b, generator, self.pairing, context).to(dev)
        params: dict[str, Any] = {"use_square": use_square, "index": index, "lam_mixup": lam_mixup}
        if not use_square:
            return params
        maps, extra = self.selection_maps(images, targets, context)
        maps = maps.to(dev)
        grid = tuple(maps.shape[-2:])
        if grid[0] > hw[0] or grid[1] > hw[1]:
            raise MixerInputError(f"the attention grid {grid} is finer than the images {hw}")
        lo, hi = square_side_range(grid, self.min_side_ratio, self.max_side_ratio)
        side = lo + min(int(u_side * (hi - lo + 1)), hi - lo)
        own_pos, max_pos = window_extrema(maps, side, float32_sums=self._float32_windows)
        src_pos = max_pos[index]
        own_sq, src_sq = _square_tokens(own_pos, side, grid), _square_tokens(src_pos, side, grid)
        dst_box, src_box = _square_pixels(own_pos, side, grid, hw), _square_pixels(src_pos, side, grid, hw)
        lam_area = 1.0 - ((dst_box[:, 2] - dst_box[:, 0]) * (dst_box[:, 3] - dst_box[:, 1])).double() / (hw[0] * hw[1])
        params.update(extra)
        params.update({"side": side, "grid": grid, "own_pos": own_pos, "src_pos": src_pos, "dst_boxes": dst_box,
                       "src_boxes": src_box, "own_tokens": ~own_sq, "lam_area": lam_area.float()})
        params.update(self.square_lam(maps, index, own_sq, src_sq, lam_area.float()))
        return params

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        index = params["index"].to(images.device)
        soft = self.soft(targets, images.device)
        extra = {"soft": soft}
        if not params["use_square"]:
            lam = params["lam_mixup"].to(images.device)
            share = lam.view(-1, 1, 1, 1).to(images.dtype)
            mixed = torch.lerp(images[index], images, share)
            return self.pair_result(images, mixed, targets, index, share, lam, {**params, **extra})
        warp = BoxWarp(src=params["src_boxes"].to(images.device), dst=params["dst_boxes"].to(images.device),
                       mode="nearest")
        inside = boxes_to_mask(warp.dst, tuple(images.shape[-2:]))
        mixed = torch.where(inside, warp.apply(images[index]), images)
        return self.pair_result(images, mixed, targets, index, (~inside).to(images.dtype), params["lam"],
                                {**params, **extra}, partner_warp=warp, partner_box=warp.dst)


@register_mixer
class SMMix(MaxMinSquareMixer):
    """Max-min attention token-square mixing with the model's own attention; label = own area.

    Call with ``model=`` (a timm ViT: the mixer runs the eval-mode no-grad forward; used when given), or with
    ``attention=`` (patch-to-patch attention of the unmixed batch, ``(B, N)`` or ``(B, h, w)``;
    :func:`gazemix.attention.vit.patch_attention`) and optionally ``logits=`` (that forward's logits, kept for
    :func:`consistency_loss`). Note that ``attention=`` here is patch-to-patch, not the class-token row.

    Args: see :class:`MaxMinSquareMixer` (defaults are the official ones).
    """

    name = "smmix"
    summary = "paste the partner's max-attention token square over the own min-attention square; area label"
    reference = "Chen et al., SMMix: Self-Motivated Image Mixing for Vision Transformers, ICCV 2023"
    needs = ("attention",)
    model_kind = "vit"

    def context_help(self) -> str:
        return ("pass attention= (patch-to-patch attention of the unmixed batch, (B, N) or (B, h, w), from "
                "gazemix.attention.patch_attention(model, images)) or model= (a timm ViT)")

    def check_context(self, images: Tensor, targets: Tensor, context: Mapping[str, Any]) -> None:
        if context.get("attention") is None and not isinstance(context.get("model"), nn.Module):
            raise MixerInputError(f"{self.name} needs attention= or model= in the call: {self.context_help()}")

    def selection_maps(self, images: Tensor, targets: Tensor,
                       context: Mapping[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        extra: dict[str, Any] = {}
        if isinstance(context.get("model"), nn.Module):  # the official extra forward; wins over attention=
            logits, maps = patch_attention(context["model"], images)
            extra["clean_logits"] = logits.detach()
        else:
            maps = as_patch_grid(context["attention"], tuple(images.shape[-2:]))
            if context.get("logits") is not None:
                extra["clean_logits"] = context["logits"].detach()
        if maps.shape[0] != images.shape[0]:
            raise MixerInputError(f"attention= has {maps.shape[0]} maps for {images.shape[0]} images")
        return maps, extra


# ------------------------------------------------------------------------------------ training: the losses
class SquareMixHooks(TrainingHooks):
    """The training extras of SMMix, TdAttenMix and GazeMix (official ``engine.py``, all weights 1).

    On token-square batches (``params["use_square"]``; the Mixup batches of the switch get the soft CE only): the
    consistency term :func:`consistency_loss` against the model's eval-mode, no-grad logits on the clean batch
    (the mixer's own forward when it ran one, ``params["clean_logits"]``), and, for ViTs, the fine-grained term
    :func:`fine_grained_loss` of a linear token head (:meth:`token_head`) on the mean final patch token of each
    region (:func:`region_token_means`).
    """

    def token_head(self, model: nn.Module, num_classes: int) -> nn.Module | None:
        return nn.Linear(model.num_features, num_classes) if is_vit(model) else None

    def request(self, result: MixResult) -> ForwardRequest:
        if not result.params.get("use_square", False):
            return ForwardRequest()
        return ForwardRequest(teacher_logits=True, kept_teacher=result.params.get("clean_logits"), features=True)

    def losses(self, out: ForwardOutputs) -> dict[str, Tensor]:
        if not out.result.params.get("use_square", False):
            return {}
        losses = {"consistency": consistency_loss(out.logits, out.result, out.teacher_logits)}
        if out.features is not None and out.token_head is not None:
            own, pasted = region_token_means(out.features.float(), out.result, num_prefix_tokens(out.model))
            losses["fine_grained"] = fine_grained_loss(out.token_head(own), out.token_head(pasted), out.result)
        return losses


def consistency_loss(mixed_logits: Tensor, result: MixResult, clean_logits: Tensor | None = None) -> Tensor:
    """SMMix/TdAttenMix consistency: ``KL(softmax(q) || softmax(z))``, ``q_i = lam_i p_i + (1 - lam_i) p_j``.

    ``p`` are the logits of the unmixed batch from the model in eval mode without grad (``clean_logits``, or the
    ones the mixer kept in ``result.params["clean_logits"]``), mixed in logit space as the official code does;
    ``z`` are the logits on the mixed batch. Batch-mean KL; 0 on Mixup batches (no consistency term there).
    """
    if not result.params.get("use_square", False):
        return mixed_logits.new_zeros(())
    p = clean_logits if clean_logits is not None else result.params.get("clean_logits")
    if p is None:
        raise MixerInputError("consistency_loss needs the clean-batch logits: pass clean_logits= or call the mixer "
                              "with logits= (or model=)")
    p = p.detach().to(mixed_logits.device, torch.float32)
    lam = result.lam.to(mixed_logits.device).view(-1, 1)
    q = lam * p + (1.0 - lam) * p[result.index]
    return F.kl_div(F.log_softmax(mixed_logits.float(), dim=-1), F.softmax(q, dim=-1), reduction="batchmean")


def region_token_means(tokens: Tensor, result: MixResult, num_prefix_tokens: int = 1) -> tuple[Tensor, Tensor]:
    """Mean final patch token of the own region and of the pasted square: two ``(B, D)`` tensors.

    ``tokens`` ``(B, P + N, D)`` are the final tokens of the forward on the mixed batch. Feed both to a token
    head (a second linear classifier) and the logits to :func:`fine_grained_loss`.
    """
    if not result.params.get("use_square", False):
        raise MixerInputError("region_token_means applies to square batches only (result.params['use_square'])")
    own = result.params["own_tokens"].flatten(1).to(tokens.device, tokens.dtype)  # (B, N)
    patches = tokens[:, num_prefix_tokens:]
    if patches.shape[1] != own.shape[1]:
        raise MixerInputError(f"tokens have {patches.shape[1]} patch tokens after {num_prefix_tokens} prefix tokens, "
                              f"but the mix used a {result.params['grid']} grid")
    return _masked_mean(patches, own), _masked_mean(patches, 1.0 - own)


def fine_grained_loss(own_logits: Tensor, pasted_logits: Tensor, result: MixResult) -> Tensor:
    """``(SoftCE(own_logits, y_i) + SoftCE(pasted_logits, y_j)) / 2`` with the (smoothed) one-hots of the mix."""
    soft = result.params["soft"].to(own_logits.device)
    return 0.5 * (soft_target_ce(own_logits, soft) + soft_target_ce(pasted_logits, soft[result.index]))


def _masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    return (mask.unsqueeze(-1) * tokens).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)


