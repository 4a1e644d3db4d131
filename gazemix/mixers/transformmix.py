"""TransformMix (Cheung & Yeung, "TransformMix: Learning Transformation and Mixing Strategies from Data",
arXiv 2403.12429, 2024): a mixing module learned from a teacher's class activation maps transforms both images
and predicts the mask; after a search phase it is a fixed augmentation.

No official code was found, and the paper's method section could not be read: the architecture, transform family,
loss and label rule here are **UNCONFIRMED** (see :mod:`gazemix.learned.transformmix`). The pipeline follows what
is confirmed: (1) a teacher trained on the target data (``gazemix train --mixer none``), (2) the search phase —
the mixing module is trained against the frozen teacher (``gazemix train --mixer transformmix --mixer-opt
teacher=<teacher>/best.pt`` runs it before the first epoch), (3) the new model is trained with the frozen module.

The output is ``M ⊙ T_i(x_i) + (1 - M) ⊙ T_j(x_j)``: both sources carry an
:class:`~gazemix.learned.transformmix.AffineWarp`, so replay moves gaze mass like pixels (mass outside the
shown part of an image is dropped, as for a crop). Outside training it needs ``checkpoint=`` (the ``mixer.pt``
holding the module and the teacher, whose CAMs it reads at every call).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from gazemix.contract import MixerInputError, MixResult, MixSource, check_pairing, check_range, soft_target_ce, sample_beta
from gazemix.learned.base import (LearnedMixer, MixerCheckpointError, average_gradients, build_network, frozen_copy,
                                  load_mixer_checkpoint, network_spec)
from gazemix.learned.transformmix import AffineWarp, MixingModule, teacher_saliency
from gazemix.registry import register_mixer

__all__ = ["TransformMix", "load_teacher"]


def load_teacher(path: str | os.PathLike) -> nn.Module:
    """A frozen teacher from a ``gazemix train`` checkpoint (``best.pt``/``last.pt``)."""
    from gazemix.training.model import build_model

    if not os.path.isfile(path):
        raise MixerCheckpointError(f"teacher={str(path)!r}: no such file; train a teacher first "
                                   f"(`gazemix train --mixer none --out runs/teacher`) and pass runs/teacher/best.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        cfg = state["config"]
        model = build_model(cfg["model"], int(state["num_classes"]), int(cfg["img_size"]), patch_size=cfg.get("patch_size"))
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise MixerCheckpointError(f"teacher={str(path)!r} is not a gazemix training checkpoint of a model "
                                   f"({type(err).__name__}: {err}); pass the best.pt of a `gazemix train` run") from err
    return frozen_copy(model, copy=False)


@register_mixer
class TransformMix(LearnedMixer):
    """TransformMix: learned transforms and mask from a teacher's CAMs; label ``λ`` (UNCONFIRMED details).

    Args:
        checkpoint: a ``mixer.pt`` written by ``gazemix train --mixer transformmix`` (required outside training).
        teacher: a ``gazemix train`` checkpoint of the teacher, for the search phase.
        alpha: ``λ ~ Beta(alpha, alpha)`` per sample.
        search_epochs: passes over the training set in the search phase.
        search_lr: Adam learning rate of the search.
        mask_loss_weight, mask_margin: ``w · max(|mean(M_b) - λ_b| - margin, 0)`` in the search loss.
        work_size, width: the mixing module (see :class:`gazemix.learned.transformmix.MixingModule`).
        pairing: ``"randperm"``, ``"flip"`` or ``"roll"``.
    """

    name = "transformmix"
    summary = "learned affine transforms + mask from a teacher's CAMs (search phase, then fixed)"
    reference = "Cheung & Yeung, TransformMix: Learning Transformation and Mixing Strategies from Data, arXiv 2403.12429"

    def __init__(self, *, checkpoint: str | os.PathLike | None = None, teacher: str | os.PathLike | None = None,
                 alpha: float = 1.0, search_epochs: int = 1, search_lr: float = 1e-3, mask_loss_weight: float = 1.0,
                 mask_margin: float = 0.05, work_size: int = 32, width: int = 32, pairing: str = "randperm",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_range("alpha", alpha, 0.0, float("inf"), lo_open=True)
        if not isinstance(search_epochs, int) or search_epochs < 1:
            raise ValueError(f"search_epochs must be a positive integer, got {search_epochs!r}")
        check_range("search_lr", search_lr, 0.0, float("inf"), lo_open=True)
        check_range("mask_loss_weight", mask_loss_weight, 0.0, float("inf"))
        check_range("mask_margin", mask_margin, 0.0, 1.0)
        MixingModule(work_size=work_size, width=width)  # validates the options
        check_pairing(pairing)
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.teacher = None if teacher is None else str(teacher)
        self.alpha, self.search_epochs, self.search_lr = float(alpha), int(search_epochs), float(search_lr)
        self.mask_loss_weight, self.mask_margin = float(mask_loss_weight), float(mask_margin)
        self.work_size, self.width, self.pairing = int(work_size), int(width), pairing
        self._teacher: nn.Module | None = None
        self._module: MixingModule | None = None
        if checkpoint is not None:
            self._load(load_mixer_checkpoint(checkpoint, self.name))

    # ------------------------------------------------------------------ modules
    @property
    def module(self) -> MixingModule:
        if self._module is None or self._teacher is None:
            raise MixerInputError("transformmix has no mixing module: pass checkpoint=<out>/mixer.pt from "
                                  "`gazemix train --mixer transformmix --mixer-opt teacher=<teacher>/best.pt --out <out>`")
        return self._module

    def use_teacher(self, teacher: nn.Module) -> None:
        """Set the teacher network directly (frozen copy) and start a fresh mixing module."""
        self._teacher = frozen_copy(teacher)
        self._module = MixingModule(int(teacher.patch_embed.proj.in_channels) if hasattr(teacher, "patch_embed")
                                    else 3, work_size=self.work_size, width=self.width)

    def _load(self, state: Mapping[str, Any]) -> None:
        self._teacher = build_network(state["network"], state["teacher"])
        self._module = MixingModule(int(state["in_channels"]), work_size=int(state["work_size"]),
                                    width=int(state["width"]))
        self._module.load_state_dict(state["module"])
        self._module.eval()

    def state(self) -> dict[str, Any]:
        module = self.module
        return {"options": {k: v for k, v in self.config().items() if k not in ("checkpoint", "teacher")},
                "network": network_spec(self._teacher), "teacher": self._teacher.state_dict(),
                "module": module.state_dict(), "in_channels": (module.mask[0].in_channels - 3) // 2,
                "work_size": module.work_size, "width": module.mask[0].out_channels}

    # ------------------------------------------------------------------ search phase
    def search_loss(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """One search-phase loss on a batch: the frozen teacher on the mixed batch, and the mask-area term."""
        params = self.sample(images, labels, generator=generator)
        result, own = self._mix(images, labels, params)
        losses = {"teacher_ce": soft_target_ce(self._teacher(result.images), result.targets)}
        area = own.mean(dim=(1, 2, 3))
        gap = (area - result.lam).abs().sub(self.mask_margin).clamp_min(0.0)
        losses["mask"] = self.mask_loss_weight * gap.mean()
        return losses

    def setup_training(self, backbone: nn.Module, *, loader: Iterable, augment: Callable, total_steps: int,
                       device: torch.device, max_steps: int | None = None, quiet: bool = True,
                       resume: str | os.PathLike | None = None, start_step: int = 0) -> None:
        """Load a resumed/``checkpoint=`` module, or run the search phase against ``teacher=``; then freeze it."""
        if resume is not None and os.path.isfile(resume):
            self._load(load_mixer_checkpoint(resume, self.name))
        elif self._module is None:
            if self.teacher is None:
                raise MixerInputError("transformmix needs a teacher for its search phase: train one first "
                                      "(`gazemix train --mixer none --out runs/teacher`) and pass --mixer-opt "
                                      "teacher=runs/teacher/best.pt, or reuse a searched module with --mixer-opt "
                                      "checkpoint=<out>/mixer.pt")
            self.use_teacher(load_teacher(self.teacher))
            self._search(loader, augment, device, max_steps, quiet)
        self._teacher.to(device)
        self.module.to(device).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def _search(self, loader: Iterable, augment: Callable, device: torch.device, max_steps: int | None,
                quiet: bool) -> None:
        self._teacher.to(device)
        module = self.module.to(device).train()
        opt = torch.optim.Adam(module.parameters(), lr=self.search_lr)
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=self.generator)))
        for epoch in range(self.search_epochs):
            total, n = 0.0, 0
            for k, batch in enumerate(loader):
                if max_steps is not None and k >= max_steps:
                    break
                images, labels = batch[0].to(device), batch[1].to(device)
                images, _, _ = augment(images, None, g)
                loss = sum(self.search_loss(images, labels, g).values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                average_gradients(module)
                opt.step()
                total, n = total + float(loss.detach()), n + 1
            if not quiet:
                print(f"transformmix search epoch {epoch + 1}/{self.search_epochs}: loss {total / max(n, 1):.4f}",
                      file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ the mixing contract
    def sample(self, images: Tensor, targets: Tensor, *, generator: torch.Generator, **context: Any) -> dict[str, Any]:
        b = images.shape[0]
        return {"lam": sample_beta(self.alpha, b, generator), "index": self.partners(b, generator, self.pairing, context)}

    def _mix(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> tuple[MixResult, Tensor]:
        module = self.module
        b = images.shape[0]
        index = params["index"].to(images.device)
        lam = params["lam"].to(images.device, torch.float32)
        saliency = teacher_saliency(self._teacher, images, targets)
        theta_i, theta_j, own = module(images, saliency, index, lam)
        warp_i, warp_j = AffineWarp.from_theta(theta_i), AffineWarp.from_theta(theta_j)
        own = own.to(images.dtype)
        mixed = own * warp_i.apply(images) + (1 - own) * warp_j.apply(images[index])
        soft = self.soft(targets, images.device)
        sources = (MixSource(torch.arange(b, device=images.device), own, lam, warp_i),
                   MixSource(index, 1 - own, 1 - lam, warp_j))
        result = MixResult(images=mixed, targets=lam.view(-1, 1) * soft + (1 - lam.view(-1, 1)) * soft[index],
                           sources=sources, params=dict(params), mixer=self.name)
        return result, own

    def apply(self, images: Tensor, targets: Tensor, params: Mapping[str, Any]) -> MixResult:
        with torch.no_grad():
            result, _ = self._mix(images, targets, params)
        return result
