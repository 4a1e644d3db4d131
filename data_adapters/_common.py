"""Shared plumbing of the file-format adapters: the bad-record policy and its adapter base, bounds checks and
file readers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from data_adapters.base import AdapterError

ON_ERROR = ("raise", "skip")


class RecordPolicy:
    """What to do with a bad record: ``"raise"`` its :class:`AdapterError`, or ``"skip"`` it and keep count.

    With ``"skip"`` every skipped record's error is kept in :attr:`skipped`, so a caller can report
    "N records skipped" with the reasons; one bad record never loses the rest.
    """

    def __init__(self, on_error: str) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.skipped: list[AdapterError] = []

    def handle(self, err: AdapterError) -> None:
        if self.on_error == "raise":
            raise err
        self.skipped.append(err)


class RecordAdapter:
    """Base of the adapters that read records one by one: the ``on_error`` policy (:class:`RecordPolicy`) and the
    errors of the records skipped under it."""

    def __init__(self, on_error: str) -> None:
        self._policy = RecordPolicy(on_error)

    @property
    def on_error(self) -> str:
        """``"raise"`` the first bad record, or ``"skip"`` it and keep its error in :attr:`skipped`."""
        return self._policy.on_error

    @property
    def skipped(self) -> list[AdapterError]:
        """Errors of the records skipped so far (``on_error="skip"``), each naming its file, line and field."""
        return self._policy.skipped


def require_file(path: Path, what: str) -> Path:
    """``path`` when it is a file; otherwise an :class:`AdapterError` naming it and what it should hold."""
    if not path.is_file():
        raise AdapterError(path, f"missing {what}: point the adapter at the folder that holds it")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise AdapterError(path, f"missing folder ({what}): point the adapter at the data set's root")
    return path


def load_json(path: Path) -> Any:
    """Parse a JSON file; an empty or truncated file is an error naming its line and column."""
    text = require_file(path, "JSON file").read_text(encoding="utf-8")
    if not text.strip():
        raise AdapterError(path, "the file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise AdapterError(path, f"not valid JSON ({err.msg}, column {err.colno}): the file may be truncated",
                           line=err.lineno) from None


def check_inside(x: np.ndarray, y: np.ndarray, size: tuple[int, int], path: str | os.PathLike, *,
                 line: int | None = None, field: str | None = None) -> None:
    """Raise unless every 0-based point lies on the image of ``size = (H, W)``.

    Integer coordinates are pixel centres (as :mod:`gazemix.gaze` renders them), so the image spans
    ``[-0.5, W - 0.5) x [-0.5, H - 0.5)``: integer data must lie in ``0..W-1``, ``0..H-1``.
    """
    h, w = size
    bad = ~((x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise AdapterError(path, f"fixation {k} at (x={x[k]:g}, y={y[k]:g}) (0-based) lies outside the "
                                 f"{w}x{h} image ({int(bad.sum())} such points)", line=line, field=field)


def as_number_array(values: Any, path: str | os.PathLike, *, line: int | None = None, field: str,
                    integer: bool = False, columns: int | None = None) -> np.ndarray:
    """``values`` as a float array (``(N,)``, or ``(N, columns)`` for a list of pairs/triples).

    Vectorised on the good path; a bad entry (not a finite number, not an integer when ``integer``, a
    pair of the wrong length) raises an :class:`AdapterError` naming the field and the entry's index.
    """
    if not isinstance(values, list):
        raise AdapterError(path, f"expected a list, got {type(values).__name__}", line=line, field=field)
    shape = "numbers" if columns is None else f"[{', '.join('v' * columns)}] lists"
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    want_ndim = 1 if columns is None else 2
    if arr is not None and arr.size == 0:
        return np.zeros((0,) if columns is None else (0, columns))
    if arr is None or arr.ndim != want_ndim or (columns is not None and arr.shape[1] != columns):
        for k, v in enumerate(values):
            try:
                ok = np.asarray(v, dtype=np.float64).shape == (() if columns is None else (columns,))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise AdapterError(path, f"entry {k} is {v!r}, expected a list of {shape}", line=line, field=field)
        raise AdapterError(path, f"expected a list of {shape}", line=line, field=field)
    bad = ~np.isfinite(arr)
    if integer:
        bad |= np.mod(arr, 1) != 0
    if bad.any():
        k = int(np.flatnonzero(bad.reshape(arr.shape[0], -1).any(axis=1))[0])
        kind = "integers" if integer else "finite numbers"
        raise AdapterError(path, f"entry {k} is {values[k]!r}, expected {kind}", line=line, field=field)
    return arr


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image file, read from its header (the pixels are not decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return int(im.height), int(im.width)
    except (UnidentifiedImageError, OSError) as err:
        raise AdapterError(path, f"cannot read the image header ({err})") from None


def load_gray(path: Path) -> np.ndarray:
    """An 8-bit grayscale image as an ``(H, W)`` uint8 array."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError) as err:
        raise AdapterError(path, f"cannot read the image ({err})") from None


def load_mat(path: Path) -> dict[str, Any]:
    """Variables of a MATLAB ``.mat`` file (v4–v7; v7.3/HDF5 files are rejected with a hint)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    require_file(path, ".mat file")
    try:
        return loadmat(path, squeeze_me=True, struct_as_record=False)
    except NotImplementedError:
        raise AdapterError(path, "MATLAB v7.3 (HDF5) files are not supported: re-save it with "
                                 "save(..., '-v7') in MATLAB/Octave") from None
    except (MatReadError, ValueError, TypeError, OSError) as err:
        raise AdapterError(path, f"cannot read the .mat file ({err}); it may be empty or truncated") from None


def points_of_binary_map(points: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """0-based ``(x, y)`` of the pixels of a location map above ``threshold`` (row = y, column = x)."""
    ys, xs = np.nonzero(points > threshold)
    return xs.astype(np.float64), ys.astype(np.float64)
