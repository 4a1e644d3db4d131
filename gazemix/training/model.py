"""The classifier of a training run: :mod:`gazemix.models` under the name the training package has always used."""

from gazemix.models import ModelError, build_model, check_model_name, is_vit, load_pretrained

__all__ = ["ModelError", "build_model", "check_model_name", "is_vit", "load_pretrained"]
