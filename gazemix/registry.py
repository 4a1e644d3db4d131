"""The mixer registry: ``create_mixer(name, **kwargs)`` and ``list_mixers()``."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, TypeVar

from gazemix.contract import Mixer

__all__ = ["MixerInfo", "create_mixer", "list_mixers", "register_mixer"]

_REGISTRY: dict[str, type[Mixer]] = {}
M = TypeVar("M", bound=type[Mixer])


@dataclass(frozen=True)
class MixerInfo:
    """One row of the mixer table: a mixer's capabilities with its default options."""

    name: str
    summary: str
    reference: str
    needs: tuple[str, ...]
    content_independent: bool
    relabels_after_forward: bool
    model_kind: str | None
    reads_gaze: bool
    modes: tuple[str, ...]


def register_mixer(cls: M) -> M:
    """Class decorator: register a :class:`Mixer` subclass under its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"two mixers are registered as {cls.name!r}: {_REGISTRY[cls.name].__name__} and {cls.__name__}")
    _REGISTRY[cls.name] = cls
    return cls


def _ensure_loaded() -> None:
    importlib.import_module("gazemix.mixers")  # importing the two packages registers every mixer
    importlib.import_module("gazemix.learned")


def mixer_class(name: str) -> type[Mixer]:
    """The class registered as ``name``; an unknown name lists the valid ones and the closest match."""
    _ensure_loaded()
    key = name.strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown mixer {name!r}.{hint} Registered mixers: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def create_mixer(name: str, **kwargs: Any) -> Mixer:
    """Build the mixer registered as ``name`` with its keyword options (see each class's docstring)."""
    return mixer_class(name)(**kwargs)


def list_mixers() -> list[MixerInfo]:
    """Every registered mixer with its summary, paper and capabilities (with default options), sorted by name."""
    _ensure_loaded()
    infos = []
    for _, cls in sorted(_REGISTRY.items()):
        m = cls(seed=0)
        infos.append(MixerInfo(cls.name, cls.summary, cls.reference, tuple(m.needs), m.content_independent,
                               m.relabels_after_forward, m.model_kind, m.reads_gaze, cls.modes))
    return infos
