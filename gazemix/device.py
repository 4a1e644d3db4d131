"""Choosing the device a command runs on."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; any other name as :class:`torch.device` takes it.

    Raises ``ValueError`` for a name that is no device, and when a CUDA device is requested but none is available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto'") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r} is not supported: use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but no CUDA device is available: use 'cpu' or 'auto'")
    return device
