"""AutoMix's networks (Liu et al., "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers", ECCV 2022).

* :class:`MixBlock` — the Mix Block: a lambda-conditioned cross-attention between the own and the partner
  feature maps that outputs the mixing mask at feature resolution, upsampled to the image.
* :func:`encoder_features` — the feature map the Mix Block reads (a timm model's intermediate stage).
* :func:`momentum_at` / :func:`ema_update` — the momentum encoder's cosine schedule and update.
* :func:`mask_loss` — the L1 mask loss with a margin.

Official code: Westlake-AI/openmixup ``openmixup/models/heads/pmix_block.py`` (``PixelMixBlock``) and
``openmixup/models/classifiers/automix.py`` (``AutoMixup``), CIFAR-100 config
``configs/classification/cifar100/automix/basic/r18_l2_a2_near_L1_01_mlr5e_2.py``. Written from the paper and
that code, not copied.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MixBlock", "encoder_features", "default_feature_index", "ema_update", "mask_loss", "momentum_at"]


class MixBlock(nn.Module):
    """The AutoMix Mix Block: features of both images and lambda → per-pixel share of the own image.

    With ``z_i`` the own and ``z_j`` the partner feature map ``(C, h, w)``:

    1. lambda embedding (paper, Sec. 3.2): ``z_i ← λ z_i``, ``z_j ← (1 - λ) z_j`` (``lam_embedding="mul"``).
       OpenMixup's CIFAR configs switch it off (``lam_mul=False``; ``lam_embedding="none"`` here), leaving the
       mask loss as the only link to lambda.
    2. cross-attention ``P = softmax(q(z_i)ᵀ q(z_j) / sqrt(C/r))`` over partner positions, with one shared 1x1
       convolution ``q`` for query and key (OpenMixup: ``key=None`` unless ``x_qk_concat``), ``C/r`` channels;
    3. partner logits ``P · v(z_j)`` with a 1x1 value convolution to one channel (OpenMixup ``mask_mode=
       "none_v_"``, the AutoMix configs' choice), upsampled to the image size (``"nearest"`` in AutoMix),
       then a sigmoid: the partner share ``s``; the two-channel mask is ``(1 - s, s)`` — a softmax over the
       logits ``(0, a)``, so it sums to 1 per pixel. The own share ``1 - s`` is returned.

    Attention and mask run in float32 (as the official ``force_fp32``). Weights start ``N(0, 0.01)``, biases 0.

    Args:
        in_channels: channels ``C`` of the feature map.
        reduction: ``r`` (official 2).
        upsampling: ``"nearest"`` (AutoMix) or ``"bilinear"``.
        lam_embedding: ``"mul"`` (paper) or ``"none"`` (OpenMixup CIFAR configs).
    """

    def __init__(self, in_channels: int, *, reduction: int = 2, upsampling: str = "nearest",
                 lam_embedding: str = "mul") -> None:
        super().__init__()
        if upsampling not in ("nearest", "bilinear"):
            raise ValueError(f"upsampling must be 'nearest' or 'bilinear', got {upsampling!r}")
        if lam_embedding not in ("mul", "none"):
            raise ValueError(f"lam_embedding must be 'mul' or 'none', got {lam_embedding!r}")
        if not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"reduction must be a positive integer, got {reduction!r}")
        self.inter = max(int(in_channels) // reduction, 1)
        self.query = nn.Conv2d(in_channels, self.inter, 1)
        self.value = nn.Conv2d(in_channels, 1, 1)
        self.upsampling, self.lam_embedding = upsampling, lam_embedding
        for conv in (self.query, self.value):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, z: Tensor, lam: Tensor, index: Tensor, size: tuple[int, int]) -> Tensor:
        """Own share ``(B, 1, *size)`` in (0, 1) for features ``z (B, C, h, w)``, ``lam (B,)``, partners ``index``."""
        with torch.autocast(z.device.type, enabled=False):
            z = z.float()
            b, _, h, w = z.shape
            zi, zj = z, z[index]
            if self.lam_embedding == "mul":
                lam = lam.to(z).view(-1, 1, 1, 1)
                zi, zj = zi * lam, zj * (1.0 - lam)
            q = self.query(zi).flatten(2).transpose(1, 2)  # (B, hw, C/r)
            k = self.query(zj).flatten(2)  # (B, C/r, hw)
            attn = torch.softmax(q @ k / math.sqrt(self.inter), dim=-1)  # own position → partner positions
            v = self.value(zj).flatten(2).transpose(1, 2)  # (B, hw, 1)
            logits = (attn @ v).transpose(1, 2).reshape(b, 1, h, w)
            kwargs = {} if self.upsampling == "nearest" else {"align_corners": False}
            logits = F.interpolate(logits, size=size, mode=self.upsampling, **kwargs)
            return 1.0 - torch.sigmoid(logits)


def default_feature_index(model: nn.Module) -> int:
    """Which ``feature_info`` entry feeds the Mix Block: CNNs the stage before the last (ResNet ``layer3``,
    the official ``mask_layer=2`` / ``out_indices=(2,)``); ViTs their last block (our choice: no official ViT
    recipe reads a different block)."""
    n = len(model.feature_info)
    return n - 1 if hasattr(model, "patch_embed") else max(n - 2, 0)


def encoder_features(model: nn.Module, images: Tensor, index: int) -> Tensor:
    """Feature map ``(B, C, h, w)`` of ``feature_info[index]`` (timm ``forward_intermediates``; ViT tokens as a grid)."""
    feats = model.forward_intermediates(images, indices=[index], intermediates_only=True)
    return feats[0]


def momentum_at(step: int, total: int, start: float, end: float, warmup: float = 0.1) -> float:
    """OpenMixup's ``CosineScheduleHook``: ``start`` for the first ``warmup`` fraction of training, then a cosine
    rise to ``end`` (``m = end - (end - start) (cos(pi p) + 1) / 2`` over the remaining progress ``p``)."""
    if total <= 0:
        return end
    p = (step / total - warmup) / max(1.0 - warmup, 1e-12)
    if p <= 0:
        return start
    return end - (end - start) * (math.cos(math.pi * min(p, 1.0)) + 1.0) / 2.0


@torch.no_grad()
def ema_update(encoder: nn.Module, online: nn.Module, m: float) -> None:
    """``θ_k ← m θ_k + (1 - m) θ_q`` for parameters; buffers (BatchNorm statistics) are copied from ``online``.

    The official code averages parameters only and lets the momentum encoder's own training-mode forwards update
    its BatchNorm statistics; ours runs in eval mode, so it takes the online statistics instead.
    """
    for pk, pq in zip(encoder.parameters(), online.parameters()):
        pk.mul_(m).add_(pq.detach().to(pk.dtype), alpha=1.0 - m)
    for bk, bq in zip(encoder.buffers(), online.buffers()):
        bk.copy_(bq)


def mask_loss(own_share: Tensor, lam: Tensor, margin: float) -> Tensor:
    """``max(|mean(M) - λ| - margin, 0)`` with the mean over the whole batch (official, one λ per batch)."""
    return (own_share.mean() - lam.to(own_share).mean()).abs().sub(margin).clamp_min(0.0)
