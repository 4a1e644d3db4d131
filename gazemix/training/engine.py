"""The training and evaluation loops: one mixer call per batch through the mixing contract.

Per training batch (order of the official TransMix / SMMix / TdAttenMix ``engine.py``):

1. the batch crop/flip (gaze maps follow the pixels) and the mixer's context: ``epoch``, human ``gaze`` maps when
   the data set has them (also as ``saliency`` for mixers that need one), and the ``model`` being trained when the
   mixer reads it;
2. ``result = mixer(images, labels, generator=g, **context)``; the mixer's training hooks
   (:class:`~gazemix.contract.TrainingHooks`) say what this batch needs from the forward
   (:class:`~gazemix.contract.ForwardRequest`): eval-mode no-grad teacher logits of the clean batch (taken from the
   mixer's own read-out when it ran one, so no extra forward is spent unless it ran none), the clean batch in the
   same training forward, the final features;
3. the training forward on ``result.images`` (bfloat16 autocast on CUDA); mixers that relabel after the forward
   (TransMix, MixPro) get the last block's class-token attention of *that same pass* (a hook, no second forward):
   ``result = mixer.relabel(result, attention=..., logits=...)``; hooks that track targets (TL-Align) wrap the
   forward and supply the targets;
4. loss = soft-target CE plus the hooks' extra terms (:meth:`~gazemix.contract.TrainingHooks.losses`), one
   backward, clipping, the optimiser step, then the hooks' own update (:meth:`~gazemix.contract.TrainingHooks.after_step`).
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

from gazemix.attention.vit import AttentionHook
from gazemix.contract import ForwardOutputs, ForwardRequest, Mixer, MixResult, TrainingHooks, soft_target_ce, soft_targets
from gazemix.models import eval_no_grad
from gazemix.training.data import BatchAugment
from gazemix.training.distributed import DistInfo, all_reduce_sum

__all__ = ["Classifier", "StepOutput", "Trainer", "evaluate"]


class Classifier(nn.Module):
    """The timm backbone plus the module a mixer's training hooks asked for (e.g. SMMix's linear token head), one
    module for DDP.

    ``forward(x, tokens=False)`` returns ``(logits, final features or None)``; with ``tokens=True`` the final
    features (ViT tokens ``(B, P + N, D)``, a CNN's map ``(B, C, h, w)``) come from the same forward
    (``forward_features`` then ``forward_head``).
    """

    def __init__(self, backbone: nn.Module, token_head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.token_head = token_head

    def forward(self, x: Tensor, tokens: bool = False) -> tuple[Tensor, Tensor | None]:
        if not tokens:
            return self.backbone(x), None
        feats = self.backbone.forward_features(x)
        return self.backbone.forward_head(feats), feats


class _FinalTokens:
    """Capture the output of a ViT's final ``norm`` (the output of ``forward_features``) while active."""

    def __init__(self, backbone: nn.Module) -> None:
        self.norm = backbone.norm
        self.tokens: Tensor | None = None
        self._handle: Any = None

    def __enter__(self) -> "_FinalTokens":
        self.tokens = None
        self._handle = self.norm.register_forward_hook(self._hook)
        return self

    def _hook(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        if not torch.is_grad_enabled():  # only the mixer's no-grad eval read-out, never a training forward
            self.tokens = output.detach()

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


@dataclass
class StepOutput:
    """The detached loss and its terms (tensors: reading them is left to the caller, so a step never syncs)."""

    loss: Tensor
    parts: dict[str, Tensor]


class Trainer:
    """Owns one training step: mixer context, forward, relabel, losses, backward, clipping and the update.

    Args:
        model: the (possibly DDP-wrapped) :class:`Classifier`.
        core: the unwrapped :class:`Classifier` (its backbone is what mixers and hooks see).
        mixer: a gazemix mixer, or ``None`` for no mixing.
        optimizer, scheduler: AdamW and timm's per-step cosine schedule.
        augment: the batch crop/flip/normalisation (gaze maps follow the pixels).
        num_classes, label_smoothing: for the unmixed targets.
        generator: the only source of augmentation and mixing randomness.
        clip_grad: max gradient norm, or ``None``.
        amp: bfloat16 autocast on CUDA.
        square_losses: keep the optional auxiliary loss terms of the mixer's training hooks
            (``Mixer.training_hooks(auxiliary_losses=...)``).
    """

    def __init__(self, model: nn.Module, core: Classifier, mixer: Mixer | None, optimizer: torch.optim.Optimizer,
                 scheduler: Any, augment: BatchAugment, *, num_classes: int, label_smoothing: float,
                 generator: torch.Generator, clip_grad: float | None, amp: bool, device: torch.device,
                 square_losses: bool = True) -> None:
        self.model, self.core, self.mixer = model, core, mixer
        self.optimizer, self.scheduler, self.augment = optimizer, scheduler, augment
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        self.generator, self.clip_grad, self.device = generator, clip_grad, device
        self.amp = amp and device.type == "cuda"
        self.hooks = mixer.training_hooks(auxiliary_losses=square_losses) if mixer is not None else TrainingHooks()
        needs = set(mixer.needs) if mixer is not None else set()
        self.pass_model = bool(needs & {"model", "attention"})
        self.relabels = mixer is not None and mixer.relabels_after_forward
        self.vit = hasattr(core.backbone, "num_prefix_tokens") and hasattr(core.backbone, "norm")
        self.attention = AttentionHook(core.backbone) if self.relabels else None
        self.updates = 0

    def _autocast(self) -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()

    # -- the step, in its four parts --
    def step(self, images: Tensor, labels: Tensor, gaze: Tensor | None, epoch: int) -> StepOutput:
        """One optimiser step on a batch: mix, forward, losses, update. Returns the detached loss and its terms."""
        if self.mixer is None:
            targets = soft_targets(labels, self.num_classes, self.label_smoothing).to(images.device)
            with self._autocast():
                logits, _ = self.model(images)
            loss = soft_target_ce(logits.float(), targets)
            parts = {"ce": loss.detach()}
        else:
            result, request, teacher = self._mix(images, labels, gaze, epoch)
            out, targets = self._forward(images, labels, result, request, teacher)
            loss, parts = self._losses(out, targets)
        self._update(self._keep_token_head(loss))
        return StepOutput(loss.detach(), parts)

    def _mix(self, images: Tensor, labels: Tensor, gaze: Tensor | None,
             epoch: int) -> tuple[MixResult, ForwardRequest, Tensor | None]:
        """The mixer call with its context, what the batch asks of the forward, and the teacher logits it needs."""
        context: dict[str, Any] = {"epoch": epoch}
        if gaze is not None:
            context["gaze"] = gaze
            if "saliency" in self.mixer.needs:  # human gaze as the saliency of saliency-guided mixers
                context["saliency"] = gaze
        if self.pass_model:
            context["model"] = self.core.backbone
        with (_FinalTokens(self.core.backbone) if self.pass_model and self.vit else nullcontext()) as captured, \
                (self._autocast() if self.pass_model else nullcontext()):  # the mixer's model read-outs in bf16
            result = self.mixer(images, labels, generator=self.generator, **context)
        request = self.hooks.request(result)
        teacher = self._teacher_logits(images, request, captured) if request.teacher_logits else None
        return result, request, teacher

    def _teacher_logits(self, images: Tensor, request: ForwardRequest, captured: _FinalTokens | None) -> Tensor:
        """Eval-mode, no-grad clean-batch logits: kept by the mixer, from its captured read-out, or a new forward."""
        if request.kept_teacher is not None:
            return request.kept_teacher.float()
        backbone = self.core.backbone
        with eval_no_grad(backbone), self._autocast():
            if captured is not None and captured.tokens is not None and captured.tokens.shape[0] == images.shape[0]:
                logits = backbone.forward_head(captured.tokens)
            else:
                logits = backbone(images)
        return logits.float()

    def _forward(self, images: Tensor, labels: Tensor, result: MixResult, request: ForwardRequest,
                 teacher: Tensor | None) -> tuple[ForwardOutputs, Tensor]:
        """The training forward on the mixed batch (and what the request adds); then the relabel. Returns what the
        hooks' losses read, and the targets."""
        clean = features = None
        if self.hooks.tracks_targets:
            logits, targets = self._aligned_forward(result)
        else:
            n = result.images.shape[0]
            batch = torch.cat([result.images, images]) if request.clean_logits else result.images
            with self._autocast(), (self.attention if self.relabels else nullcontext()) as hook:
                logits, features = self.model(batch, tokens=request.features)
            if request.clean_logits:  # the clean batch went through the same forward
                logits, clean = logits[:n], logits[n:].float()
                features = None if features is None else features[:n]
            targets = result.targets
        logits = logits.float()
        if self.relabels:
            result = self.mixer.relabel(result, attention=hook.cls_attention(), logits=logits.detach())
            targets = result.targets
        out = ForwardOutputs(images=images, labels=labels, result=result, logits=logits, model=self.core.backbone,
                             clean_logits=clean, teacher_logits=teacher, features=features,
                             token_head=self.core.token_head, autocast=self._autocast)
        return out, targets

    def _aligned_forward(self, result: MixResult) -> tuple[Tensor, Tensor]:
        """The training forward inside the hooks' target tracker (TL-Align): the logits and the tracked targets."""
        with self.hooks.track_targets(self.core.backbone, result) as tracked, self._autocast():
            logits, _ = self.model(result.images)
        return logits, tracked.targets

    def _losses(self, out: ForwardOutputs, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Soft-target CE plus the hooks' extra terms; the total and each term, detached."""
        loss = soft_target_ce(out.logits, targets)
        parts = {"ce": loss.detach()}
        for name, value in self.hooks.losses(out).items():
            parts[name] = value.detach()
            loss = loss + value.float()
        return loss, parts

    def _keep_token_head(self, loss: Tensor) -> Tensor:
        """Add the token head to the graph with weight 0 (DDP expects a gradient for every parameter on every step,
        also on steps whose losses did not use the head); the loss and every gradient are unchanged."""
        if self.core.token_head is None:
            return loss
        return loss + 0.0 * sum(p.sum() for p in self.core.token_head.parameters())

    def _update(self, loss: Tensor) -> None:
        """Backward, clipping, the optimiser step, the hooks' own update, the schedule."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        self.optimizer.step()
        self.hooks.after_step()
        self.updates += 1
        self.scheduler.step_update(num_updates=self.updates)

    def train_epoch(self, loader: Iterable, epoch: int, info: DistInfo, *, max_steps: int | None = None,
                    quiet: bool = False, log_every: int = 20) -> dict[str, float]:
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
            total += torch.stack([out.loss.double() * labels.shape[0], total.new_tensor(labels.shape[0]),
                                  empty.to(total)])
            if k % log_every == 0:  # the only host sync of the loop
                loss = float(out.loss)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"the training loss became {loss} at epoch {epoch + 1}, step {k + 1}: "
                                             f"lower the learning rate or clip the gradients")
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
        total = all_reduce_sum(total, info)
        if not math.isfinite(float(total[0])):
            raise FloatingPointError(f"the training loss became {float(total[0])} in epoch {epoch + 1}: lower the "
                                     f"learning rate or clip the gradients")
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
