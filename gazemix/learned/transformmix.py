"""TransformMix (Cheung & Yeung, "TransformMix: Learning Transformation and Mixing Strategies from Data",
arXiv 2403.12429, 2024): a mixing module learned from a teacher's class activation maps transforms both images
and predicts the mask; after a search phase it is a fixed augmentation.

Pipeline: (1) a teacher trained on the target data (a training run without mixing), (2) the search phase — the
mixing module is trained against the frozen teacher (``teacher=<teacher run>/best.pt``; ``gazemix train`` runs it
before the first epoch), (3) the new model is trained with the frozen module. The module
(:class:`MixingModule`): a spatial transformer (a similarity transform per image, scale ``2^±1``, rotation
``±30°``, shift ``±0.5`` of the half-side, bounded by ``tanh``, starting at the identity) and a mask network;
both see ``(x_i, s_i, x_j, s_j, λ)`` at a 32 px working resolution (images, teacher CAMs min-max scaled to
[0, 1], the target lambda as a constant plane); the mask network sees the transformed images and CAMs, and its
upsampled sigmoid is the own share. Search loss: the frozen teacher's soft CE on the mixed batch against
``λ``-mixed labels plus ``w · max(|mean(M_b) - λ_b| - margin, 0)`` per sample. Label weight ``λ ~ Beta(α, α)``
per sample.

The output is ``M ⊙ T_i(x_i) + (1 - M) ⊙ T_j(x_j)``: both sources carry an :class:`AffineWarp`, so replay moves
gaze mass like pixels (mass outside the shown part of an image is dropped, as for a crop). Outside training the
mixer needs ``checkpoint=`` (the ``mixer.pt`` holding the module and the teacher, whose CAMs it reads at every
call).

No official code was found: the architecture, transform family, loss and label rule are our design
(docs/methods/transformmix.md lists what is confirmed and what is a choice).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gazemix.attention.cam import class_activation_map
from gazemix.attention.vit import patch_attention
from gazemix.contract import (MixerInputError, MixResult, MixSource, check_pairing, check_range, sample_beta,
                              scale_to_mass, soft_target_ce)
from gazemix.learned.base import (LearnedMixer, MixerCheckpointError, average_gradients, build_network,
                                  load_mixer_checkpoint, network_spec)
from gazemix.models import build_model, frozen_copy
from gazemix.registry import register_mixer

__all__ = ["AffineWarp", "MixingModule", "TransformMix", "load_teacher", "similarity_theta", "teacher_saliency"]


@dataclass(frozen=True)
class AffineWarp:
    """Show a source image through an affine sampling grid (``F.affine_grid``, ``align_corners=False``).

    Output pixel at normalised position ``p`` shows the source at ``src[b] @ (p, 1)``; positions that fall
    outside the source are 0. The fields are named ``src``/``dst`` so :meth:`gazemix.contract.MixResult.to`
    moves them like every other warp.

    Args:
        src: ``(B, 2, 3)`` the sampling affine (output → source, normalised coordinates).
        dst: ``(B, 2, 3)`` its inverse (source → output), used to find which source pixels are shown.
    """

    src: Tensor
    dst: Tensor

    @classmethod
    def from_theta(cls, theta: Tensor) -> "AffineWarp":
        full = torch.cat([theta, theta.new_tensor([0.0, 0.0, 1.0]).expand(theta.shape[0], 1, 3)], dim=1)
        return cls(src=theta, dst=torch.linalg.inv(full.double()).to(theta.dtype)[:, :2])

    def apply(self, x: Tensor) -> Tensor:
        """Warp pixels ``x (B, C, H, W)`` (bilinear, zeros outside the source)."""
        theta = self.src.to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def apply_density(self, g: Tensor) -> Tensor:
        """Warp maps ``(B, C, H, W)`` so the output holds exactly the mass ``g`` has on the source pixels shown."""
        h, w = g.shape[-2:]
        shape = self.apply(g).clamp_min(0)
        ys = (torch.arange(h, device=g.device, dtype=g.dtype) + 0.5) / h * 2 - 1
        xs = (torch.arange(w, device=g.device, dtype=g.dtype) + 0.5) / w * 2 - 1
        pts = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w), torch.ones(h, w, device=g.device,
                                                                                            dtype=g.dtype)], dim=-1)
        out = torch.einsum("bij,hwj->bhwi", self.dst.to(device=g.device, dtype=g.dtype), pts)  # where each lands
        shown = (out.abs() <= 1).all(dim=-1).unsqueeze(1)
        return scale_to_mass(shape, (g * shown).sum(dim=(2, 3)))

    def index_select(self, rows: Tensor) -> "AffineWarp":
        return dataclasses.replace(self, src=self.src[rows], dst=self.dst[rows])


def similarity_theta(a: Tensor, *, max_log2_scale: float = 1.0, max_rotation: float = math.pi / 6,
                     max_shift: float = 0.5) -> Tensor:
    """Raw outputs ``a (B, 4)`` → sampling affines ``(B, 2, 3)``; ``a = 0`` is the identity.

    Scale ``2^(max_log2_scale tanh a0)`` (below 1 zooms in), rotation ``max_rotation tanh a1``, shift
    ``max_shift tanh(a2, a3)`` in normalised coordinates.
    """
    scale = torch.exp2(max_log2_scale * torch.tanh(a[:, 0]))
    rot = max_rotation * torch.tanh(a[:, 1])
    shift = max_shift * torch.tanh(a[:, 2:4])
    cos, sin = scale * torch.cos(rot), scale * torch.sin(rot)
    row0 = torch.stack([cos, -sin, shift[:, 0]], dim=1)
    row1 = torch.stack([sin, cos, shift[:, 1]], dim=1)
    return torch.stack([row0, row1], dim=1)


class MixingModule(nn.Module):
    """Spatial transformer + mask prediction network (our layout; see the module docstring).

    Args:
        in_channels: image channels.
        work_size: side of the working resolution both networks run at.
        width: channels of the convolutions.
    """

    def __init__(self, in_channels: int = 3, *, work_size: int = 32, width: int = 32) -> None:
        super().__init__()
        if work_size < 4 or width < 1:
            raise ValueError(f"work_size must be >= 4 and width >= 1, got {work_size}, {width}")
        c = 2 * (in_channels + 1) + 1  # both images, both CAMs, the lambda plane
        self.work_size = int(work_size)
        self.localise = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 8))
        nn.init.zeros_(self.localise[-1].weight)
        nn.init.zeros_(self.localise[-1].bias)
        self.mask = nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 1))

    def forward(self, images: Tensor, saliency: Tensor, index: Tensor, lam: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(theta_own, theta_partner, own_share)``: affines ``(B, 2, 3)`` and the own share ``(B, 1, H, W)``."""
        b, _, h, w = images.shape
        s = self.work_size
        small = F.interpolate(torch.cat([images, saliency.to(images.dtype)], dim=1), size=(s, s), mode="bilinear",
                              align_corners=False, antialias=True)
        plane = lam.to(small).view(b, 1, 1, 1).expand(b, 1, s, s)
        pair = torch.cat([small, small[index], plane], dim=1)
        a = self.localise(pair)
        theta_i, theta_j = similarity_theta(a[:, :4]), similarity_theta(a[:, 4:])
        warped_i = AffineWarp(theta_i, theta_i).apply(small)  # dst unused by apply
        warped_j = AffineWarp(theta_j, theta_j).apply(small[index])
        logits = self.mask(torch.cat([warped_i, warped_j, plane], dim=1))
        own = torch.sigmoid(F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False))
        return theta_i, theta_j, own


def teacher_saliency(teacher: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """The teacher's class activation map of each image's label, min-max scaled to [0, 1], ``(B, 1, H, W)``.

    CNNs: CAM (Zhou et al., 2016; :func:`gazemix.attention.cam.class_activation_map`); ViTs: the last block's
    class-token attention over patches (our substitute: a ViT has no CAM), upsampled bilinearly.
    """
    with torch.no_grad():
        if hasattr(teacher, "patch_embed"):
            _, grid = patch_attention(teacher, images)
            cam = F.interpolate(grid.unsqueeze(1).float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
        else:
            cam = class_activation_map(teacher, images, labels).float()
        lo = cam.amin(dim=(2, 3), keepdim=True)
        hi = cam.amax(dim=(2, 3), keepdim=True)
        return ((cam - lo) / (hi - lo).clamp_min(1e-12)).to(images.dtype)


def load_teacher(path: str | os.PathLike) -> nn.Module:
    """A frozen teacher from a ``gazemix train`` checkpoint (``best.pt``/``last.pt``)."""
    if not os.path.isfile(path):
        raise MixerCheckpointError(f"teacher={str(path)!r}: no such file; train a teacher first (a training run "
                                   f"without mixing) and pass the best.pt in its output folder")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        cfg = state["config"]
        model = build_model(cfg["model"], int(state["num_classes"]), int(cfg["img_size"]), patch_size=cfg.get("patch_size"))
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise MixerCheckpointError(f"teacher={str(path)!r} is not a gazemix training checkpoint of a model "
                                   f"({type(err).__name__}: {err}); pass the best.pt of a gazemix training run") from err
    return frozen_copy(model, copy=False)


@register_mixer
class TransformMix(LearnedMixer):
    """TransformMix: learned transforms and mask from a teacher's CAMs; label ``λ`` (details are our design).

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
            raise MixerInputError("transformmix has no mixing module: pass checkpoint=<out>/mixer.pt, the file a "
                                  "training run with mixer 'transformmix' and teacher=<teacher run>/best.pt writes in "
                                  "its output folder <out>")
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
                raise MixerInputError("transformmix needs a teacher for its search phase: train one first (a "
                                      "training run without mixing) and pass teacher=<teacher run>/best.pt, or reuse "
                                      "a searched module with checkpoint=<out>/mixer.pt")
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
