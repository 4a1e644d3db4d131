"""CAT2000 (Borji & Itti, "CAT2000: A Large Scale Fixation Dataset for Boosting Saliency Research",
CVPR 2015 workshop, arXiv:1505.03581): 20 scene categories x 100 images at 1920x1080, 5 s free viewing.

Layout of the train set (gaze_humans spec §1.6)::

    trainSet/Stimuli/<Category>/<NNN>.jpg         the images
    trainSet/FIXATIONMAPS/<Category>/<NNN>.jpg    continuous fixation maps
    trainSet/FIXATIONLOCS/<Category>/<NNN>.mat    variable ``fixLocs``: binary H x W map of fixated pixels

Fixations are read from ``fixLocs``: every non-zero pixel is one fixation at 0-based ``(x = column,
y = row)`` (spec §1.10). Fixations of several observers on one pixel collapse to one there, and the map
carries no durations (NaN) nor observers (-1). The per-subject ``allFixData.mat`` is a MATLAB
``containers.Map`` that only MATLAB/Octave can read, so it is not used. The test set ships stimuli
only: it has no gaze, and the adapter says so.

The label is the category's index among the sorted ``Stimuli`` sub-folders (scene types, not objects).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from data_adapters._common import (RecordAdapter, image_size, load_mat, points_of_binary_map, require_dir)
from data_adapters.base import AdapterError, Fixations, GazeSample

__all__ = ["Cat2000", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class Cat2000(RecordAdapter):
    """Iterate over a CAT2000 set folder (e.g. ``trainSet``) as :class:`GazeSample` records.

    Args:
        root: the folder holding ``Stimuli/`` and ``FIXATIONMAPS/`` and/or ``FIXATIONLOCS/``.
        categories: restrict to these category names (default: all ``Stimuli`` sub-folders).
        on_error: ``"raise"`` the first bad image, or ``"skip"`` it and count it in :attr:`skipped`.

    Attributes:
        classes: the category names, sorted; ``label`` indexes this list.
    """

    def __init__(self, root: str | os.PathLike, *, categories: list[str] | None = None,
                 on_error: str = "raise") -> None:
        self.root = Path(root)
        stimuli = require_dir(self.root / "Stimuli", "CAT2000 Stimuli/<Category>/ images")
        self.classes = sorted(p.name for p in stimuli.iterdir() if p.is_dir())
        if not self.classes:
            raise AdapterError(stimuli, "holds no category sub-folders")
        if categories is not None:
            unknown = sorted(set(categories) - set(self.classes))
            if unknown:
                raise ValueError(f"categories {unknown} are not in {stimuli}; known: {', '.join(self.classes)}")
        self.categories = self.classes if categories is None else [c for c in self.classes if c in categories]
        self.maps_dir = self.root / "FIXATIONMAPS"
        self.locs_dir = self.root / "FIXATIONLOCS"
        if not self.maps_dir.is_dir() and not self.locs_dir.is_dir():
            raise AdapterError(self.root, "has neither FIXATIONMAPS/ nor FIXATIONLOCS/: the CAT2000 test set has "
                                          "no gaze; point the adapter at trainSet")
        super().__init__(on_error)

    @property
    def skipped(self) -> list[AdapterError]:
        """Errors of the images skipped so far (``on_error="skip"``)."""
        return self._policy.skipped

    def __iter__(self) -> Iterator[GazeSample]:
        for category in self.categories:
            files = sorted(p for p in (self.root / "Stimuli" / category).iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES)
            for image in files:
                try:
                    yield self._sample(category, image)
                except AdapterError as err:
                    self._policy.handle(err)

    def _sample(self, category: str, image: Path) -> GazeSample:
        size = image_size(image)
        gaze_map = fixations = None
        if self.maps_dir.is_dir():
            gaze_map = self.maps_dir / category / f"{image.stem}.jpg"
            if not gaze_map.is_file():
                raise AdapterError(gaze_map, f"missing fixation map of {category}/{image.name}")
        if self.locs_dir.is_dir():
            fixations = self._fixations(self.locs_dir / category / f"{image.stem}.mat", size)
        return GazeSample(image_id=f"{category}/{image.stem}", size=size, label=self.classes.index(category),
                          image_path=str(image), fixations=fixations,
                          gaze_map_path=None if gaze_map is None else str(gaze_map),
                          meta={"dataset": "cat2000", "category": category})

    @staticmethod
    def _fixations(path: Path, size: tuple[int, int]) -> Fixations:
        mat = load_mat(path)
        if "fixLocs" not in mat:
            found = ", ".join(k for k in mat if not k.startswith("__")) or "none"
            raise AdapterError(path, f"has no variable 'fixLocs' (found: {found})", field="fixLocs")
        locs = np.asarray(mat["fixLocs"])
        if locs.shape != size:
            raise AdapterError(path, f"fixLocs is {locs.shape} but the image is {size} (height, width)",
                               field="fixLocs")
        x, y = points_of_binary_map(locs, 0)
        n = len(x)
        return Fixations(x, y, np.full(n, np.nan), np.full(n, -1, dtype=np.int64))
