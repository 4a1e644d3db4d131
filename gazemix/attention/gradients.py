"""Input-gradient saliency: ``s = sqrt(mean_c (dL/dx)^2)`` from one forward and one backward pass.

This is the saliency of PuzzleMix (Kim, Choo, Song, ICML 2020, official ``main.py``: ``loss.backward()`` on the
clean batch, then ``sqrt(mean(input.grad ** 2, dim=1))``), Co-Mixup (Kim et al., ICLR 2021) and R-Mix (Luu et
al., 2023), where ``L`` is the classification loss of the model under training on the *unmixed* batch.
The loss is cross-entropy against the (possibly soft) targets; its scale does not matter because every
mixer normalises the pooled saliency to sum 1. Only the input's gradient is computed
(``torch.autograd.grad``): the model's parameter gradients are left untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GradientInputError", "input_gradient_saliency"]


class GradientInputError(ValueError):
    """The model or targets given for gradient saliency cannot be used; the message says what to pass."""


def input_gradient_saliency(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    """Per-pixel saliency ``sqrt(mean_c (dL/dx)^2)`` of the loss ``L = CE(model(x), targets)``.

    Args:
        model: any ``nn.Module`` mapping ``(B, C, H, W)`` to logits ``(B, K)``; its train/eval mode is kept.
        images: ``(B, C, H, W)`` float images (not modified).
        targets: ``(B,)`` class indices or ``(B, K)`` soft targets.

    Returns:
        ``(B, 1, H, W)``, non-negative, detached, on the device and in the dtype of ``images``.
    """
    if not isinstance(model, nn.Module):
        raise GradientInputError(f"model= must be a torch.nn.Module returning logits, got {type(model).__name__}")
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != images.shape[0]:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise GradientInputError(f"model must return logits of shape (B, K) for B={images.shape[0]}, got {shape}")
        if targets.ndim == 1:
            if targets.is_floating_point():
                raise GradientInputError("targets of shape (B,) must be integer class indices")
            loss = F.cross_entropy(logits, targets.to(logits.device).long(), reduction="sum")
        elif targets.ndim == 2 and targets.shape == logits.shape:
            loss = -(targets.to(logits) * F.log_softmax(logits, dim=1)).sum()
        else:
            raise GradientInputError(f"targets must be (B,) indices or (B, K) soft targets matching logits "
                                     f"{tuple(logits.shape)}, got {tuple(targets.shape)}")
        (grad,) = torch.autograd.grad(loss, x)
    return grad.pow(2).mean(dim=1, keepdim=True).sqrt().to(images.dtype)
