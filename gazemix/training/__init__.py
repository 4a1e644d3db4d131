"""``gazemix train``: timm classifiers trained with any gazemix mixer, single process or ``torchrun`` DDP."""

from gazemix.training.config import TrainConfig, resolve_recipe
from gazemix.training.data import TensorGazeDataset, TrainData, build_data
from gazemix.training.trainer import train

__all__ = ["TensorGazeDataset", "TrainConfig", "TrainData", "build_data", "resolve_recipe", "train"]
