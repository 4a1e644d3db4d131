"""What the learned mixers share: the :class:`LearnedMixer` methods a trainer drives, and ``mixer.pt`` checkpoints.

A learned mixer is a :class:`~gazemix.contract.Mixer` with weights. A trainer drives it through its training hooks
(:class:`LearnedMixerHooks`, from :meth:`LearnedMixer.training_hooks`), which call four methods:
:meth:`LearnedMixer.setup_training` before the first epoch (AutoMix builds its momentum encoder; TransformMix runs
its search phase), :meth:`LearnedMixer.extra_losses` inside every training step (added to the classification loss
before the one backward), :meth:`LearnedMixer.after_step` after the optimiser step (the mixer's own update), and
:meth:`LearnedMixer.save` at the end of every epoch (``<run folder>/mixer.pt``). A saved file is reloaded with the
mixer option ``checkpoint=PATH``; it holds the mixer's module weights and the network it reads features or
saliency from (architecture and weights), so scoring needs no other file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gazemix.contract import ForwardOutputs, ForwardRequest, Mixer, MixerInputError, MixResult, TrainingHooks
from gazemix.models import build_model, frozen_copy

__all__ = ["LearnedMixer", "LearnedMixerHooks", "MixerCheckpointError", "STATE_FILE", "average_gradients",
           "build_network", "load_mixer_checkpoint", "network_spec"]

FORMAT = 1
STATE_FILE = "mixer.pt"
"""The name of a learned mixer's checkpoint in a training run's folder."""


class MixerCheckpointError(MixerInputError):
    """A ``mixer.pt`` that cannot be used; the message names the file and what to pass instead."""


class LearnedMixer(Mixer):
    """A mixer with trainable weights, trained with the model through :class:`LearnedMixerHooks`."""

    content_independent = False

    def training_hooks(self, *, auxiliary_losses: bool = True) -> TrainingHooks:
        return LearnedMixerHooks(self)

    def setup_training(self, backbone: nn.Module, *, loader: Iterable, augment: Callable, total_steps: int,
                       device: torch.device, max_steps: int | None = None, quiet: bool = True,
                       resume: str | os.PathLike | None = None, start_step: int = 0) -> None:
        """Prepare for training the model ``backbone`` (momentum encoder, search phase, optimiser).

        Args:
            backbone: the timm model being trained (unwrapped from DDP).
            loader, augment: the training batches and the trainer's batch augmentation (for a search phase).
            total_steps: optimiser steps of the whole run (for schedules).
            device: where the run trains.
            max_steps: cap on steps per epoch (smoke runs), also applied to a search phase.
            quiet: no progress output.
            resume: a ``mixer.pt`` of the run being resumed; used when it exists.
            start_step: optimiser steps already taken (a resumed run).
        """

    def extra_losses(self, images: Tensor, labels: Tensor, result: MixResult, *,
                     clean_logits: Tensor | None) -> dict[str, Tensor]:
        """The mixer's own loss terms for this step (added to the classification loss)."""
        return {}

    wants_clean_logits: bool = False
    """True when :meth:`extra_losses` needs the trained model's logits on the clean batch (AutoMix's one-hot CE);
    the trainer then runs the clean batch in the same forward as the mixed one."""

    def after_step(self) -> None:
        """The mixer's own update after the model's optimiser step."""

    def state(self) -> dict[str, Any]:
        """Everything :meth:`save` writes (the registered name, options, module and network weights)."""
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state` to ``path`` atomically (a temporary name, then a rename)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save({"format": FORMAT, "mixer": self.name, **self.state()}, tmp)
        os.replace(tmp, path)


class LearnedMixerHooks(TrainingHooks):
    """A learned mixer's part in training: its setup, its own losses (in the trainer's mixed precision), its update
    after each optimiser step, and its ``mixer.pt`` in the run folder (read back on resume)."""

    def __init__(self, mixer: LearnedMixer) -> None:
        self.mixer = mixer

    def setup(self, model: nn.Module, *, loader: Iterable, augment: Callable, total_steps: int,
              device: torch.device, max_steps: int | None = None, quiet: bool = True,
              state_dir: str | os.PathLike | None = None, resume: bool = False, start_step: int = 0) -> None:
        saved = Path(state_dir) / STATE_FILE if resume and state_dir is not None else None
        self.mixer.setup_training(model, loader=loader, augment=augment, total_steps=total_steps, device=device,
                                  max_steps=max_steps, quiet=quiet, resume=saved, start_step=start_step)

    def request(self, result: MixResult) -> ForwardRequest:
        return ForwardRequest(clean_logits=self.mixer.wants_clean_logits)

    def losses(self, out: ForwardOutputs) -> dict[str, Tensor]:
        with out.autocast():
            return self.mixer.extra_losses(out.images, out.labels, out.result, clean_logits=out.clean_logits)

    def after_step(self) -> None:
        self.mixer.after_step()

    def save(self, state_dir: str | os.PathLike) -> None:
        self.mixer.save(Path(state_dir) / STATE_FILE)


def load_mixer_checkpoint(path: str | os.PathLike, name: str) -> dict[str, Any]:
    """Read a ``mixer.pt`` written by the mixer registered as ``name``."""
    path = Path(path)
    if not path.is_file():
        raise MixerCheckpointError(f"checkpoint={str(path)!r}: no such file (a training run with mixer {name!r} "
                                   f"writes {STATE_FILE} in its output folder)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise MixerCheckpointError(f"checkpoint={str(path)!r} is not a PyTorch file ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT or "mixer" not in state:
        raise MixerCheckpointError(f"checkpoint={str(path)!r} is not a gazemix mixer checkpoint (a model checkpoint "
                                   f"such as best.pt? pass the {STATE_FILE} that a training run with mixer {name!r} "
                                   f"wrote)")
    if state["mixer"] != name:
        raise MixerCheckpointError(f"checkpoint={str(path)!r} holds a {state['mixer']!r} mixer, not {name!r}")
    return state


def network_spec(model: nn.Module) -> dict[str, Any]:
    """How to rebuild the timm ``model`` (its architecture name, classes, and ViT image/patch size)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture")
    if not arch:
        raise MixerInputError(f"{type(model).__name__} is not a timm model (no pretrained_cfg['architecture']): "
                              f"learned mixers save the network they read by its timm name")
    spec: dict[str, Any] = {"name": arch, "num_classes": int(model.num_classes), "img_size": 224, "patch_size": None}
    embed = getattr(model, "patch_embed", None)
    if embed is not None:
        spec["img_size"] = int(embed.img_size[0])
        spec["patch_size"] = int(embed.patch_size[0])
    return spec


def build_network(spec: dict[str, Any], weights: dict[str, Tensor]) -> nn.Module:
    """Rebuild a network saved with :func:`network_spec` and its state dict, frozen and in eval mode."""
    model = build_model(spec["name"], spec["num_classes"], spec["img_size"], patch_size=spec["patch_size"])
    model.load_state_dict(weights)
    return frozen_copy(model, copy=False)


def average_gradients(module: nn.Module) -> None:
    """Average ``module``'s gradients over the ranks of a ``torchrun`` job (no-op in a single process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)
