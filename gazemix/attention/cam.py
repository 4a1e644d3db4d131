"""Class activation maps of timm CNNs: CAM and Grad-CAM.

* :func:`class_activation_map` — CAM (Zhou et al., "Learning Deep Features for Discriminative Localization",
  CVPR 2016) as SnapMix computes it (Huang, Wang, Tao, AAAI 2021, official ``utils/mixmethod.py``
  ``get_spm``): ReLU of the last feature map, a 1x1 convolution with the classifier's weights and bias, the
  channel of the requested class, bilinearly upsampled to the image size. Exact for heads that are global
  average pooling followed by a linear layer (ResNet, EfficientNet, RegNet, ... in timm); for heads with a
  layer between pooling and classifier (ConvNeXt's norm) it is the usual approximation — use Grad-CAM there.
* :func:`grad_cam` — Grad-CAM (Selvaraju et al., ICCV 2017): channel weights are the spatial mean of the class
  score's gradient with respect to the last feature map; map ``ReLU(sum_c w_c A_c)``, upsampled.
* :func:`normalise_cam` — SnapMix's "semantic percent map": subtract each map's minimum, divide by its sum.

Both read the model through timm's ``forward_features`` / ``forward_head`` / ``get_classifier``; parameter
gradients are never touched (``torch.autograd.grad`` on the features only), and the model's train/eval mode
is left as the caller set it (SnapMix's official code runs this forward in training mode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CamInputError", "class_activation_map", "grad_cam", "normalise_cam"]


class CamInputError(ValueError):
    """The model or classes given to a CAM function cannot be used; the message says what to pass."""


def _features(model: nn.Module, images: Tensor) -> Tensor:
    if not callable(getattr(model, "forward_features", None)):
        raise CamInputError(f"model= must be a timm CNN with forward_features(); got {type(model).__name__}")
    feats = model.forward_features(images)
    if not isinstance(feats, Tensor) or feats.ndim != 4:
        shape = tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
        raise CamInputError(f"model.forward_features returned {shape}; CAM needs a (B, C, h, w) feature map "
                            "(a CNN; for ViTs use the attention maps of gazemix.attention)")
    return feats


def _classes(classes: Tensor, b: int, k: int, device: torch.device) -> Tensor:
    if classes.ndim == 2:  # soft / one-hot targets: the dominant class
        classes = classes.argmax(dim=1)
    if classes.ndim != 1 or classes.shape[0] != b or classes.is_floating_point():
        raise CamInputError(f"classes must be (B,) integer class indices or (B, K) soft targets for B={b}, "
                            f"got {tuple(classes.shape)} {classes.dtype}")
    if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= k):
        raise CamInputError(f"classes must lie in [0, {k - 1}] for this classifier, got "
                            f"[{int(classes.min())}, {int(classes.max())}]")
    return classes.to(device).long()


def class_activation_map(model: nn.Module, images: Tensor, classes: Tensor, *, size: tuple[int, int] | None = None) -> Tensor:
    """CAM of class ``classes[b]`` for each image (SnapMix's ``get_spm`` before normalisation).

    Args:
        model: a timm CNN whose ``get_classifier()`` is an ``nn.Linear`` (or 1x1 ``nn.Conv2d``).
        images: ``(B, C, H, W)``.
        classes: ``(B,)`` class indices, or ``(B, K)`` soft targets (their argmax is used).
        size: output size (default: the image size); bilinear, ``align_corners=False`` as SnapMix.

    Returns:
        ``(B, 1, *size)`` raw class activation (not normalised), without gradient.
    """
    clf = model.get_classifier() if callable(getattr(model, "get_classifier", None)) else None
    if isinstance(clf, nn.Conv2d) and clf.kernel_size == (1, 1):
        weight, bias = clf.weight.flatten(1), clf.bias
    elif isinstance(clf, nn.Linear):
        weight, bias = clf.weight, clf.bias
    else:
        raise CamInputError(f"CAM needs a linear classifier from model.get_classifier(); {type(model).__name__} "
                            f"has {type(clf).__name__}: use grad_cam() instead")
    with torch.no_grad():
        fms = F.relu(_features(model, images))
        cls = _classes(classes, images.shape[0], weight.shape[0], fms.device)
        w = weight[cls].to(fms.dtype)  # (B, C): only the requested class rows
        cam = torch.einsum("bc,bchw->bhw", w, fms)
        if bias is not None:
            cam = cam + bias[cls].to(fms.dtype).view(-1, 1, 1)
        out = size if size is not None else tuple(images.shape[-2:])
        return F.interpolate(cam.unsqueeze(1), size=out, mode="bilinear", align_corners=False)


def grad_cam(model: nn.Module, images: Tensor, classes: Tensor, *, size: tuple[int, int] | None = None) -> Tensor:
    """Grad-CAM of class ``classes[b]`` for each image: ``ReLU(sum_c mean_hw(d y_c / d A) A_c)``, upsampled.

    One forward and one backward through the head only (``torch.autograd.grad`` with respect to the features).
    Returns ``(B, 1, *size)``, detached.
    """
    with torch.enable_grad():
        feats = _features(model, images.detach())
        if not feats.requires_grad:
            feats = feats.detach().requires_grad_(True)
        logits = model.forward_head(feats)
        cls = _classes(classes, images.shape[0], logits.shape[1], logits.device)
        score = logits.gather(1, cls.view(-1, 1)).sum()
        (grads,) = torch.autograd.grad(score, feats)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * feats.detach()).sum(dim=1, keepdim=True))
    out = size if size is not None else tuple(images.shape[-2:])
    return F.interpolate(cam, size=out, mode="bilinear", align_corners=False)


def normalise_cam(cam: Tensor) -> Tensor:
    """SnapMix's semantic percent map: each ``(B, 1, H, W)`` map minus its minimum, divided by its sum.

    A constant map (sum 0 after the shift) becomes NaN exactly as in SnapMix; the mixer then falls back to area
    labels, as the official code does.
    """
    shifted = cam - cam.flatten(1).min(dim=1).values.view(-1, 1, 1, 1)
    return shifted / shifted.flatten(1).sum(dim=1).view(-1, 1, 1, 1)
