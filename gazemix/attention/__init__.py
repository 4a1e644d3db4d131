"""Attention sources for the attention-guided mixers: bottom-up saliency, CAMs, ViT attention, top-down attention.

Each submodule defines ``__all__``; its public names are re-exported here when the module is present.
"""

from __future__ import annotations

import importlib
import importlib.util

__all__: list[str] = []

for _name in ("vit", "topdown", "saliency", "cam", "gradients"):
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        _module = importlib.import_module(f"{__name__}.{_name}")
        globals().update({k: getattr(_module, k) for k in _module.__all__})
        __all__ += list(_module.__all__)
