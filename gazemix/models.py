"""Models: building a timm classifier (never downloaded), loading local weights, and running a model for a
read-out (eval mode, no gradient) without disturbing its training state.

Attention capture lives in :mod:`gazemix.attention.vit`.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from copy import deepcopy
from pathlib import Path
from typing import Any, Iterator

import timm
import torch
from torch import Tensor, nn

__all__ = ["ModelError", "build_model", "check_model_name", "eval_no_grad", "frozen_copy", "is_vit", "load_pretrained"]


class ModelError(ValueError):
    """A model name, size or weight file that cannot be used; the message says what to pass instead."""


def is_vit(model: nn.Module) -> bool:
    """True for timm ViT-style models (patch embedding, transformer blocks with ``attn``, prefix tokens)."""
    return (hasattr(model, "patch_embed") and hasattr(model, "blocks") and len(model.blocks) > 0
            and hasattr(model.blocks[-1], "attn") and hasattr(model, "num_prefix_tokens"))


def check_model_name(name: str) -> None:
    """Refuse a name timm does not know, listing the closest ones."""
    if not timm.is_model(name):
        family = timm.list_models(f"{name.split('_')[0]}*")[:8]
        close = family or difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.5)
        hint = f" Closest timm models: {', '.join(close)}." if close else ""
        raise ModelError(f"unknown model {name!r}.{hint} Any name of timm.list_models() works "
                         f"({len(timm.list_models())} models), e.g. deit_tiny_patch16_224, vit_small_patch16_224, "
                         f"resnet18, resnet50, convnext_tiny.")


def build_model(name: str, num_classes: int, img_size: int, *, patch_size: int | None = None,
                drop_path: float = 0.0) -> nn.Module:
    """``timm.create_model(name, pretrained=False, ...)`` with checks a user can act on.

    ViTs are built for ``img_size`` (and ``patch_size`` when given); the image side must be a multiple of
    the patch size.
    """
    check_model_name(name)
    kwargs: dict[str, Any] = {"num_classes": num_classes, "drop_path_rate": drop_path}
    vit_kwargs = {"img_size": img_size, **({"patch_size": patch_size} if patch_size else {})}
    try:
        model = timm.create_model(name, pretrained=False, **kwargs, **vit_kwargs)
    except TypeError:  # not a ViT: CNNs take any image size and have no patch size
        model = timm.create_model(name, pretrained=False, **kwargs)
    if patch_size and not is_vit(model):
        raise ModelError(f"a patch size applies to ViT models only; {name} is a {type(model).__name__}")
    if is_vit(model):
        patch = model.patch_embed.patch_size[0]
        if img_size % patch:
            raise ModelError(f"the image size {img_size} is not divisible by the patch size {patch} of {name}: "
                             f"use a multiple of {patch} (e.g. {max(patch, img_size // patch * patch)})")
    return model


def load_pretrained(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Load a local ``.pt``/``.pth``/``.safetensors`` file; returns the keys left out (e.g. a head of another size).

    Accepts a raw state dict or one nested under ``model``/``state_dict``/``model_ema`` (timm, DeiT,
    gazemix checkpoints). Parameters whose shape differs (a classifier for another class count) are skipped.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"pretrained weights {p}: the file does not exist")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelError(f"pretrained weights {p} could not be read as a checkpoint "
                         f"({type(err).__name__}: {err})") from err
    for key in ("model", "state_dict", "model_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelError(f"pretrained weights {p}: the file holds no state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise ModelError(f"the pretrained weights file {p} shares no parameter with the model: is it for another architecture?")
    model.load_state_dict(matching, strict=False)
    return skipped + sorted(set(own) - set(matching))


@contextlib.contextmanager
def eval_no_grad(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode without gradient inside the block; its training mode is restored on exit
    (also on error). For read-outs of a model under training: no dropout or drop-path, no BatchNorm update."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def frozen_copy(model: nn.Module, *, copy: bool = True) -> nn.Module:
    """``model`` (deep-copied unless ``copy=False``) with gradients off and in eval mode."""
    out = deepcopy(model) if copy else model
    for p in out.parameters():
        p.requires_grad_(False)
    return out.eval()
