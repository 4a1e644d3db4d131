"""Attention of timm Vision Transformers, captured in the same forward pass that computes the logits.

timm's ``Attention`` uses fused ``scaled_dot_product_attention`` by default, which never materialises the
attention matrix, so hooking ``attn_drop`` silently captures nothing. :class:`AttentionHook` instead puts a
forward **pre**-hook on each hooked block's ``attn`` module, takes its input (the block's normalised tokens)
and recomputes ``softmax(scale * q_norm(q) @ k_norm(k)^T)`` from the module's own ``qkv`` projection, detached.
The model's forward is untouched (fusion stays on), so its output is bit-identical with or without the hook.

What the attention-based mixers read (Chen et al., TransMix, CVPR 2022; Zhao et al., MixPro, ICLR 2023;
Chen et al., SMMix, ICCV 2023; their official ViT variants return exactly these):

* :meth:`AttentionHook.cls_attention` — last block, class-token row over the patch columns, mean over heads
  (``attn[:, :, 0, P:]`` with ``P = model.num_prefix_tokens``: 1 for ViT/DeiT, 2 for DeiT-distilled, more with
  register tokens), on the patch grid.
* :meth:`AttentionHook.patch_attention` — last block, patch-to-patch attention ``attn[:, :, P:, P:]`` averaged
  over heads and query patches (SMMix), on the patch grid.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from gazemix.contract import MixerInputError
from gazemix.models import eval_no_grad

__all__ = ["AttentionCaptureError", "AttentionHook", "as_patch_grid", "class_token_attention", "num_prefix_tokens",
           "grid_mass", "model_context", "patch_attention", "token_edges", "token_grid", "vit_blocks"]


class AttentionCaptureError(ValueError):
    """The model cannot be hooked, or a forward ran without the hooked block firing."""


def vit_blocks(model: nn.Module) -> nn.ModuleList | nn.Sequential:
    """The transformer blocks of a timm ViT-like model (``model.blocks``), with a clear error otherwise."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)) or len(blocks) == 0:
        raise AttentionCaptureError(f"{type(model).__name__} has no `blocks` list of transformer blocks: pass a timm "
                                    "VisionTransformer (ViT, DeiT, DeiT-distilled, models with register tokens)")
    return blocks


def num_prefix_tokens(model: nn.Module) -> int:
    """Class/distillation/register tokens in front of the patch tokens (timm's ``num_prefix_tokens``)."""
    n = getattr(model, "num_prefix_tokens", None)
    if n is None:
        raise AttentionCaptureError(f"{type(model).__name__} has no `num_prefix_tokens`: pass a timm VisionTransformer")
    return int(n)


def token_grid(model: nn.Module, n: int, hw: tuple[int, int]) -> tuple[int, int]:
    """The ``(h, w)`` grid of ``n`` patch tokens: the model's own ``patch_embed.grid_size`` when it holds ``n``
    tokens, else the grid whose aspect matches the image ``hw`` (as :func:`as_patch_grid` lays a flat vector)."""
    grid = tuple(int(g) for g in getattr(getattr(model, "patch_embed", None), "grid_size", (0, 0)))
    if grid[0] * grid[1] == n:
        return grid
    gh = max(1, round(math.sqrt(n * hw[0] / hw[1])))
    return gh, n // gh


def as_patch_grid(attention: Tensor, hw: tuple[int, int], name: str = "attention") -> Tensor:
    """Patch attention ``(B, N)`` or ``(B, h, w)`` as a float ``(B, h, w)`` map.

    A flat ``(B, N)`` vector is laid out on the grid whose aspect matches the image ``hw`` (row-major, as
    timm flattens patches): ``h = sqrt(N H / W)``; anything that does not factor that way raises.
    """
    if not isinstance(attention, Tensor):
        raise MixerInputError(f"{name}= must be a tensor (B, N) or (B, h, w), got {type(attention).__name__}")
    if attention.ndim == 3:
        return attention.float()
    if attention.ndim == 4 and attention.shape[1] == 1:
        return attention[:, 0].float()
    if attention.ndim != 2:
        raise MixerInputError(f"{name}= must have shape (B, N) or (B, h, w), got {tuple(attention.shape)}")
    n = attention.shape[1]
    gh = max(1, round(math.sqrt(n * hw[0] / hw[1])))
    if n % gh:
        raise MixerInputError(f"{name}= has {n} patch tokens, which do not form a grid with the image's aspect "
                              f"{hw[0]}x{hw[1]}: pass it as a (B, h, w) map instead")
    return attention.float().reshape(attention.shape[0], gh, n // gh)


def _recompute_attention(attn: nn.Module, x: Tensor) -> Tensor:
    """``softmax(scale q k^T)`` of a timm ``Attention`` module for its input ``x`` ``(B, N, C)``.

    Returns ``(B, heads, N, N)``, computed in float32.
    """
    b, n, _ = x.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    qkv = attn.qkv(x).reshape(b, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return ((q.float() * attn.scale) @ k.float().transpose(-2, -1)).softmax(dim=-1)


class AttentionHook:
    """Capture the attention matrices of some blocks of a timm ViT during its ordinary forward.

    Use as a context manager (hooks are removed on exit, also on error)::

        with AttentionHook(model) as hook:
            logits = model(images)          # one forward: logits and attention
        cls_map = hook.cls_attention()      # (B, h, w), head-mean class-token attention of the last block

    Args:
        model: a timm ``VisionTransformer`` (any model with ``blocks[i].attn.qkv`` and ``num_prefix_tokens``).
        blocks: indices of the hooked blocks (default: the last).
        keep: store the captured matrices (set False when ``callback`` consumes them, e.g. TL-Align).
        callback: called as ``callback(block_index, attention)`` with each ``(B, heads, N, N)`` matrix.
    """

    def __init__(self, model: nn.Module, blocks: Sequence[int] = (-1,), *, keep: bool = True,
                 callback: Callable[[int, Tensor], None] | None = None) -> None:
        all_blocks = vit_blocks(model)
        self.prefix = num_prefix_tokens(model)
        self.grid = tuple(int(g) for g in getattr(getattr(model, "patch_embed", None), "grid_size", (0, 0)))
        depth = len(all_blocks)
        self.block_ids = []
        for i in blocks:
            if not -depth <= i < depth:
                raise ValueError(f"blocks must index the model's {depth} blocks, got {i}")
            self.block_ids.append(i % depth)
        for i in self.block_ids:
            attn = getattr(all_blocks[i], "attn", None)
            if attn is None or not all(hasattr(attn, a) for a in ("qkv", "num_heads", "head_dim", "scale")):
                raise AttentionCaptureError(f"block {i} ({type(all_blocks[i]).__name__}) has no timm-style `attn` "
                                            "module with `qkv`, `num_heads`, `head_dim` and `scale`")
        self.model, self.keep, self.callback = model, keep, callback
        self.matrices: dict[int, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "AttentionHook":
        self.matrices.clear()
        blocks = vit_blocks(self.model)
        for i in self.block_ids:
            self._handles.append(blocks[i].attn.register_forward_pre_hook(self._make_hook(i)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _make_hook(self, i: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Tensor, ...]) -> None:
            with torch.no_grad():
                a = _recompute_attention(module, args[0].detach())
            if self.keep:
                self.matrices[i] = a
            if self.callback is not None:
                self.callback(i, a)
        return hook

    def matrix(self, block: int = -1) -> Tensor:
        """The captured ``(B, heads, N, N)`` attention of ``block`` (rows sum to 1)."""
        i = block % len(vit_blocks(self.model))
        if i not in self.matrices:
            raise AttentionCaptureError(f"no attention was captured for block {i}: run the model's forward inside "
                                        "the `with AttentionHook(model)` block (and hook that block)")
        return self.matrices[i]

    def _to_grid(self, flat: Tensor) -> Tensor:
        n = flat.shape[-1]
        gh, gw = self.grid
        if gh * gw != n:  # dynamic image size: assume a square grid
            gh = gw = math.isqrt(n)
            if gh * gw != n:
                raise AttentionCaptureError(f"{n} patch tokens do not form the model's grid {self.grid} nor a square")
        return flat.reshape(flat.shape[0], gh, gw)

    def cls_attention(self, block: int = -1) -> Tensor:
        """Head-mean attention of the class token (token 0) to every patch token, ``(B, h, w)``."""
        return self._to_grid(self.matrix(block)[:, :, 0, self.prefix:].mean(dim=1))

    def patch_attention(self, block: int = -1) -> Tensor:
        """Patch-to-patch attention averaged over heads and query patches (SMMix), ``(B, h, w)``."""
        return self._to_grid(self.matrix(block)[:, :, self.prefix:, self.prefix:].mean(dim=(1, 2)))


def class_token_attention(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    """One forward of ``model`` (in its current mode, with grad as usual): ``(logits, cls_attention (B, h, w))``.

    This is what TransMix and MixPro's PAL read from the training forward on the mixed batch.
    """
    with AttentionHook(model) as hook:
        logits = model(images)
    return logits, hook.cls_attention()


def model_context(model: nn.Module) -> Callable[[Tensor, Tensor], dict[str, Tensor | nn.Module]]:
    """A context provider ``(images, targets) -> {"model", "attention", "logits"}`` for scoring with a ViT.

    ``attention`` is the class-token attention (TransMix/MixPro relabel) and ``logits`` the logits of one eval-mode,
    no-grad forward; ``model`` lets SMMix run its own patch-attention forward and TdAttenMix read the model out.
    """
    def provide(images: Tensor, targets: Tensor) -> dict[str, Tensor | nn.Module]:
        with eval_no_grad(model):
            logits, attention = class_token_attention(model, images)
        return {"model": model, "attention": attention, "logits": logits}
    return provide


def patch_attention(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    """SMMix's extra forward: eval mode, no grad, on the (unmixed) batch; the model's mode is restored.

    Returns ``(logits, patch_attention (B, h, w))``; the logits serve as the teacher of SMMix/TdAttenMix's
    consistency loss.
    """
    with eval_no_grad(model), AttentionHook(model) as hook:
        logits = model(images)
    return logits, hook.patch_attention()


def token_edges(n: int, size: int, device: torch.device | None = None) -> Tensor:
    """Pixel edges ``(n + 1,)`` of ``n`` tokens along a side of ``size`` pixels: ``floor(r * size / n)``.

    For ``size % n == 0`` (224 px / 14 tokens) these are the patch boundaries; other sizes get near-equal tokens.
    """
    return torch.arange(n + 1, device=device) * size // n


def grid_mass(maps: Tensor, grid: tuple[int, int]) -> Tensor:
    """Mass of per-pixel ``maps`` ``(B, 1, H, W)`` inside each token of ``grid`` (edges of :func:`token_edges`).

    Returns ``(B, h, w)``; the total mass is preserved exactly for any image size.
    """
    h, w = maps.shape[-2:]
    gh, gw = grid
    ey, ex = token_edges(gh, h, maps.device), token_edges(gw, w, maps.device)
    rows = torch.arange(h, device=maps.device)
    cols = torch.arange(w, device=maps.device)
    ry = ((rows >= ey[:-1, None]) & (rows < ey[1:, None])).to(maps.dtype)  # (gh, H)
    rx = ((cols >= ex[:-1, None]) & (cols < ex[1:, None])).to(maps.dtype)  # (gw, W)
    return ry @ maps[:, 0] @ rx.T
