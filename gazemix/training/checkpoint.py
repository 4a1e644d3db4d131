"""Checkpoints: ``last.pt`` every epoch, ``best.pt`` at the best validation top-1, and ``--resume``.

A checkpoint holds the backbone's state dict under ``model`` (so ``--pretrained-path`` and plain timm code
can load it), the auxiliary token head, optimiser, scheduler, RNG states, epoch, best top-1 and the config.
Files are written to a temporary name and renamed, so an interrupted save never leaves a half file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]

REQUIRED = ("model", "optimizer", "scheduler", "epoch", "best_top1", "config")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the file and what is wrong."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a gazemix training checkpoint, refusing missing, truncated or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file (a training run writes last.pt and best.pt in its "
                              f"output folder)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {path}: the file is corrupt or not a PyTorch checkpoint "
                              f"({type(err).__name__}: {err}); resume from best.pt or start a new run") from err
    missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path}: not a gazemix training checkpoint (missing {', '.join(missing)}); "
                              f"to start from its weights only, pass it as pretrained weights instead of resuming")
    return state
