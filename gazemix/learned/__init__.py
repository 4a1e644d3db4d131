"""Learned mixers' networks and training hooks: AutoMix's Mix Block and momentum encoder, TransformMix's mixing
module and search phase. The registered mixers are :mod:`gazemix.mixers.automix` and
:mod:`gazemix.mixers.transformmix`."""

from gazemix.learned.base import LearnedMixer, MixerCheckpointError, load_mixer_checkpoint

__all__ = ["LearnedMixer", "MixerCheckpointError", "load_mixer_checkpoint"]
