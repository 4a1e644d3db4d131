"""OSIE (Xu, Jiang, Wang, Kankanhalli, Zhao, "Predicting human gaze beyond pixels", Journal of Vision 2014;
``NUS-VIP/predicting-human-gaze-beyond-pixels``, MIT licence): 700 natural photographs (800 x 600), eye
tracking of 15 observers each (3 s free viewing) and mouse tracking of the same images.

Layout (the release's ``README.md`` and ``src/common/config.m``), read unchanged::

    data/stimuli/<id>.jpg              the images (ids 1001-1700)
    data/eye/fixations.mat             cell array ``fixations{i}`` with ``img`` (file name) and a cell array
                                       ``subjects{j}`` with ``fix_x``, ``fix_y`` (MATLAB 1-based pixels,
                                       fractional; x right, y down) and ``fix_duration`` (ms)
    data/mouse_lab/<id>.mat            mouse tracking in the lab: struct ``fixations`` with ``subj`` (subject
    data/mouse_amt/<id>.mat            number), ``order`` (sample order within the subject) and ``coord``, an
                                       N x 2 array of **(row, column)** = (y, x), 1-based integer pixels

**Coordinates.** Every point is returned 0-based (``x - 1``, ``y - 1``; for the mouse ``x = column - 1``,
``y = row - 1``), as every gazemix adapter. The release's own map code rounds the eye coordinates and clamps
them to the image; here a point whose 0-based position lies off the pixel grid (``[-0.5, W - 0.5)``) is an
error instead (the real release has none: its eye coordinates span 1.2-799.2 by 1.2-599.2).

**Observers.** ``observer`` is 0-based: for the eye data the subject's position in ``subjects`` (the same
position on every image), for the mouse data ``subj - 1``. Eye and mouse observers are different sessions
with their own numbering; the release does not say whether any person took part in both.

**Mouse samples as "fixations".** Mouse tracking has no fixations, only cursor samples (about 100 per subject
and image; the first is the image centre, where the cursor starts). The release's map code
(``computeMouseFixationMaps.m``) marks every *distinct* sampled pixel of the image once (``unique`` over all
subjects' samples) and blurs that binary map like the eye maps. With ``mouse_points="unique"`` (default)
each subject's distinct pixels are yielded once, in sample order, so the observer of every point is kept;
the union over any set of subjects, deduplicated (:func:`distinct_points`), is then exactly the release's
point set for those subjects. ``mouse_points="all"`` yields every sample (durations are NaN either way).

OSIE has no class labels (``label`` is ``None``): every image is its own item.

Bad records raise :class:`~data_adapters.base.AdapterError` naming the file and the MATLAB field (e.g.
``fixations{12}.subjects{3}.fix_x``), or with ``on_error="skip"`` are skipped and kept in
:attr:`Osie.skipped`: a bad subject drops that subject, a bad image entry or mouse file drops that image.
A missing folder or ``fixations.mat`` is always an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from data_adapters._common import RecordPolicy, check_inside, image_size, load_mat, require_dir, require_file
from data_adapters.base import AdapterError, Fixations, GazeSample

__all__ = ["MOUSE_POINTS", "Osie", "SOURCES", "available_sources", "distinct_points"]

SOURCES = ("eye", "mouse_lab", "mouse_amt")
MOUSE_POINTS = ("unique", "all")


def _data_dir(root: str | os.PathLike) -> Path:
    """The release's ``data/`` folder: ``root/data`` or ``root`` itself when it holds ``stimuli/``."""
    root = Path(root)
    if (root / "data" / "stimuli").is_dir() or not (root / "stimuli").is_dir():
        return root / "data"
    return root


def available_sources(root: str | os.PathLike) -> list[str]:
    """The gaze sources present in an OSIE download (``"eye"``, ``"mouse_lab"``, ``"mouse_amt"``)."""
    data = _data_dir(root)
    return [s for s in SOURCES if (data / "eye" / "fixations.mat" if s == "eye" else data / s).exists()]


def distinct_points(fixations: Fixations) -> Fixations:
    """The distinct pixels of a set of (integer) mouse points, each once, as the release's map marks them.

    A pixel sampled by several observers is kept once, attributed to the first of them in input order.
    """
    if len(fixations) == 0:
        return fixations
    _, first = np.unique(np.stack([fixations.y, fixations.x], axis=1), axis=0, return_index=True)
    keep = np.sort(first)
    return Fixations(fixations.x[keep], fixations.y[keep], fixations.duration_ms[keep], fixations.observer[keep])


def _cells(value: Any) -> list[Any]:
    """A MATLAB cell array / struct array read with ``squeeze_me`` as a list (one element squeezes to itself)."""
    if isinstance(value, np.ndarray):
        return list(value.reshape(-1)) if value.dtype == object else []
    return [value]


def _vector(value: Any, path: Path, field: str, *, integer: bool = False) -> np.ndarray:
    """A squeezed MATLAB numeric vector (a scalar when it holds one value) as a 1-D float array."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise AdapterError(path, f"expected numbers, got {type(value).__name__}", field=field) from None
    if arr.ndim > 1:
        raise AdapterError(path, f"expected a vector, got shape {arr.shape}", field=field)
    arr = arr.reshape(-1)
    bad = ~np.isfinite(arr)
    if integer:
        bad |= np.mod(arr, 1) != 0
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        kind = "integers" if integer else "finite numbers"
        raise AdapterError(path, f"entry {k + 1} is {arr[k]:g}, expected {kind}", field=field)
    return arr


class Osie:
    """Iterate over OSIE as :class:`~data_adapters.base.GazeSample` records (one per image, sorted by id).

    Args:
        root: the OSIE download (the folder holding ``data/``, or ``data/`` itself).
        source: ``"eye"`` (default), ``"mouse_lab"`` or ``"mouse_amt"``.
        mouse_points: ``"unique"`` (each subject's distinct sampled pixels once; default) or ``"all"`` (every
            mouse sample); see the module docstring.
        images: restrict to these image ids (e.g. ``["1001", "1002"]``); default every stimulus.
        on_error: ``"raise"`` the first problem, or ``"skip"`` it (a bad subject drops that subject, a bad
            image entry or mouse file drops that image) and keep it in :attr:`skipped`.

    ``meta`` holds ``dataset``, ``source``, ``n_observers`` and the gaze file.
    """

    def __init__(self, root: str | os.PathLike, *, source: str = "eye", mouse_points: str = "unique",
                 images: Sequence[str] | None = None, on_error: str = "raise") -> None:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        if mouse_points not in MOUSE_POINTS:
            raise ValueError(f"mouse_points must be 'unique' or 'all', got {mouse_points!r}")
        self._policy = RecordPolicy(on_error)
        self.data = _data_dir(root)
        self.stimuli_dir = require_dir(self.data / "stimuli", "OSIE data/stimuli/<id>.jpg")
        if source == "eye":
            self.gaze_path = require_file(self.data / "eye" / "fixations.mat", "OSIE eye data data/eye/fixations.mat")
        else:
            self.gaze_path = require_dir(self.data / source, f"OSIE mouse data data/{source}/<id>.mat")
        self.source, self.mouse_points = source, mouse_points
        stimuli = sorted(p for p in self.stimuli_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not stimuli:
            raise AdapterError(self.stimuli_dir, "holds no .jpg images: point the adapter at the OSIE download")
        if images is not None:
            wanted = {str(i) for i in images}
            missing = sorted(wanted - {p.stem for p in stimuli})
            if missing:
                raise ValueError(f"images {missing[:5]} are not in {self.stimuli_dir} (ids look like {stimuli[0].stem})")
            stimuli = [p for p in stimuli if p.stem in wanted]
        self.stimuli = stimuli

    @property
    def skipped(self) -> list[AdapterError]:
        """Errors of the records skipped so far (``on_error="skip"``)."""
        return self._policy.skipped

    def __iter__(self) -> Iterator[GazeSample]:
        entries = self._eye_entries() if self.source == "eye" else None
        for image in self.stimuli:
            try:
                size = image_size(image)
                if entries is not None:
                    if image.name not in entries:
                        raise AdapterError(self.gaze_path, f"no entry for stimulus {image.name}", field="fixations")
                    fixations = self._eye_image(entries[image.name], size)
                    gaze_file = self.gaze_path
                else:
                    gaze_file = self.gaze_path / f"{image.stem}.mat"
                    fixations = self._mouse_image(gaze_file, size)
            except AdapterError as err:
                self._policy.handle(err)
                continue
            yield GazeSample(image_id=image.stem, size=size, label=None, image_path=str(image), fixations=fixations,
                             meta={"dataset": "osie", "source": self.source, "gaze_file": str(gaze_file),
                                   "n_observers": int(np.unique(fixations.observer).size)})

    # ------------------------------------------------------------------------------------------- eye
    def _eye_entries(self) -> dict[str, tuple[int, Any]]:
        """``img`` file name -> (1-based entry number, entry) of ``fixations.mat``."""
        mat = load_mat(self.gaze_path)
        if "fixations" not in mat:
            found = [k for k in mat if not k.startswith("__")]
            raise AdapterError(self.gaze_path, f"no variable 'fixations' (found: {', '.join(found) or 'none'})",
                               field="fixations")
        entries: dict[str, tuple[int, Any]] = {}
        for k, entry in enumerate(_cells(mat["fixations"]), start=1):
            where = f"fixations{{{k}}}"
            try:
                names = getattr(entry, "_fieldnames", None)
                if names is None or "img" not in names or "subjects" not in names:
                    raise AdapterError(self.gaze_path, "must be a struct with fields 'img' and 'subjects'", field=where)
                img = entry.img
                if not isinstance(img, str) or not img:
                    raise AdapterError(self.gaze_path, f"expected an image file name, got {img!r}", field=f"{where}.img")
                if img in entries:
                    raise AdapterError(self.gaze_path, f"{img} already has entry {entries[img][0]}", field=f"{where}.img")
            except AdapterError as err:
                self._policy.handle(err)
                continue
            entries[img] = (k, entry)
        if not entries and not self.skipped:
            raise AdapterError(self.gaze_path, "holds no image entries", field="fixations")
        known = {p.name for p in self.stimuli_dir.iterdir()}
        for img, (k, _) in list(entries.items()):
            if img not in known:
                self._policy.handle(AdapterError(self.gaze_path, f"{img} is not in {self.stimuli_dir}",
                                                 field=f"fixations{{{k}}}.img"))
        return entries

    def _eye_image(self, numbered: tuple[int, Any], size: tuple[int, int]) -> Fixations:
        k, entry = numbered
        subjects = _cells(entry.subjects)
        if not subjects:
            raise AdapterError(self.gaze_path, "no subjects", field=f"fixations{{{k}}}.subjects")
        parts = []
        for j, sub in enumerate(subjects):
            try:
                parts.append(self._eye_subject(sub, f"fixations{{{k}}}.subjects{{{j + 1}}}", j, size))
            except AdapterError as err:
                self._policy.handle(err)
        if not parts:
            raise AdapterError(self.gaze_path, "no usable subject", field=f"fixations{{{k}}}.subjects")
        return Fixations.concat(parts)

    def _eye_subject(self, sub: Any, where: str, observer: int, size: tuple[int, int]) -> Fixations:
        names = getattr(sub, "_fieldnames", None)
        if names is None:
            raise AdapterError(self.gaze_path, "must be a struct with fix_x, fix_y, fix_duration", field=where)
        cols = {}
        for name in ("fix_x", "fix_y", "fix_duration"):
            if name not in names:
                raise AdapterError(self.gaze_path, f"missing field (has: {', '.join(names)})", field=f"{where}.{name}")
            cols[name] = _vector(getattr(sub, name), self.gaze_path, f"{where}.{name}")
        n = len(cols["fix_x"])
        for name in ("fix_y", "fix_duration"):
            if len(cols[name]) != n:
                raise AdapterError(self.gaze_path, f"{len(cols[name])} values but fix_x has {n}", field=f"{where}.{name}")
        if n == 0:
            raise AdapterError(self.gaze_path, "the subject has no fixations (empty fix_x)", field=f"{where}.fix_x")
        if (cols["fix_duration"] < 0).any():
            k = int(np.flatnonzero(cols["fix_duration"] < 0)[0])
            raise AdapterError(self.gaze_path, f"entry {k + 1} is {cols['fix_duration'][k]:g}: durations are "
                                               f"non-negative ms", field=f"{where}.fix_duration")
        x, y = cols["fix_x"] - 1.0, cols["fix_y"] - 1.0  # MATLAB 1-based -> 0-based
        check_inside(x, y, size, self.gaze_path, field=f"{where}.fix_x/fix_y")
        return Fixations(x, y, cols["fix_duration"], np.full(n, observer, dtype=np.int64))

    # ----------------------------------------------------------------------------------------- mouse
    def _mouse_image(self, path: Path, size: tuple[int, int]) -> Fixations:
        if not path.is_file():
            raise AdapterError(path, f"missing {self.source} data of image {path.stem}")
        mat = load_mat(path)
        rec = mat.get("fixations")
        names = getattr(rec, "_fieldnames", None)
        if names is None:
            found = [k for k in mat if not k.startswith("__")]
            raise AdapterError(path, f"expected a struct 'fixations' with subj, order, coord (found: "
                                     f"{', '.join(found) or 'none'})", field="fixations")
        for name in ("subj", "order", "coord"):
            if name not in names:
                raise AdapterError(path, f"missing field (has: {', '.join(names)})", field=f"fixations.{name}")
        try:
            coord = np.asarray(rec.coord, dtype=np.float64)
        except (TypeError, ValueError):
            raise AdapterError(path, "expected an N x 2 numeric array", field="fixations.coord") from None
        if coord.size == 0:
            raise AdapterError(path, "holds no mouse samples", field="fixations.coord")
        if coord.shape == (2,):  # one sample, squeezed
            coord = coord.reshape(1, 2)
        if coord.ndim != 2 or coord.shape[1] != 2:
            raise AdapterError(path, f"expected N x 2 (row, column) pixels, got shape {coord.shape}",
                               field="fixations.coord")
        n = coord.shape[0]
        subj = _vector(rec.subj, path, "fixations.subj", integer=True)
        order = _vector(rec.order, path, "fixations.order", integer=True)
        for name, arr in (("subj", subj), ("order", order)):
            if len(arr) != n:
                raise AdapterError(path, f"{len(arr)} values but coord has {n} rows", field=f"fixations.{name}")
        if (subj < 1).any():
            raise AdapterError(path, f"subject numbers are 1-based, got {subj.min():g}", field="fixations.subj")
        bad = ~np.isfinite(coord).all(axis=1) | (np.mod(coord, 1) != 0).any(axis=1)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise AdapterError(path, f"row {k + 1} is {coord[k].tolist()}, expected integer pixel indices",
                               field="fixations.coord")
        parts = []
        for s in np.unique(subj):
            idx = np.flatnonzero(subj == s)
            idx = idx[np.argsort(order[idx], kind="stable")]
            y, x = coord[idx, 0] - 1.0, coord[idx, 1] - 1.0  # (row, column), 1-based -> 0-based (x, y)
            try:
                check_inside(x, y, size, path, field=f"fixations.coord (subject {int(s)})")
            except AdapterError as err:
                self._policy.handle(err)
                continue
            m = len(x)
            fix = Fixations(x, y, np.full(m, np.nan), np.full(m, int(s) - 1, dtype=np.int64))
            parts.append(distinct_points(fix) if self.mouse_points == "unique" else fix)
        if not parts:
            raise AdapterError(path, "no usable subject", field="fixations.coord")
        return Fixations.concat(parts)
