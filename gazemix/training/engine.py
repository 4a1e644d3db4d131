"""The training and evaluation loops: one mixer call per batch through the mixing contract.

Per training batch (order of the official TransMix / SMMix / TdAttenMix ``engine.py``):

1. the batch crop/flip (gaze maps follow the pixels) and the mixer's context: ``epoch``, human ``gaze`` maps when
   the data set has them, and the ``model`` being trained when the mixer reads it (TdAttenMix's top-down map,
   SMMix's clean-batch attention, CAM-based mixers);
2. ``result = mixer(images, labels, generator=g, **context)``;
3. the training forward on ``result.images`` (bfloat16 autocast on CUDA); mixers that relabel after the forward
   (TransMix, MixPro) get the last block's class-token attention of *that same pass* (a hook, no second
   forward): ``result = mixer.relabel(result, attention=..., logits=...)``; with TL-Align the targets are the
   class token's label carried through every block's attention of that same forward (Xiao et al., ICCV 2023);
4. loss = soft-target CE; on SMMix/TdAttenMix token-square batches also the consistency KL and, for ViTs, the
   fine-grained loss. Their teacher logits (eval mode, no grad, clean batch) come from the mixer's own forward when
   it ran one (SMMix keeps them; TdAttenMix's top-down read-out runs ``forward_features``, whose final tokens are
   captured and put through the head), so no extra forward is spent unless the mixer ran none (GazeMix).
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
from gazemix.contract import Mixer, MixResult, soft_targets
from gazemix.learned.base import LearnedMixer
from gazemix.mixers.tlalign import TLAlign, TokenLabelAligner, align_step
from gazemix.training.data import BatchAugment
from gazemix.training.distributed import DistInfo, all_reduce_sum
from gazemix.training.losses import soft_target_ce, square_mix_losses

__all__ = ["Classifier", "StepOutput", "Trainer", "evaluate"]


class Classifier(nn.Module):
    """The timm backbone plus, for SMMix/TdAttenMix on ViTs, the linear token head (one module for DDP).

    ``forward(x, tokens=False)`` returns ``(logits, final_tokens or None)``; with ``tokens=True`` the final tokens
    ``(B, P + N, D)`` come from the same forward (``forward_features`` then ``forward_head``).
    """

    def __init__(self, backbone: nn.Module, token_head: nn.Linear | None = None) -> None:
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
        square_losses: add SMMix/TdAttenMix's consistency and fine-grained terms on their square batches.
    """

    def __init__(self, model: nn.Module, core: Classifier, mixer: Mixer | None, optimizer: torch.optim.Optimizer,
                 scheduler: Any, augment: BatchAugment, *, num_classes: int, label_smoothing: float,
                 generator: torch.Generator, clip_grad: float | None, amp: bool, device: torch.device,
                 square_losses: bool = True) -> None:
        self.model, self.core, self.mixer = model, core, mixer
        self.optimizer, self.scheduler, self.augment = optimizer, scheduler, augment
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        self.generator, self.clip_grad, self.device = generator, clip_grad, device
        self.square_losses = square_losses
        self.amp = amp and device.type == "cuda"
        needs = set(mixer.needs) if mixer is not None else set()
        self.pass_model = bool(needs & {"model", "attention"})
        self.relabels = mixer is not None and mixer.relabels_after_forward
        self.vit = hasattr(core.backbone, "num_prefix_tokens") and hasattr(core.backbone, "norm")
        self.hook = AttentionHook(core.backbone) if self.relabels else None
        self.aligner = TokenLabelAligner(core.backbone) if isinstance(mixer, TLAlign) else None
        self.learned = mixer if isinstance(mixer, LearnedMixer) else None  # AutoMix, TransformMix: own losses/update
        self.updates = 0

    def _autocast(self) -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()

    def _teacher_logits(self, images: Tensor, result: MixResult, captured: _FinalTokens | None) -> Tensor:
        """Eval-mode, no-grad clean-batch logits: kept by the mixer, from its captured read-out, or a new forward."""
        kept = result.params.get("clean_logits")
        if kept is not None:
            return kept.float()
        backbone = self.core.backbone
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad(), self._autocast():
            if captured is not None and captured.tokens is not None and captured.tokens.shape[0] == images.shape[0]:
                logits = backbone.forward_head(captured.tokens)
            else:
                logits = backbone(images)
        backbone.train(was_training)
        return logits.float()

    def _aligned_forward(self, result: MixResult) -> tuple[Tensor, Tensor]:
        """TL-Align: the training forward with every block hooked; returns logits and the aligned targets."""
        backbone, state = self.core.backbone, {}
        grid = tuple(int(g) for g in backbone.patch_embed.grid_size)

        def on_block(_: int, attention: Tensor) -> None:
            coef = state.get("coef")
            if coef is None:
                coef = self.aligner.initial_coefficients(result, grid).to(attention.device)
            state["coef"] = align_step(coef, attention)

        with AttentionHook(backbone, blocks=range(self.aligner.depth), keep=False, callback=on_block), \
                self._autocast():
            logits, _ = self.model(result.images)
        c = state["coef"][:, 0].float()
        soft = result.params["soft"].to(c.device, torch.float32)
        return logits, c[:, :1] * soft[result.own_index] + c[:, 1:] * soft[result.index]

    def step(self, images: Tensor, labels: Tensor, gaze: Tensor | None, epoch: int) -> StepOutput:
        result, square = None, False
        if self.mixer is None:
            images_in = images
            targets = soft_targets(labels, self.num_classes, self.label_smoothing).to(images.device)
        else:
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
            images_in, targets = result.images, result.targets
            square = self.square_losses and bool(result.params.get("use_square", False))
            clean_logits = self._teacher_logits(images, result, captured) if square else None
        fine = square and self.core.token_head is not None
        joint = self.learned is not None and self.learned.wants_clean_logits  # clean batch in the same forward
        if self.aligner is not None:
            logits, targets = self._aligned_forward(result)
            tokens = None
        else:
            with self._autocast(), (self.hook if self.relabels else nullcontext()) as hook:
                logits, tokens = self.model(torch.cat([images_in, images]) if joint else images_in, tokens=fine)
            if joint:
                logits, clean_q = logits[:images_in.shape[0]], logits[images_in.shape[0]:].float()
        logits = logits.float()
        if self.relabels:
            result = self.mixer.relabel(result, attention=hook.cls_attention(), logits=logits.detach())
            targets = result.targets
        loss = soft_target_ce(logits, targets)
        parts = {"ce": loss.detach()}
        if self.learned is not None:
            with self._autocast():
                extra = self.learned.extra_losses(images, labels, result, clean_logits=clean_q if joint else None)
            for name, value in extra.items():
                parts[name] = value.detach()
                loss = loss + value.float()
        if square:
            extra = square_mix_losses(result, logits, clean_logits, tokens=tokens, token_head=self.core.token_head,
                                      num_prefix_tokens=int(getattr(self.core.backbone, "num_prefix_tokens", 0)))
            for name, value in extra.items():
                parts[name] = value.detach()
                loss = loss + value
        if self.core.token_head is not None and not fine:  # keep the head in the graph: DDP expects every parameter
            loss = loss + 0.0 * sum(p.sum() for p in self.core.token_head.parameters())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        self.optimizer.step()
        if self.learned is not None:
            self.learned.after_step()
        self.updates += 1
        self.scheduler.step_update(num_updates=self.updates)
        return StepOutput(loss.detach(), parts)

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
                                             f"lower --lr or set --clip-grad")
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
        total = all_reduce_sum(total, info)
        if not math.isfinite(float(total[0])):
            raise FloatingPointError(f"the training loss became {float(total[0])} in epoch {epoch + 1}: lower --lr or "
                                     f"set --clip-grad")
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
