"""AutoMix (Liu, Li, Wang, Liu, Wu, Li, "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers",
ECCV 2022): a learned Mix Block predicts the mixing mask from both images' features and lambda.

Official code: Westlake-AI/openmixup (``classifiers/automix.py``, ``heads/pmix_block.py``; CIFAR-100 R-18 config
``automix/basic/r18_l2_a2_near_L1_01_mlr5e_2.py`` for the defaults); written from the paper and that code, not
copied. Bi-level training, one step:

* two lambdas ``λ_mb, λ_bb ~ Beta(2, 2)`` (one per batch each) and two partner permutations;
* features ``z`` of the clean batch from the **momentum encoder** (EMA of the model, ``m`` from 0.999 to
  0.999999 on a cosine schedule after 10 % of training; frozen, eval mode);
* **backbone** (the model being trained): the mixed batch of the Mix Block's *detached* mask with ``λ_bb``
  (this mixer's ``MixResult``), soft CE with ``λ_bb``-mixed labels, plus one-hot CE on the clean batch (which
  gazemix runs in the same forward as the mixed batch: one DDP pass; BatchNorm sees both halves); when
  ``λ_bb`` or ``1 - λ_bb`` is at most ``lam_margin`` (0.08) the mask is the constant ``λ_bb`` (plain Mixup);
* **Mix Block**: the batch mixed by its mask with ``λ_mb`` is classified by the momentum encoder (weights
  frozen, gradients flow to the mask), soft CE with ``λ_mb``-mixed labels, plus ``0.1 × max(|mean(M) − λ_mb|
  − 0.1, 0)`` (``mask_loss``). All loss weights 1 except the mask loss, as the official ``head_weights``.

The Mix Block is updated by its own AdamW (``block_lr``; our choice: the official SGD recipe shares the model's
schedule, which gazemix's AdamW trainer does not have). Labels use ``λ`` (the official rule), not the mask's
area. Outside training (scoring, ``gazemix mix``) the mixer needs ``checkpoint=`` (the ``mixer.pt`` a training
run wrote, holding the Mix Block and the momentum encoder); replay is the learned mask.

The parts: :class:`MixBlock` (the Mix Block), :func:`encoder_features` (the feature map it reads),
:func:`momentum_at` / :func:`ema_update` (the momentum encoder's schedule and update), :func:`mask_loss` and the
registered mixer :class:`AutoMix`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gazemix.contract import (MixerInputError, MixResult, blend, check_pairing, check_range, draw_partners,
                              sample_beta, soft_target_ce)
from gazemix.learned.base import (LearnedMixer, average_gradients, build_network, load_mixer_checkpoint,
                                  network_spec)
from gazemix.models import frozen_copy
from gazemix.registry import register_mixer

__all__ = ["AutoMix", "MixBlock", "default_feature_index", "ema_update", "encoder_features", "mask_loss", "momentum_at"]


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


@register_mixer
class AutoMix(LearnedMixer):
    """AutoMix: a Mix Block (trained with the model) predicts the mask; label ``λ``.

    Args:
        checkpoint: a ``mixer.pt`` written by ``gazemix train --mixer automix`` (required outside training).
        alpha: Beta(alpha, alpha) for both lambdas (official 2.0).
        lam_margin: plain Mixup for the backbone when ``λ`` or ``1 - λ`` is at most this (official 0.08).
        mask_loss_weight, mask_margin: the mask loss ``w · max(|mean(M) - λ| - margin, 0)`` (official 0.1, 0.1).
        momentum, end_momentum, momentum_warmup: the momentum encoder's cosine schedule (0.999 → 0.999999,
            constant for the first 10 %).
        feature_index: the ``feature_info`` entry read by the Mix Block (default: CNN stage 3, ViT last block).
        reduction, upsampling, lam_embedding: the Mix Block (see :class:`gazemix.learned.automix.MixBlock`).
        block_lr: learning rate of the Mix Block's AdamW.
        pairing: ``"randperm"`` (official), ``"flip"`` or ``"roll"``.
    """

    name = "automix"
    summary = "learned Mix Block mask from both images' features and lambda (momentum encoder, bi-level)"
    reference = "Liu et al., AutoMix: Unveiling the Power of Mixup for Stronger Classifiers, ECCV 2022"
    wants_clean_logits = True

    def __init__(self, *, checkpoint: str | os.PathLike | None = None, alpha: float = 2.0, lam_margin: float = 0.08,
                 mask_loss_weight: float = 0.1, mask_margin: float = 0.1, momentum: float = 0.999,
                 end_momentum: float = 0.999999, momentum_warmup: float = 0.1, feature_index: int | None = None,
                 reduction: int = 2, upsampling: str = "nearest", lam_embedding: str = "mul", block_lr: float = 1e-3,
                 pairing: str = "randperm", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("alpha", alpha, 0.0, float("inf"), lo_open=True)
        check_range("lam_margin", lam_margin, 0.0, 0.5, hi_open=True)
        check_range("mask_loss_weight", mask_loss_weight, 0.0, float("inf"))
        check_range("mask_margin", mask_margin, 0.0, 1.0)
        check_range("momentum", momentum, 0.0, 1.0)
        check_range("end_momentum", end_momentum, momentum, 1.0)
        check_range("momentum_warmup", momentum_warmup, 0.0, 1.0, hi_open=True)
        check_range("block_lr", block_lr, 0.0, float("inf"), lo_open=True)
        if feature_index is not None and (not isinstance(feature_index, int) or isinstance(feature_index, bool)):
            raise ValueError(f"feature_index must be an integer index into the model's feature_info, got {feature_index!r}")
        MixBlock(1, reduction=reduction, upsampling=upsampling, lam_embedding=lam_embedding)  # validates the options
        check_pairing(pairing)
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.alpha, self.lam_margin = float(alpha), float(lam_margin)
        self.mask_loss_weight, self.mask_margin = float(mask_loss_weight), float(mask_margin)
        self.momentum, self.end_momentum, self.momentum_warmup = float(momentum), float(end_momentum), float(momentum_warmup)
        self.feature_index, self.reduction, self.upsampling = feature_index, int(reduction), upsampling
        self.lam_embedding, self.block_lr, self.pairing = lam_embedding, float(block_lr), pairing
        self._encoder: nn.Module | None = None
        self._block: MixBlock | None = None
        self._online: nn.Module | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._steps, self._total = 0, 0
        if checkpoint is not None:
            self._load(load_mixer_checkpoint(checkpoint, self.name))

    # ------------------------------------------------------------------ modules
    @property
    def block(self) -> MixBlock:
        """The Mix Block (after ``setup_training`` or ``checkpoint=``)."""
        self._require()
        return self._block

    @property
    def encoder(self) -> nn.Module:
        """The momentum encoder (frozen, eval mode)."""
        self._require()
        return self._encoder

    def _require(self) -> None:
        if self._block is None:
            raise MixerInputError("automix has no trained Mix Block: pass checkpoint=<out>/mixer.pt, the file a "
                                  "training run with mixer 'automix' writes in its output folder <out>")

    def _build(self, encoder: nn.Module) -> None:
        self.feature_index = default_feature_index(encoder) if self.feature_index is None else self.feature_index
        n = len(encoder.feature_info)
        if not -n <= self.feature_index < n:
            raise ValueError(f"feature_index={self.feature_index} is out of range for "
                             f"{type(encoder).__name__}, which has {n} feature levels")
        self.feature_index %= n
        channels = int(encoder.feature_info[self.feature_index]["num_chs"])
        self._encoder = encoder
        self._block = MixBlock(channels, reduction=self.reduction, upsampling=self.upsampling,
                               lam_embedding=self.lam_embedding)

    def _load(self, state: Mapping[str, Any]) -> None:
        opts = state["options"]  # the Mix Block is rebuilt as it was trained
        self.reduction, self.upsampling, self.lam_embedding = opts["reduction"], opts["upsampling"], opts["lam_embedding"]
        self.feature_index = int(state["feature_index"])
        self._build(build_network(state["network"], state["encoder"]))
        self._block.load_state_dict(state["block"])

    def state(self) -> dict[str, Any]:
        self._require()
        return {"options": {k: v for k, v in self.config().items() if k != "checkpoint"},
                "feature_index": self.feature_index, "network": network_spec(self._encoder),
                "encoder": self._encoder.state_dict(), "block": self._block.state_dict()}

    # ------------------------------------------------------------------ training hooks
    def setup_training(self, backbone: nn.Module, *, loader: Iterable, augment: Callable, total_steps: int,
                       device: torch.device, max_steps: int | None = None, quiet: bool = True,
                       resume: str | os.PathLike | None = None, start_step: int = 0) -> None:
        """Momentum encoder = a frozen copy of ``backbone`` (or the resumed one); the Mix Block (new, from
        ``checkpoint=``, or resumed) and its AdamW."""
        if resume is not None and os.path.isfile(resume):
            self._load(load_mixer_checkpoint(resume, self.name))
        else:
            block = self._block
            self._build(frozen_copy(backbone))
            if block is not None:
                self._block.load_state_dict(block.state_dict())
        self._encoder.to(device)
        self._block.to(device).train()
        self._online, self._total, self._steps = backbone, int(total_steps), int(start_step)
        self._optimizer = torch.optim.AdamW(self._block.parameters(), lr=self.block_lr, weight_decay=0.0)

    def extra_losses(self, images: Tensor, labels: Tensor, result: MixResult, *,
                     clean_logits: Tensor | None) -> dict[str, Tensor]:
        """Mix Block loss (through the momentum encoder) + mask loss, and the backbone's one-hot CE on clean images."""
        p = result.params
        lam, index = p["lam_mb"].to(images.device), p["index_mb"].to(images.device)
        own = self.block(p["features"], lam, index, tuple(images.shape[-2:]))
        mixed = own.to(images.dtype) * images + (1 - own.to(images.dtype)) * images[index]
        soft = self.soft(labels, images.device)
        targets = lam.view(-1, 1) * soft + (1 - lam.view(-1, 1)) * soft[index]
        losses = {"mix_block": soft_target_ce(self.encoder(mixed), targets),
                  "mask": self.mask_loss_weight * mask_loss(own, lam, self.mask_margin)}
        if clean_logits is not None:
            losses["clean_ce"] = soft_target_ce(clean_logits, soft)
        return losses

    def after_step(self) -> None:
        """Mix Block update (gradients averaged over ranks), then the momentum encoder's EMA step."""
        average_gradients(self._block)
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        self._steps += 1
        m = momentum_at(self._steps, self._total, self.momentum, self.end_momentum, self.momentum_warmup)
        ema_update(self._encoder, self._online, m)

    # ------------------------------------------------------------------ the mixing contract
    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b = images.shape[0]
        lam = sample_beta(self.alpha, 1, generator).expand(b).clone()
        params: dict[str, Any] = {"lam": lam, "index": self.partners(b, generator, self.pairing, context)}
        if self._optimizer is not None:  # training: the Mix Block's own lambda and partners
            params["lam_mb"] = sample_beta(self.alpha, 1, generator).expand(b).clone()
            params["index_mb"] = draw_partners(b, generator, self.pairing)
        return params

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        encoder, block = self.encoder, self.block
        index = params["index"].to(images.device)
        first = float(params["lam"][0])  # drawn on the CPU: no device sync
        lam = params["lam"].to(images.device, torch.float32)
        with torch.no_grad():
            feats = encoder_features(encoder, images, self.feature_index).detach()
            if self.lam_margin >= first or self.lam_margin >= 1.0 - first:
                own = lam.view(-1, 1, 1, 1).expand(-1, 1, *images.shape[-2:])  # plain Mixup (official lam_margin)
            else:
                own = block(feats, lam, index, tuple(images.shape[-2:]))
        own = own.to(images.dtype)
        mixed = blend(images, index, own)
        kept = {"features": feats} if self._optimizer is not None else {}  # training: reused by the Mix Block loss
        return self.pair_result(images, mixed, targets, index, own, lam, {**params, **kept})
