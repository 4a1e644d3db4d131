"""``gazemix train``: timm classifiers trained with any gazemix mixer, single process or ``torchrun`` DDP.

The names below are imported on first use, so ``gazemix.training.config`` (read by the command line to show its
defaults) does not pull in torch and timm.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TensorGazeDataset", "TrainConfig", "TrainData", "build_data", "resolve_recipe", "train"]

_HOME = {"TrainConfig": "config", "resolve_recipe": "config", "TensorGazeDataset": "data", "TrainData": "data",
         "build_data": "data", "train": "trainer"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
