"""The learned mixers: mixers with trainable weights, trained with the model by ``gazemix train`` (AutoMix) or in a
search phase before it (TransformMix), and saved as ``mixer.pt``. One module per method; importing this package
registers them (the rule-based mixers are in :mod:`gazemix.mixers`)."""

from __future__ import annotations

import importlib
import pkgutil

from gazemix.learned.base import LearnedMixer, MixerCheckpointError, load_mixer_checkpoint

__all__ = ["LearnedMixer", "MixerCheckpointError", "load_mixer_checkpoint"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
