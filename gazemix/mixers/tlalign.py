"""TL-Align (Xiao, Liu, Wang, Ding, Xie, Huang, Tian, Tu, "Token-Label Alignment for Vision Transformers", ICCV 2023).

**Data side** (:class:`TLAlign`, official defaults: CutMix alpha 1.0, Mixup off, partner ``flip(0)``): CutMix with
the box snapped to the patch grid — the CutMix box is drawn on the ``H // patch_size x W // patch_size`` token
grid, so every token is wholly own or wholly partner, and ``lam`` is the own token share.

**Model side** (:class:`TokenLabelAligner`): each token carries a label; the class token(s) start with the
area-mixed label, each patch token with the (smoothed) one-hot of the image it shows. Through every block ``b``
the labels follow the attention (head mean ``A_b``, detached) and the residual path, the MLP leaving them
unchanged: ``L_b = (A_b L_{b-1} + L_{b-1}) / 2``. The class token's final label is the training target.
Every label stays a combination of the own and the partner one-hot, so the aligner carries 2 coefficients per
token instead of ``K`` class scores (same result, exact). Attention comes from
:class:`gazemix.attention.vit.AttentionHook` on every block, in the same forward.

The aligner works with any two-source gazemix result (a token's initial own share is the mean of the mask over
its pixels), so a trainer can also enable it with other mixers. :class:`TLAlign`'s training hooks
(:class:`TokenAlignHooks`) run the training forward inside :meth:`TokenLabelAligner.track`, so the class token's
aligned label replaces the area label.
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Iterator, Mapping

import torch
from torch import Tensor, nn

from gazemix.attention.vit import AttentionHook, grid_mass, num_prefix_tokens, token_edges, token_grid, vit_blocks
from gazemix.contract import (MixResult, Mixer, MixerInputError, TrainingHooks, blend, check_pairing, check_range,
                              sample_beta)
from gazemix.mixers.boxes import cutmix_boxes
from gazemix.registry import register_mixer

__all__ = ["AlignedLabels", "TLAlign", "TokenAlignHooks", "TokenLabelAligner", "align_step"]


def align_step(labels: Tensor, attention: Tensor) -> Tensor:
    """One block of token-label alignment: ``(mean_heads(A) @ L + L) / 2``.

    ``labels`` ``(B, T, C)``; ``attention`` ``(B, heads, T, T)`` (rows sum to 1) or ``(B, T, T)``.
    """
    a = attention.mean(dim=1) if attention.ndim == 4 else attention
    return 0.5 * (a.to(labels.dtype) @ labels + labels)


@register_mixer
class TLAlign(Mixer):
    """Token-aligned CutMix (box on whole patches); pair it with :class:`TokenLabelAligner` for the labels.

    Args:
        patch_size: the ViT's patch size in pixels (default 16).
        alpha: Beta(alpha, alpha) of the CutMix ratio (official 1.0).
        mode: ``"batch"`` (one box per batch, as timm's default) or ``"elem"``.
        pairing: ``"flip"`` (official), ``"randperm"`` or ``"roll"``.
    """

    name = "tlalign"
    summary = "token-aligned CutMix; labels propagated through the ViT's attention (TokenLabelAligner)"
    reference = "Xiao et al., Token-Label Alignment for Vision Transformers, ICCV 2023"
    modes = ("batch", "elem")
    uses_patch_grid = True

    def __init__(self, *, patch_size: int = 16, alpha: float = 1.0, mode: str = "batch", pairing: str = "flip",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
        check_range("alpha", alpha, 0.0, float("inf"), lo_open=True, hi_open=True)
        if mode not in self.modes:
            raise ValueError(f"mode must be 'batch' or 'elem', got {mode!r}")
        check_pairing(pairing)
        self.patch_size, self.alpha, self.mode, self.pairing = patch_size, float(alpha), mode, pairing

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b, (h, w) = images.shape[0], images.shape[-2:]
        grid = (max(1, h // self.patch_size), max(1, w // self.patch_size))
        n = 1 if self.mode == "batch" else b
        token_boxes = cutmix_boxes(grid, sample_beta(self.alpha, n, generator), generator).expand(b, 4)
        return {"grid": grid, "token_boxes": token_boxes, "index": self.partners(b, generator, self.pairing, context)}

    def training_hooks(self, *, auxiliary_losses: bool = True) -> TrainingHooks:
        return TokenAlignHooks()

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        dev, (h, w) = images.device, images.shape[-2:]
        index = params["index"].to(dev)
        grid, tb = params["grid"], params["token_boxes"].to(dev)
        ey, ex = token_edges(grid[0], h, dev), token_edges(grid[1], w, dev)
        y1, x1, y2, x2 = ey[tb[:, 0]], ex[tb[:, 1]], ey[tb[:, 2]], ex[tb[:, 3]]
        ys = torch.arange(h, device=dev).view(1, 1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, 1, w)
        inside = ((ys >= y1.view(-1, 1, 1, 1)) & (ys < y2.view(-1, 1, 1, 1))
                  & (xs >= x1.view(-1, 1, 1, 1)) & (xs < x2.view(-1, 1, 1, 1)))
        mixed = blend(images, index, ~inside)
        area = (y2 - y1) * (x2 - x1)  # the pasted box, in pixels
        lam = (1.0 - area.double() / (h * w)).float()
        return self.pair_result(images, mixed, targets, index, ~inside, lam,
                                {**params, "soft": self.soft(targets, dev)}, partner_box=torch.stack([y1, x1, y2, x2], 1))


class TokenLabelAligner:
    """Model-side TL-Align: run a timm ViT on a mixed batch and return ``(logits, aligned class-token targets)``.

    ::

        aligner = TokenLabelAligner(model)
        result = mixer(images, targets)                 # any two-source gazemix mixer, e.g. "tlalign"
        logits, aligned = aligner(result)               # one forward (with grad as usual)
        loss = soft_cross_entropy(logits, aligned)

        with aligner.track(result) as labels:           # or around a trainer's own forward
            logits = model(result.images)
        aligned = labels.targets

    Args:
        model: a timm ``VisionTransformer`` (hooks on every block's attention, removed after each call).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.depth = len(vit_blocks(model))
        self.prefix = num_prefix_tokens(model)
        if self.prefix < 1:
            raise MixerInputError("TL-Align reads the class token's label: the model has no prefix (class) token")

    def initial_coefficients(self, result: MixResult, grid: tuple[int, int]) -> Tensor:
        """``(B, P + N, 2)``: each token's weight on the own and the partner one-hot before the first block."""
        mask = result.mask.float()
        own = (grid_mass(mask, grid) / grid_mass(torch.ones_like(mask[:1]), grid)).flatten(1)  # own share per token
        lam = result.lam.float().to(own.device)
        prefix = torch.stack([lam, 1.0 - lam], dim=-1).unsqueeze(1).expand(-1, self.prefix, 2)
        return torch.cat([prefix, torch.stack([own, 1.0 - own], dim=-1)], dim=1)

    @contextlib.contextmanager
    def track(self, result: MixResult, soft: Tensor | None = None) -> Iterator["AlignedLabels"]:
        """Propagate the labels of ``result`` during whatever forward of the model runs inside the block.

        ``soft``: ``(B, K)`` (smoothed) one-hot targets of the *input* batch; defaults to ``result.params["soft"]``.
        Use this to wrap a trainer's own forward (autocast, extra outputs); read ``.targets`` afterwards.
        """
        soft = soft if soft is not None else result.params.get("soft")
        if soft is None:
            raise MixerInputError("pass soft= (B, K) one-hot targets of the input batch (the mixer kept none)")
        if result.num_sources != 2:
            raise MixerInputError(f"TL-Align needs a two-source mix, {result.mixer!r} has {result.num_sources} sources")
        labels = AlignedLabels(result, soft)

        def step(_: int, attention: Tensor) -> None:
            if labels.coef is None:
                grid = token_grid(self.model, attention.shape[-1] - self.prefix, tuple(result.images.shape[-2:]))
                labels.coef = self.initial_coefficients(result, grid).to(attention.device)
            labels.coef = align_step(labels.coef, attention)

        with AttentionHook(self.model, blocks=range(self.depth), keep=False, callback=step):
            yield labels

    def __call__(self, result: MixResult, soft: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Forward ``result.images``; returns ``(logits, targets (B, K))`` with the aligned class-token label."""
        with self.track(result, soft) as labels:
            logits = self.model(result.images)
        return logits, labels.targets


class AlignedLabels:
    """The token labels of one tracked forward (:meth:`TokenLabelAligner.track`), as own/partner coefficients."""

    def __init__(self, result: MixResult, soft: Tensor) -> None:
        self.result, self.soft = result, soft
        self.coef: Tensor | None = None  # (B, P + N, 2), updated block by block

    @property
    def targets(self) -> Tensor:
        """Aligned class-token targets ``(B, K)`` (after the forward)."""
        if self.coef is None:
            raise MixerInputError("the model's forward never ran its blocks' attention inside the track() block")
        c = self.coef[:, 0]
        soft = self.soft.to(c.device, torch.float32)
        return c[:, :1] * soft[self.result.own_index] + c[:, 1:] * soft[self.result.index]


class TokenAlignHooks(TrainingHooks):
    """TL-Align's model side in training: the training forward runs inside :meth:`TokenLabelAligner.track`, and the
    class token's aligned label is the target (no extra loss, no extra forward)."""

    tracks_targets = True

    def track_targets(self, model: nn.Module, result: MixResult) -> ContextManager[AlignedLabels]:
        return TokenLabelAligner(model).track(result)
