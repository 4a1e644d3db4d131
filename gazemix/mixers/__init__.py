"""Every rule-based gazemix mixer, one module per method; importing this package registers them all (the mixers
with trained weights are in :mod:`gazemix.learned`)."""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
