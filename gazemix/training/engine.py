"""The training and evaluation loops: one mixer call per batch through the mixing contract.

Per training batch (official TransMix / SMMix / TdAttenMix ``engine.py`` order):

1. context for the mixer: ``epoch``, human ``gaze`` maps when the data set has them, the ``model`` when the
   mixer needs it, and, when it needs ``attention``/``logits``, one eval-mode no-grad forward of the model on
   the clean batch capturing the last block's class-token attention (SMMix's extra forward);
2. ``result = mixer(images, labels, generator=g, **context)``;
3. the training forward on ``result.images`` (AMP on CUDA), capturing the attention of that same pass for
   mixers that relabel after the forward (TransMix, MixPro): ``result = mixer.relabel(result, ...)``;
4. loss = soft-target CE, plus the consistency KL and fine-grained terms on batches whose result asks for
   them (``result.params["aux_losses"]``, else the mixer's ``aux_losses``), with the clean-batch eval logits
   computed once (reused from step 1 when available).
"""

from __future__ import annotations

import math
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import Tensor, nn
from tqdm import tqdm

from gazemix.contract import Mixer, MixResult, soft_targets
from gazemix.training.data import BatchAugment
from gazemix.training.distributed import DistInfo, all_reduce_sum
from gazemix.training.losses import TokenHead, consistency_kl, fine_grained_ce, soft_target_ce
from gazemix.attention.vit import AttentionHook

__all__ = ["Classifier", "StepOutput", "Trainer", "evaluate"]


class Classifier(nn.Module):
    """The timm backbone plus, for SMMix/TdAttenMix on ViTs, the auxiliary token head (one module for DDP).

    ``forward(x, tokens=False)`` returns ``(logits, patch_tokens or None)``; with ``tokens=True`` the final
    patch tokens come from the same forward (``forward_features`` then ``forward_head``).
    """

    def __init__(self, backbone: nn.Module, token_head: TokenHead | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.token_head = token_head

    def forward(self, x: Tensor, tokens: bool = False) -> tuple[Tensor, Tensor | None]:
        if not tokens:
            return self.backbone(x), None
        feats = self.backbone.forward_features(x)
        return self.backbone.forward_head(feats), feats[:, self.backbone.num_prefix_tokens:]


@dataclass
class StepOutput:
    loss: Tensor
    parts: dict[str, float]


class Trainer:
    """Owns one training step: mixer context, forward, relabel, losses, backward, clipping and the update.

    Args:
        model: the (possibly DDP-wrapped) :class:`Classifier`.
        core: the unwrapped :class:`Classifier` (its backbone is what mixers and hooks see).
        mixer: a gazemix mixer, or ``None`` for no mixing.
        optimizer, scheduler: AdamW and timm's per-step cosine schedule.
        num_classes, label_smoothing: for the unmixed targets and the fine-grained labels.
        augment: the batch crop/flip/normalisation (gaze maps follow the pixels).
        generator: the only source of augmentation and mixing randomness.
        clip_grad: max gradient norm, or ``None``.
        amp: bfloat16 autocast on CUDA.
    """

    def __init__(self, model: nn.Module, core: Classifier, mixer: Mixer | None, optimizer: torch.optim.Optimizer,
                 scheduler: Any, augment: BatchAugment, *, num_classes: int, label_smoothing: float, generator: torch.Generator,
                 clip_grad: float | None, amp: bool, device: torch.device) -> None:
        self.model, self.core, self.mixer = model, core, mixer
        self.optimizer, self.scheduler, self.augment = optimizer, scheduler, augment
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        self.generator, self.clip_grad, self.device = generator, clip_grad, device
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else nullcontext())
        needs = set(mixer.needs) if mixer is not None else set()
        self.clean_forward = bool(needs & {"attention", "logits"})
        self.relabels = mixer is not None and mixer.relabels_after_forward
        vit_grid = getattr(getattr(core.backbone, "patch_embed", None), "grid_size", None)
        self.grid = tuple(vit_grid) if vit_grid is not None else None
        self.hook = AttentionHook(core.backbone) if (self.clean_forward or self.relabels) else None
        self.updates = 0

    def _clean_pass(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Eval-mode, no-grad logits (and class-token attention when hooked) of the clean batch."""
        was_training = self.core.training
        self.core.eval()
        with torch.no_grad(), self.autocast, self._hooked() as hook:
            logits, _ = self.core(images)
        self.core.train(was_training)
        return logits.float(), (hook.cls_attention() if hook is not None else None)

    def _hooked(self) -> AttentionHook | nullcontext:
        return self.hook if self.hook is not None else nullcontext()

    def _aux_losses(self, result: MixResult) -> set[str]:
        return set(result.params.get("aux_losses", getattr(self.mixer, "aux_losses", ())))

    def step(self, images: Tensor, labels: Tensor, gaze: Tensor | None, epoch: int) -> StepOutput:
        clean_logits = None
        if self.mixer is None:
            result = None
            images_in, targets = images, soft_targets(labels, self.num_classes, self.label_smoothing).to(images.device)
        else:
            context: dict[str, Any] = {"epoch": epoch}
            if gaze is not None:
                context["gaze"] = gaze
            if "model" in self.mixer.needs:
                context["model"] = self.core.backbone
            if self.clean_forward:
                clean_logits, attention = self._clean_pass(images)
                context.update(logits=clean_logits, attention=attention)
            result = self.mixer(images, labels, generator=self.generator, **context)
            images_in, targets = result.images, result.targets
        aux = self._aux_losses(result) if result is not None else set()
        fine = "fine_grained" in aux and self.core.token_head is not None
        with self.autocast, (self._hooked() if self.relabels else nullcontext()) as hook:
            logits, tokens = self.model(images_in, tokens=fine)
        logits = logits.float()
        if self.relabels:
            result = self.mixer.relabel(result, attention=hook.cls_attention(), logits=logits.detach())
            targets = result.targets
        loss = soft_target_ce(logits, targets)
        parts = {"ce": float(loss.detach())}
        if "consistency" in aux:
            if clean_logits is None:
                clean_logits, _ = self._clean_pass(images)
            kl = consistency_kl(logits, clean_logits, result)
            parts["consistency"] = float(kl.detach())
            loss = loss + kl
        if fine:
            own = soft_targets(labels, self.num_classes, self.label_smoothing).to(logits.device)
            fg = fine_grained_ce(self.core.token_head, tokens.float(), result, own, self.grid)
            parts["fine_grained"] = float(fg.detach())
            loss = loss + fg
        elif self.core.token_head is not None:  # keep the head in the graph so DDP sees every parameter used
            loss = loss + 0.0 * sum(p.sum() for p in self.core.token_head.parameters())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the training loss became {float(loss)} at epoch {epoch}: lower --lr or set --clip-grad")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        self.optimizer.step()
        self.updates += 1
        self.scheduler.step_update(num_updates=self.updates)
        return StepOutput(loss.detach(), parts)

    def train_epoch(self, loader: Iterable, epoch: int, info: DistInfo, *, max_steps: int | None = None,
                    quiet: bool = False) -> dict[str, float]:
        """One pass over ``loader``: mean training loss and the number of crops without gaze, over all ranks."""
        self.model.train()
        total = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, samples, empty gaze crops
        bar = tqdm(loader, desc=f"epoch {epoch + 1}", file=sys.stderr, disable=quiet or not info.is_main,
                   leave=False, dynamic_ncols=True)
        for k, batch in enumerate(bar):
            if max_steps is not None and k >= max_steps:
                break
            images, labels, gaze = _unpack(batch, self.device)
            images, gaze, empty = self.augment(images, gaze, self.generator)
            out = self.step(images, labels, gaze, epoch)
            total += torch.tensor([float(out.loss) * labels.shape[0], labels.shape[0], empty], dtype=torch.float64,
                                  device=self.device)
            bar.set_postfix(loss=f"{float(out.loss):.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
        total = all_reduce_sum(total, info)
        return {"train_loss": float(total[0] / total[1]) if total[1] > 0 else math.nan,
                "gaze_empty_crops": int(total[2])}


def _unpack(batch: Any, device: torch.device) -> tuple[Tensor, Tensor, Tensor | None]:
    images, labels = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
    gaze = batch[2].to(device, non_blocking=True) if len(batch) > 2 else None
    return images, labels, gaze


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, info: DistInfo, augment: BatchAugment, *,
             amp: bool = True) -> dict[str, float]:
    """Plain forward on un-mixed images: mean cross-entropy, top-1 and top-5 accuracy (%) over all ranks."""
    model.eval()
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp and info.device.type == "cuda" else nullcontext()
    sums = torch.zeros(4, dtype=torch.float64, device=info.device)  # loss, top1, top5, n
    for batch in loader:
        images, labels, _ = _unpack(batch, info.device)
        images = augment.normalise(images)
        with ctx:
            logits, _ = model(images)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top == labels.view(-1, 1)
        loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
        sums += torch.stack([loss.double(), hit[:, 0].sum().double(), hit.any(dim=1).sum().double(),
                             torch.tensor(float(labels.shape[0]), dtype=torch.float64, device=info.device)])
    sums = all_reduce_sum(sums, info)
    n = max(float(sums[3]), 1.0)
    return {"val_loss": float(sums[0]) / n, "top1": 100.0 * float(sums[1]) / n, "top5": 100.0 * float(sums[2]) / n}
