"""Bring your own data: a folder of class sub-folders, each image with a gaze map and/or a fixation CSV.

Layout (as torchvision's ``ImageFolder``, plus the gaze beside each image)::

    root/<class_name>/<stem>.jpg      the image (any of ``image_suffixes``)
    root/<class_name>/<stem>.png      its gaze map, same size as the image (``map_suffix``), and/or
    root/<class_name>/<stem>.csv      its fixations (``csv_suffix``)

The fixation CSV has a header naming its columns: ``x`` and ``y`` (required: 0-based pixel coordinates of
the image, x to the right, y down; integers are pixel centres, fractional values allowed), ``duration_ms`` and ``observer`` (optional,
integer observer id). Labels are indices into the sorted class-folder names (:attr:`FolderGaze.classes`).
If your images are PNG, pass ``image_suffixes=(".png",)`` and a distinct ``map_suffix`` such as
``"_gaze.png"``.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from data_adapters._common import RecordAdapter, RecordPolicy, check_inside, image_size, require_dir
from data_adapters.base import AdapterError, Fixations, GazeSample

__all__ = ["FolderGaze", "read_fixation_csv"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
CSV_COLUMNS = ("x", "y", "duration_ms", "observer")


def read_fixation_csv(path: str | os.PathLike, size: tuple[int, int], policy: RecordPolicy) -> Fixations:
    """Read one fixation CSV (columns ``x, y[, duration_ms][, observer]``) for an image of ``size = (H, W)``.

    A bad line (too few or too many fields, a non-number, a non-integer observer, a point outside the
    image) raises an :class:`AdapterError` naming the line and field, or is skipped and counted by
    ``policy``; the other lines are kept.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None:
            raise AdapterError(path, "the file is empty: expected a header line 'x,y[,duration_ms][,observer]'")
        header = [h.strip().lower() for h in header]
        unknown = [h for h in header if h not in CSV_COLUMNS]
        if unknown or "x" not in header or "y" not in header or len(set(header)) != len(header):
            raise AdapterError(path, f"header {header} must name columns x and y, optionally duration_ms and "
                                     f"observer, each once (unknown: {unknown})", line=1)
        cols = {name: header.index(name) for name in header}
        values: dict[str, list[float]] = {name: [] for name in CSV_COLUMNS}
        for line, row in enumerate(rows, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                parsed = _parse_row(path, line, row, cols, size)
            except AdapterError as err:
                policy.handle(err)
                continue
            for name in CSV_COLUMNS:
                values[name].append(parsed[name])
    return Fixations(np.asarray(values["x"], dtype=np.float64), np.asarray(values["y"], dtype=np.float64),
                     np.asarray(values["duration_ms"], dtype=np.float64),
                     np.asarray(values["observer"], dtype=np.int64))


def _parse_row(path: Path, line: int, row: list[str], cols: dict[str, int], size: tuple[int, int]) -> dict[str, float]:
    if len(row) != len(cols):
        raise AdapterError(path, f"has {len(row)} fields but the header has {len(cols)} (truncated line?)", line=line)
    out = {"duration_ms": math.nan, "observer": -1}
    for name, k in cols.items():
        text = row[k].strip()
        try:
            value = int(text) if name == "observer" else float(text)
        except ValueError:
            kind = "an integer" if name == "observer" else "a number"
            raise AdapterError(path, f"{text!r} is not {kind}", line=line, field=name) from None
        if name != "observer" and not math.isfinite(value):
            raise AdapterError(path, f"{text!r} is not finite", line=line, field=name)
        out[name] = value
    if out["duration_ms"] < 0:
        raise AdapterError(path, f"negative duration {out['duration_ms']:g}", line=line, field="duration_ms")
    check_inside(np.array([out["x"]]), np.array([out["y"]]), size, path, line=line)
    return out


class FolderGaze(RecordAdapter):
    """Iterate over ``root/<class_name>/<image>`` with gaze maps and/or fixation CSVs as :class:`GazeSample`.

    Args:
        root: the folder of class sub-folders.
        image_suffixes: file endings of images (case-insensitive; default JPEG, BMP, TIFF, WebP).
        map_suffix: ending that replaces the image's suffix for its gaze map (default ``".png"``).
        csv_suffix: ending of its fixation CSV (default ``".csv"``).
        on_error: ``"raise"`` the first problem, or ``"skip"`` the bad image (or CSV line) and count it in
            :attr:`skipped`.

    Attributes:
        classes: the sorted class-folder names; ``label`` indexes this list.
    """

    def __init__(self, root: str | os.PathLike, *, image_suffixes: Sequence[str] = IMAGE_SUFFIXES,
                 map_suffix: str = ".png", csv_suffix: str = ".csv", on_error: str = "raise") -> None:
        self.root = require_dir(Path(root), "image folder root/<class_name>/")
        self.image_suffixes = tuple(s.lower() for s in image_suffixes)
        if map_suffix.lower() in self.image_suffixes or csv_suffix.lower() in self.image_suffixes:
            raise ValueError(f"map_suffix {map_suffix!r} / csv_suffix {csv_suffix!r} must differ from the image "
                             f"suffixes {self.image_suffixes}: e.g. map_suffix='_gaze.png' for PNG images")
        self.map_suffix, self.csv_suffix = map_suffix, csv_suffix
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        super().__init__(on_error)

    @property
    def skipped(self) -> list[AdapterError]:
        """Errors of the images and CSV lines skipped so far (``on_error="skip"``)."""
        return self._policy.skipped

    def _is_image(self, p: Path) -> bool:
        name = p.name.lower()
        return (p.is_file() and p.suffix.lower() in self.image_suffixes
                and not name.endswith(self.map_suffix.lower()))

    def __iter__(self) -> Iterator[GazeSample]:
        for stray in sorted(p for p in self.root.iterdir() if self._is_image(p)):
            self._policy.handle(AdapterError(stray, "lies directly in the root folder, so it has no label: "
                                                    "move it into a <class_name>/ sub-folder"))
        if not self.classes:
            raise AdapterError(self.root, "holds no class sub-folders: expected root/<class_name>/<image>")
        for label, name in enumerate(self.classes):
            for image in sorted(p for p in (self.root / name).iterdir() if self._is_image(p)):
                try:
                    yield self._sample(label, name, image)
                except AdapterError as err:
                    self._policy.handle(err)

    def _sample(self, label: int, class_name: str, image: Path) -> GazeSample:
        size = image_size(image)
        gaze_map = image.with_name(image.stem + self.map_suffix)
        table = image.with_name(image.stem + self.csv_suffix)
        if not gaze_map.is_file() and not table.is_file():
            raise AdapterError(image, f"has no gaze: expected {gaze_map.name} (map) or {table.name} (fixations) "
                                      f"beside it")
        if gaze_map.is_file() and image_size(gaze_map) != size:
            raise AdapterError(gaze_map, f"gaze map is {image_size(gaze_map)} but its image is {size} "
                                         f"(height, width): save the map at the image's size")
        fixations = read_fixation_csv(table, size, self._policy) if table.is_file() else None
        return GazeSample(image_id=f"{class_name}/{image.stem}", size=size, label=label, image_path=str(image),
                          fixations=fixations, gaze_map_path=str(gaze_map) if gaze_map.is_file() else None,
                          meta={"dataset": "folder", "class_name": class_name})
