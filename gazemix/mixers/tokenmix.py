"""TokenMix (Liu, Li, Wang, Lin, Zhao, Wang, Dai, Chen, Ouyang, "TokenMix: Rethinking Image Mixing for Data
Augmentation in Vision Transformers", ECCV 2022).

Per batch, with probability ``switch_prob`` (0.5) a token-level mix, otherwise Mixup (alpha 0.8); partner ``flip(0)``.
Token mix: ``n`` of the ``N`` patch tokens (grid ``H // patch_size x W // patch_size``) are taken from the partner,
chosen as BEiT-style random blocks (``mask_type="block"``: repeatedly a rectangle of area ``U(1, remaining)`` and
log-uniform aspect in ``[0.3, 1/0.3]`` at a random place, up to 10 attempts per rectangle, until ``n`` tokens are
masked or no rectangle fits) or uniformly (``"random"``: exactly ``n``), with ``n = min(N, int((1 - lam) N) +
extra_tokens)``.

* ``lam``: the paper samples the mixing ratio (``lam ~ Beta(cutmix_alpha, cutmix_alpha)``, default); the official
  code (Sense-X/TokenMix) fixes it: ``lam_constant=0.5, extra_tokens=14`` reproduce its 112 of 196 tokens.
* Label: a teacher's activation map of each image's ground-truth class on the token grid (official: NFNet-F6
  ReLabel maps, precomputed; here any model passed as ``model=``, or maps passed as ``label_maps=``), clamped at 0
  and normalised to sum 1 per image; ``w_own = sum`` of the own map over the own tokens,
  ``w_partner = sum`` of the partner's map over the pasted tokens. As in the paper and official code the two
  weights are **not renormalised** (they need not sum to 1). A constant teacher gives the token-area fractions.
  (The official targets also spread smoothing slightly differently; gazemix smooths each one-hot as timm does.)
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gazemix.attention.vit import num_prefix_tokens, token_edges
from gazemix.contract import Mixer, MixerInputError, MixResult, check_pairing, check_range, sample_beta
from gazemix.models import eval_no_grad
from gazemix.registry import register_mixer

__all__ = ["TokenMix", "block_token_masks", "random_token_masks", "teacher_label_maps"]


def random_token_masks(b: int, grid: tuple[int, int], n: int, generator: torch.Generator) -> Tensor:
    """``(B, h, w)`` boolean masks with exactly ``n`` random tokens set per sample."""
    ranks = torch.rand(b, grid[0] * grid[1], generator=generator).argsort(1).argsort(1)
    return (ranks < n).view(b, *grid)


def block_token_masks(b: int, grid: tuple[int, int], n: int, generator: torch.Generator, *, attempts: int = 10,
                      min_aspect: float = 0.3) -> Tensor:
    """BEiT block masking (Bao et al., ICLR 2022, ``MaskingGenerator``) of at most ``n`` tokens, all samples at once.

    Each round places one more rectangle per sample (the BEiT rule: accept if it adds between 1 and the remaining
    number of tokens; up to ``attempts`` tries); a sample stops when it reaches ``n`` or a round adds nothing.
    """
    gh, gw = grid
    rows = torch.arange(gh).view(1, gh, 1)
    cols = torch.arange(gw).view(1, 1, gw)
    mask = torch.zeros(b, gh, gw, dtype=torch.bool)
    count = torch.zeros(b, dtype=torch.long)
    active = torch.full((b,), n > 0)
    log_lo, log_hi = math.log(min_aspect), math.log(1.0 / min_aspect)
    while bool(active.any()):
        remaining = n - count
        placed = torch.zeros(b, dtype=torch.bool)
        added = torch.zeros(b, dtype=torch.long)
        for _ in range(attempts):
            area = 1.0 + torch.rand(b, generator=generator) * (remaining - 1).clamp_min(0)
            aspect = torch.exp(log_lo + torch.rand(b, generator=generator) * (log_hi - log_lo))
            h = torch.sqrt(area * aspect).round().long()
            w = torch.sqrt(area / aspect).round().long()
            top = (torch.rand(b, generator=generator) * (gh - h + 1).clamp_min(1)).long()
            left = (torch.rand(b, generator=generator) * (gw - w + 1).clamp_min(1)).long()
            rect = ((rows >= top.view(-1, 1, 1)) & (rows < (top + h).view(-1, 1, 1))
                    & (cols >= left.view(-1, 1, 1)) & (cols < (left + w).view(-1, 1, 1)))
            new = (rect & ~mask).flatten(1).sum(1)
            accept = active & ~placed & (h < gh) & (w < gw) & (new > 0) & (new <= remaining)
            mask |= rect & accept.view(-1, 1, 1)
            added = torch.where(accept, new, added)
            placed |= accept
            if bool((placed | ~active).all()):
                break
        count += added
        active &= placed & (count < n)
    return mask


def _class_maps(dense: Tensor, targets: Tensor) -> Tensor:
    """Ground-truth class map ``(B, h, w)`` from dense class scores ``(B, K, h, w)``; soft targets weight classes."""
    if targets.ndim == 1:
        return dense[torch.arange(dense.shape[0], device=dense.device), targets.long().to(dense.device)]
    return torch.einsum("bkhw,bk->bhw", dense, targets.to(dense))


def teacher_label_maps(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    """A teacher's activation map of each image's class, ``(B, h, w)`` (eval mode, no grad, mode restored).

    ViTs (``forward_features`` returns tokens ``(B, P + N, D)``): the classifier applied to every patch token
    (token labelling, as ReLabel/TokenLabeling maps). CNNs (``(B, C, h, w)`` features): the class activation
    map, the classifier weights applied at every position (Zhou et al., CVPR 2016).
    """
    head = model.get_classifier() if hasattr(model, "get_classifier") else getattr(model, "head", None)
    if not isinstance(head, nn.Linear) or not hasattr(model, "forward_features"):
        raise MixerInputError(f"model= {type(model).__name__} needs forward_features and a linear classifier "
                              "(get_classifier()); or pass label_maps= (B, h, w) teacher maps of the "
                              "ground-truth class")
    with eval_no_grad(model):
        feats = model.forward_features(images)
    if feats.ndim == 3:
        prefix = num_prefix_tokens(model)
        tokens = head(feats[:, prefix:])  # (B, N, K)
        n = tokens.shape[1]
        gh = max(1, round(math.sqrt(n * images.shape[-2] / images.shape[-1])))
        dense = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, gh, n // gh)
    elif feats.ndim == 4:
        dense = torch.einsum("bchw,kc->bkhw", feats, head.weight)
        if head.bias is not None:
            dense = dense + head.bias.view(1, -1, 1, 1)
    else:
        raise MixerInputError(f"{type(model).__name__}.forward_features returned {tuple(feats.shape)}: expected tokens "
                              "(B, T, D) or a feature map (B, C, h, w)")
    return _class_maps(dense.float(), targets)


def _unit_maps(maps: Tensor, grid: tuple[int, int]) -> Tensor:
    """Clamp at 0, resize to ``grid`` by area, normalise to sum 1 (an all-zero map becomes uniform)."""
    m = maps.float().clamp_min(0)
    if tuple(m.shape[-2:]) != grid:
        m = F.adaptive_avg_pool2d(m.unsqueeze(1), grid)[:, 0]
    total = m.flatten(1).sum(1).view(-1, 1, 1)
    uniform = torch.full_like(m, 1.0 / m[0].numel())
    return torch.where(total > 0, m / total.clamp_min(torch.finfo(m.dtype).tiny), uniform)


@register_mixer
class TokenMix(Mixer):
    """Token-level block (or random) masks; labels from a teacher's activation maps on the mixed tokens.

    Args:
        patch_size: token size in pixels (the ViT's patch; default 16).
        mask_type: ``"block"`` (official default) or ``"random"``.
        cutmix_alpha: Beta(alpha, alpha) of the token share (paper; ignored when ``lam_constant`` is set).
        lam_constant: fixed ``lam`` (official 0.5); ``None`` samples it (paper, default).
        extra_tokens: tokens added to ``int((1 - lam) N)`` (official: 14, the grid side at 224/16; default 0).
        teacher_labels: label from teacher maps (default); False gives the token-area label.
        switch_prob: probability of the token mix per batch (official 0.5); otherwise Mixup.
        mixup_alpha: Mixup branch (official 0.8).
    """

    name = "tokenmix"
    summary = "token-level block masks, label = teacher activation mass of own and pasted tokens (not renormalised)"
    reference = "Liu et al., TokenMix: Rethinking Image Mixing for Data Augmentation in Vision Transformers, ECCV 2022"
    content_independent = False
    needs = ("model",)
    uses_patch_grid = True

    def __init__(self, *, patch_size: int = 16, mask_type: str = "block", cutmix_alpha: float = 1.0,
                 lam_constant: float | None = None, extra_tokens: int = 0, teacher_labels: bool = True,
                 switch_prob: float = 0.5, mixup_alpha: float = 0.8, pairing: str = "flip", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
        if mask_type not in ("block", "random"):
            raise ValueError(f"mask_type must be 'block' or 'random', got {mask_type!r}")
        check_range("cutmix_alpha", cutmix_alpha, 0.0, float("inf"), lo_open=True, hi_open=True)
        if lam_constant is not None:
            check_range("lam_constant", lam_constant, 0.0, 1.0)
        if not isinstance(extra_tokens, int) or extra_tokens < 0:
            raise ValueError(f"extra_tokens must be a non-negative integer, got {extra_tokens!r}")
        check_range("switch_prob", switch_prob, 0.0, 1.0)
        check_range("mixup_alpha", mixup_alpha, 0.0, float("inf"), lo_open=True, hi_open=True)
        check_pairing(pairing)
        self.patch_size, self.mask_type, self.cutmix_alpha = patch_size, mask_type, float(cutmix_alpha)
        self.lam_constant, self.extra_tokens, self.teacher_labels = lam_constant, extra_tokens, bool(teacher_labels)
        self.switch_prob, self.mixup_alpha, self.pairing = float(switch_prob), float(mixup_alpha), pairing
        self.needs = ("model",) if self.teacher_labels else ()
        self.content_independent = not self.teacher_labels
        self.model_kind = "any" if self.teacher_labels else None

    def context_help(self) -> str:
        return ("pass model= (a teacher: a timm ViT or CNN with a linear classifier) or label_maps= (B, h, w) teacher "
                "maps of each image's ground-truth class; or build the mixer with teacher_labels=False")

    def check_context(self, images: Tensor, targets: Tensor, context: Mapping[str, Any]) -> None:
        if self.teacher_labels and context.get("model") is None and context.get("label_maps") is None:
            raise MixerInputError(f"{self.name} needs model= or label_maps= in the call: {self.context_help()}")

    def grid(self, hw: tuple[int, int]) -> tuple[int, int]:
        return max(1, hw[0] // self.patch_size), max(1, hw[1] // self.patch_size)

    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b, hw = images.shape[0], tuple(images.shape[-2:])
        grid = self.grid(hw)
        n_all = grid[0] * grid[1]
        use_tokens = bool(torch.rand(1, generator=generator) < self.switch_prob)
        lam_mixup = sample_beta(self.mixup_alpha, 1, generator).expand(b)
        lam_draw = float(sample_beta(self.cutmix_alpha, 1, generator))
        lam = self.lam_constant if self.lam_constant is not None else lam_draw
        n = min(n_all, int((1.0 - lam) * n_all) + self.extra_tokens)
        make = block_token_masks if self.mask_type == "block" else random_token_masks
        pasted = make(b, grid, n, generator)
        index = self.partners(b, generator, self.pairing, context)
        params: dict[str, Any] = {"use_tokens": use_tokens, "index": index, "lam_mixup": lam_mixup, "grid": grid,
                                  "n_tokens": n, "pasted_tokens": pasted}
        if use_tokens and self.teacher_labels:
            maps = context.get("label_maps")
            if maps is None:
                maps = teacher_label_maps(context["model"], images, targets)
            if not isinstance(maps, Tensor) or maps.ndim != 3 or maps.shape[0] != b:
                raise MixerInputError(f"label_maps= must be ({b}, h, w), got "
                                      f"{tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__}")
            params["label_maps"] = _unit_maps(maps.detach().cpu(), grid)
        return params

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        dev, (h, w) = images.device, images.shape[-2:]
        index = params["index"].to(dev)
        if not params["use_tokens"]:
            lam = params["lam_mixup"].to(dev)
            share = lam.view(-1, 1, 1, 1).to(images.dtype)
            mixed = torch.lerp(images[index], images, share)
            return self.pair_result(images, mixed, targets, index, share, lam, params)
        grid = params["grid"]
        pasted = params["pasted_tokens"].to(dev)
        ey, ex = token_edges(grid[0], h, dev), token_edges(grid[1], w, dev)
        rows = torch.bucketize(torch.arange(h, device=dev), ey[1:-1], right=True)
        cols = torch.bucketize(torch.arange(w, device=dev), ex[1:-1], right=True)
        own_share = (~pasted)[:, rows][:, :, cols].unsqueeze(1).to(images.dtype)
        mixed = torch.lerp(images[index], images, own_share)
        if "label_maps" in params:
            maps = params["label_maps"].to(dev)
            lam = (maps * ~pasted).flatten(1).sum(1)
            partner_weight = (maps[index] * pasted).flatten(1).sum(1)
        else:
            lam = own_share.mean(dim=(1, 2, 3)).float()
            partner_weight = None
        return self.pair_result(images, mixed, targets, index, own_share, lam, params, partner_weight=partner_weight)
