"""Top-down (label-conditioned) attention: TdAttenMix's Top-down Attention Guided Module, and gaze in its place.

Wang, Gu, Lu, "TdAttenMix: Top-Down Attention Guided Mixup", AAAI 2025 (arXiv 2501.15409). This follows the
official code (``morning12138/AAAI2025_TdAttenMix``, ``absvit_control.py``; docs/methods/tdattenmix.md), which
builds the module on AbSViT (Shi, Darrell, Wang, "Top-Down Visual Attention from Analysis by Synthesis",
CVPR 2023):

1. bottom-up pass: ``Z0`` = final (LayerNorm-ed) tokens of a ViT;
2. gate each token by ``m = clamp(cos(Z0_t, w_y), 0, 1)``, ``w_y`` the classifier row of the label ``y``;
3. feed ``Z0 * m`` back through per-layer bias-free decoders, last layer first:
   ``h = W1_l h;  td_l = tau * W2_l h`` (``tau`` = top-down strength, official 1);
4. top-down pass over the same image: in block ``l`` the attention values become ``v + v_td`` with ``v_td`` the
   value part of the block's own ``qkv`` projection applied to the raw ``td_l``;
5. read-out: ``S_t = clamp(cos(Z1_t, w_y), 0, 1)`` on the patch tokens, thresholded to the top 30 % of its range:
   ``A = max(0, S - (0.7 max S + 0.3 min S))``.

At ``tau = 0`` the feedback carries nothing (the second pass differs from the first only by the value bias, as
in the official code): the map is then the bottom-up features read against the class vector.

Providers (:func:`topdown_attention`): a :class:`TopDownViT` (user weights, e.g. an AbSViT checkpoint; random
initialisation with a warning otherwise — nothing is downloaded), the model being trained (any timm ViT, read out
by :func:`class_similarity_map` without feedback), or any callable ``(images, labels) -> (B, h, w)``. Human gaze
enters as a top-down map via :func:`gaze_topdown` (token mass of the gaze density, same threshold) and can
replace or be blended with a model's map (:func:`blend_maps`).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gazemix.attention.vit import grid_mass, num_prefix_tokens, vit_blocks
from gazemix.contract import MixerInputError, check_range
from gazemix.models import eval_no_grad

__all__ = ["TopDownViT", "blend_maps", "class_similarity_map", "gaze_topdown", "threshold_map", "topdown_attention"]


def threshold_map(s: Tensor, threshold: float | None = 0.7) -> Tensor:
    """``max(0, S - (t max S + (1 - t) min S))`` per map ``(B, h, w)`` (official ``t = 0.7``); ``None`` keeps ``S``."""
    if threshold is None:
        return s
    flat = s.flatten(1)
    cut = threshold * flat.max(dim=1).values + (1.0 - threshold) * flat.min(dim=1).values
    return (s - cut.view(-1, 1, 1)).clamp_min(0)


def _class_vectors(weight: Tensor, labels: Tensor) -> Tensor:
    """Classifier rows of ``labels``: indices ``(B,)`` pick rows, soft labels ``(B, K)`` weight them."""
    if labels.ndim == 1 and not labels.is_floating_point():
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= weight.shape[0]):
            raise MixerInputError(f"labels must lie in [0, {weight.shape[0] - 1}] (rows of the class vectors), got "
                                  f"values in [{int(labels.min())}, {int(labels.max())}]: supply class_weights= for "
                                  "your data set's classes")
        return weight[labels.long()]
    if labels.ndim == 2 and labels.shape[1] == weight.shape[0]:
        return labels.to(weight.dtype) @ weight
    raise MixerInputError(f"labels must be (B,) class indices or (B, {weight.shape[0]}) soft labels, "
                          f"got shape {tuple(labels.shape)}")


def _similarity(tokens: Tensor, vectors: Tensor) -> Tensor:
    """``clamp(cos(tokens_t, vector), 0, 1)``: ``(B, T, D), (B, D) -> (B, T)``."""
    return (F.normalize(tokens, dim=-1) @ F.normalize(vectors, dim=-1).unsqueeze(-1)).squeeze(-1).clamp(0, 1)


def _to_grid(patch_values: Tensor, grid: tuple[int, int]) -> Tensor:
    return patch_values.reshape(patch_values.shape[0], *grid)


class _Decoder(nn.Module):
    """AbSViT ``Decode_Block``: two bias-free ``D x D`` linears; returns ``(h, out)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim, bias=False)
        self.linear2 = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.linear(x)
        return x, self.linear2(x)


class TopDownViT(nn.Module):
    """A frozen ViT with AbSViT feedback decoders that maps ``(images, labels)`` to a top-down map ``(B, h, w)``.

    Args:
        vit: a timm model name (built with ``pretrained=False``) or a timm ``VisionTransformer``. The official
            module is AbSViT-B/16 (``"vit_base_patch16_224"`` has the same parameter names).
        checkpoint: path to weights: an AbSViT checkpoint (``{"model": state_dict}`` with ``blocks.*``,
            ``decoders.*``, ``head.*``; its ``prompt`` is ignored) or a ``state_dict()`` of this module.
            Without it the module is randomly initialised and a warning says so.
        tau: top-down strength (TdAttenMix's ``task_param``; official 1; 0 = no top-down signal).
        threshold: read-out threshold ``t`` of ``t max + (1 - t) min`` (official 0.7; ``None``: none).
        class_weights: ``(K, D)`` class vectors to gate and read out with, in place of the classifier's rows
            (needed when the data set's labels are not the head's classes: spec pitfall P3).
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``num_classes``, ``img_size``, ``depth``).
    """

    def __init__(self, vit: str | nn.Module = "vit_base_patch16_224", *, checkpoint: str | os.PathLike | None = None,
                 tau: float = 1.0, threshold: float | None = 0.7, class_weights: Tensor | None = None,
                 **timm_kwargs: Any) -> None:
        super().__init__()
        check_range("tau", tau, 0.0, float("inf"), hi_open=True)
        if threshold is not None:
            check_range("threshold", threshold, 0.0, 1.0)
        if isinstance(vit, str):
            vit = timm.create_model(vit, pretrained=False, **timm_kwargs)
        elif timm_kwargs:
            raise ValueError(f"timm keyword arguments {sorted(timm_kwargs)} only apply when vit is a model name")
        for part in ("patch_embed", "_pos_embed", "norm", "head"):
            if not hasattr(vit, part):
                raise ValueError(f"vit must be a timm VisionTransformer; {type(vit).__name__} has no `{part}`")
        blocks = vit_blocks(vit)
        dim = int(vit.embed_dim)
        self.vit = vit
        self.decoders = nn.ModuleList(_Decoder(dim) for _ in blocks)
        self.tau, self.threshold = float(tau), threshold
        if class_weights is not None and (class_weights.ndim != 2 or class_weights.shape[1] != dim):
            raise ValueError(f"class_weights must be (K, {dim}), got {tuple(class_weights.shape)}")
        self.register_buffer("class_weights", class_weights, persistent=False)
        if checkpoint is None:
            warnings.warn("TopDownViT has random weights: its top-down maps are meaningless until you pass "
                          "checkpoint= (e.g. AbSViT-B ImageNet weights); nothing is downloaded", stacklevel=2)
        else:
            self.load_checkpoint(checkpoint)
        self.eval().requires_grad_(False)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Load an AbSViT checkpoint or a ``state_dict`` of this module from ``path``."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint= {str(path)!r} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a state dict (or {{'model': state_dict}}), got {type(state).__name__}")
        mapped = {}
        for key, value in state.items():
            if key in ("prompt", "top_down_transform") or key.startswith("top_down_transform."):
                continue  # AbSViT's learned prompt: TdAttenMix gates with the class vector instead
            mapped[key if key.startswith(("vit.", "decoders.")) else f"vit.{key}"] = value
        result = self.load_state_dict(mapped, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f"{path}: weights do not fit this TopDownViT: missing {result.missing_keys[:5]}"
                             f"{'...' if len(result.missing_keys) > 5 else ''}, unexpected "
                             f"{result.unexpected_keys[:5]}{'...' if len(result.unexpected_keys) > 5 else ''}")

    def _block(self, blk: nn.Module, x: Tensor, td: Tensor) -> Tensor:
        """A timm pre-norm block whose attention values get the top-down term ``qkv(td)[v]`` (AbSViT)."""
        attn = blk.attn
        y = blk.norm1(x)
        b, n, _ = y.shape
        shape = (b, n, 3, attn.num_heads, attn.head_dim)
        q, k, v = attn.qkv(y).reshape(shape).permute(2, 0, 3, 1, 4).unbind(0)
        v = v + attn.qkv(td).reshape(shape)[:, :, 2].transpose(1, 2)
        o = F.scaled_dot_product_attention(attn.q_norm(q), attn.k_norm(k), v)
        o = attn.norm(o.transpose(1, 2).reshape(b, n, attn.attn_dim))
        if getattr(attn, "gate", None) is not None:
            o = o * attn.gate(y).sigmoid()
        x = x + blk.ls1(attn.proj(o))
        return x + blk.ls2(blk.mlp(blk.norm2(x)))

    def features(self, images: Tensor, td: list[Tensor] | None = None) -> Tensor:
        """Final normalised tokens ``(B, P + N, D)``; with ``td`` (one tensor per block) the top-down pass."""
        vit = self.vit
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
        for i, blk in enumerate(vit_blocks(vit)):
            x = blk(x) if td is None else self._block(blk, x, td[i])
        return vit.norm(x)

    def feedback(self, gated: Tensor) -> list[Tensor]:
        """Top-down signals ``td_l = tau * W2_l (W1_l ... W1_L gated)``, one per block, first block first."""
        td: list[Tensor] = []
        h = gated
        for decoder in reversed(self.decoders):
            h, out = decoder(h)
            td.insert(0, out * self.tau)
        return td

    @torch.no_grad()
    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        """Top-down map ``(B, h, w)`` of ``images`` for ``labels`` (class indices or soft labels)."""
        weight = self.class_weights if self.class_weights is not None else self.vit.head.weight
        w = _class_vectors(weight, labels.to(images.device))
        z0 = self.features(images)
        z1 = self.features(images, self.feedback(z0 * _similarity(z0, w).unsqueeze(-1)))
        s = _similarity(z1[:, self.vit.num_prefix_tokens:], w)
        return threshold_map(_to_grid(s, self.grid_for(images)), self.threshold)

    def grid_for(self, images: Tensor) -> tuple[int, int]:
        ph, pw = self.vit.patch_embed.patch_size
        return images.shape[-2] // ph, images.shape[-1] // pw


def class_similarity_map(model: nn.Module, images: Tensor, labels: Tensor, *, threshold: float | None = 0.7,
                         class_weights: Tensor | None = None) -> Tensor:
    """The module's read-out on the model being trained (no feedback decoders): ``(B, h, w)``.

    ``clamp(cos(final patch token, classifier row of y), 0, 1)``, thresholded as :class:`TopDownViT`. Runs in
    eval mode without grad; the model's mode is restored.
    """
    head = model.get_classifier() if hasattr(model, "get_classifier") else getattr(model, "head", None)
    weight = class_weights if class_weights is not None else getattr(head, "weight", None)
    if weight is None or not hasattr(model, "forward_features"):
        raise ValueError(f"{type(model).__name__} needs `forward_features` and a linear classifier head (a timm ViT), "
                         "or pass class_weights=")
    prefix = num_prefix_tokens(model)
    with eval_no_grad(model):
        tokens = model.forward_features(images)
    if tokens.ndim != 3:
        raise ValueError(f"{type(model).__name__}.forward_features returned {tuple(tokens.shape)}, not (B, tokens, D)")
    s = _similarity(tokens[:, prefix:].float(), _class_vectors(weight.float(), labels.to(images.device)))
    ph, pw = model.patch_embed.patch_size
    return threshold_map(_to_grid(s, (images.shape[-2] // ph, images.shape[-1] // pw)), threshold)


def gaze_topdown(gaze: Tensor, grid: tuple[int, int], *, threshold: float | None = 0.7) -> Tensor:
    """Human gaze ``(B, 1, H, W)`` as a top-down map on the token ``grid``: token gaze mass, same threshold."""
    if not isinstance(gaze, Tensor) or gaze.ndim != 4 or gaze.shape[1] != 1:
        raise MixerInputError(f"gaze= must be a (B, 1, H, W) tensor of gaze maps, got "
                              f"{tuple(gaze.shape) if isinstance(gaze, Tensor) else type(gaze).__name__}")
    if bool((gaze < 0).any()):
        raise MixerInputError("gaze= maps must be non-negative densities")
    return threshold_map(grid_mass(gaze.float(), grid), threshold)


def _unit_mass(m: Tensor) -> Tensor:
    total = m.flatten(1).sum(dim=1).view(-1, 1, 1)
    return torch.where(total > 0, m / total.clamp_min(torch.finfo(m.dtype).tiny), torch.zeros_like(m))


def blend_maps(first: Tensor, second: Tensor, weight: float) -> Tensor:
    """``(1 - weight) * first + weight * second``, each map scaled to unit mass first (all-zero maps stay 0).

    ``weight = 0`` or ``1`` returns the unscaled ``first`` or ``second``.
    """
    check_range("weight", weight, 0.0, 1.0)
    if first.shape != second.shape:
        raise MixerInputError(f"maps to blend differ in shape: {tuple(first.shape)} vs {tuple(second.shape)}: compute "
                              "them on the same token grid")
    if weight == 0:
        return first
    if weight == 1:
        return second
    return (1.0 - weight) * _unit_mass(first) + weight * _unit_mass(second)


def topdown_attention(source: nn.Module | Callable[[Tensor, Tensor], Tensor], images: Tensor,
                      labels: Tensor) -> Tensor:
    """Top-down map ``(B, h, w)`` from a provider: a :class:`TopDownViT`, a timm ViT being trained
    (:func:`class_similarity_map`), or a callable ``(images, labels) -> (B, h, w)``.

    The map only chooses regions and label weights, so it is computed without gradient (as the official
    code does).
    """
    with torch.no_grad():
        if isinstance(source, TopDownViT):
            out = source(images, labels)
        elif isinstance(source, nn.Module) and hasattr(source, "blocks") and hasattr(source, "forward_features"):
            out = class_similarity_map(source, images, labels)
        elif callable(source):
            out = source(images, labels)
        else:
            out = None
    if out is None:
        raise MixerInputError(f"model= must be a TopDownViT, a timm ViT or a callable (images, labels) -> (B, h, w), "
                              f"got {type(source).__name__}")
    if not isinstance(out, Tensor) or out.ndim != 3 or out.shape[0] != images.shape[0]:
        raise MixerInputError(f"the top-down provider returned {tuple(getattr(out, 'shape', ()))}, expected "
                              f"({images.shape[0]}, h, w)")
    return out.float()
