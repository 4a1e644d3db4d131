"""gazemix: every image-mixing augmentation behind one contract, scored against human gaze and judgments."""

from gazemix.contract import BoxWarp, Mixer, MixerInputError, MixResult, MixSource, soft_targets
from gazemix.registry import create_mixer, list_mixers, mixer_class, register_mixer

__version__ = "0.1.0"
__all__ = ["BoxWarp", "Mixer", "MixerInputError", "MixResult", "MixSource", "create_mixer", "list_mixers",
           "mixer_class", "register_mixer", "soft_targets"]
