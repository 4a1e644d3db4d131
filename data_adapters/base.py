"""The common form every data adapter yields, and the error it raises on bad input.

An adapter reads one data set's own on-disk layout (the user points at where they downloaded it) and
yields :class:`GazeSample` records. It never renders, mixes or downloads anything; rendering fixations
into maps is :func:`gazemix.gaze.render_gaze_maps`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class AdapterError(ValueError):
    """Malformed or missing input. The message names the file, and the line and field when known."""

    def __init__(self, path: str | os.PathLike, message: str, *, line: int | None = None, field: str | None = None):
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.field = str(path), line, field


@dataclass
class Fixations:
    """Fixations on one image, in the *original* image's pixel coordinates (x right, y down).

    Attributes:
        x, y: ``(N,)`` float pixel coordinates.
        duration_ms: ``(N,)`` durations in milliseconds (NaN when the data set has none).
        observer: ``(N,)`` integer id of the observer/run/subject of each fixation.
    """

    x: np.ndarray
    y: np.ndarray
    duration_ms: np.ndarray
    observer: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @classmethod
    def empty(cls) -> "Fixations":
        z = np.zeros(0)
        return cls(z, z.copy(), z.copy(), np.zeros(0, dtype=np.int64))

    @classmethod
    def concat(cls, parts: list["Fixations"]) -> "Fixations":
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("x", "y", "duration_ms", "observer")))


@dataclass
class GazeSample:
    """One sample of any gaze or judgment data set, in the common form.

    Attributes:
        image_id: the data set's own id of the image (string).
        size: ``(height, width)`` of the original image in pixels.
        label: class index, or ``None`` when the data set (or the files present) give none.
        image_path: path of the image file, or ``None`` when the images are not available.
        fixations: human fixations, or ``None`` when the data set gives a map instead.
        gaze_map_path: path of a ready-made fixation/saliency map, or ``None``.
        meta: anything else (class name, split, bounding box, task, ...).
    """

    image_id: str
    size: tuple[int, int]
    label: int | None = None
    image_path: str | None = None
    fixations: Fixations | None = None
    gaze_map_path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
