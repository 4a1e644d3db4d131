"""gazemix: every image-mixing augmentation behind one contract, scored against human gaze and judgments.

The names below are imported on first use, so that ``gazemix --help`` and other light entry points do not
pay for importing PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
_EXPORTS = {
    "BoxWarp": "gazemix.contract", "Mixer": "gazemix.contract", "MixerInputError": "gazemix.contract",
    "MixResult": "gazemix.contract", "MixSource": "gazemix.contract", "soft_targets": "gazemix.contract",
    "create_mixer": "gazemix.registry", "list_mixers": "gazemix.registry", "mixer_class": "gazemix.registry",
    "register_mixer": "gazemix.registry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gazemix' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
