"""MIT1003 (Judd, Ehinger, Durand, Torralba, "Learning to Predict Where Humans Look", ICCV 2009):
1,003 images, 15 observers, 3 s free viewing, eye tracker at 240 Hz.

Layout (the data set's README)::

    ALLSTIMULI/<name>.jpeg                       the images
    ALLFIXATIONMAPS/<name>_fixMap.jpg            continuous fixation map (all observers)
    ALLFIXATIONMAPS/<name>_fixPts.jpg            binary map of fixated pixels (all observers)
    DATA/<subject>/<name>.mat                    raw samples: <var>.DATA(1).eyeData, N x 2 (x, y), 1-based
                                                 pixels; negative values are blinks

Per-observer fixations come from the raw samples through :func:`detect_fixations`, which applies the
acceleration rule of the data set's own ``checkFixations.m`` (its parameters: 34 px/deg, a 6 deg/s
velocity change between two 4-sample windows, deceleration searched within 25 samples, fixations shorter
than 50 ms merged into the saccades around them, a fixation's position the median of its samples). It is a
re-implementation, not a line-by-line port, so saccade boundaries may differ by a sample or two. Blink
samples (negative) become NaN first. As Judd et al.'s code and pysaliency do, each observer's first
fixation (the central start) is dropped and fixations outside the image are dropped (counted in
``meta["dropped_outside"]``). Unlike pysaliency, coordinates are shifted to 0-based (spec §1.10).

Without ``DATA/``, fixations are the non-zero pixels of ``_fixPts.jpg`` (observer -1, no durations).
MIT1003 has no class labels (``label`` is ``None``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from data_adapters._common import (RecordAdapter, image_size, load_gray, load_mat, points_of_binary_map,
                                   require_dir)
from data_adapters.base import AdapterError, Fixations, GazeSample

__all__ = ["Mit1003", "detect_fixations"]

SAMPLING_HZ = 240.0


def _runs(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (inclusive) indices of the runs of True in a 1-D bool array."""
    d = np.diff(np.r_[0, flags.astype(np.int8), 0])
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1


def detect_fixations(samples: np.ndarray, *, rate_hz: float = SAMPLING_HZ, px_per_deg: float = 34.0,
                     deg_per_s: float = 6.0, window: int = 4, min_fixation_ms: float = 50.0,
                     decel_search: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Split raw gaze samples ``(N, 2)`` into fixations with the acceleration rule of ``checkFixations.m``.

    Returns ``(positions (F, 2), durations_ms (F,))``: each fixation's median position (NaN samples
    ignored) in the samples' own coordinates, and its duration ``1000 * samples / rate``.
    """
    xy = np.asarray(samples, dtype=np.float64)[:, :2].copy()
    xy[(xy < 0).any(axis=1)] = np.nan  # blinks
    n = len(xy)
    step = np.r_[0.0, np.hypot(*np.diff(xy, axis=0).T)]
    smooth = np.convolve(step, np.ones(window) / window)[:n]  # causal moving average (MATLAB filter)
    accel = np.zeros(n)
    k = np.arange(1, max(n - window - 1, 1))
    # velocity over samples k+1..k+w+1 minus that over k..k+w: the two sums differ by their end terms
    accel[k] = (smooth[k + window + 1] - smooth[k]) * rate_hz / window
    crit = px_per_deg * deg_per_s
    with np.errstate(invalid="ignore"):
        up, down = accel > crit, accel < -crit
    starts, acc_ends = _runs(up)
    keep = acc_ends > starts  # an isolated sample above the criterion is noise
    starts, acc_ends = starts[keep], acc_ends[keep]
    last_active = int(np.flatnonzero(accel != 0)[-1]) if (accel != 0).any() else -1
    sac_start, sac_end = [], []
    for s, e in zip(starts.tolist(), acc_ends.tolist()):
        js = np.arange(e + 1, min(e + 1 + decel_search, n - 1))
        hit = js[down[js] & ~down[js + 1]]
        if hit.size:
            sac_start.append(s)
            sac_end.append(int(hit[0]))
        elif e == last_active:  # the trial ends in a saccade
            sac_start.append(s)
            sac_end.append(n - 1)
    min_pts = round(min_fixation_ms * rate_hz / 1000.0)
    merged_s, merged_e = [], []
    for s, e in zip(sac_start, sac_end):
        if merged_e and s - merged_e[-1] <= min_pts:  # too short a fixation between two saccades
            merged_e[-1] = max(merged_e[-1], e)
        else:
            merged_s.append(s)
            merged_e.append(e)
    if merged_e and n - 1 - merged_e[-1] <= min_pts:
        merged_e[-1] = n - 1
    in_saccade = np.zeros(n, dtype=bool)
    for s, e in zip(merged_s, merged_e):
        in_saccade[s:e + 1] = True
    fs, fe = _runs(~in_saccade)
    pos, dur = [], []
    for s, e in zip(fs.tolist(), fe.tolist()):
        seg = xy[s:e + 1]
        if np.isnan(seg).all(axis=0).any():
            continue
        pos.append(np.nanmedian(seg, axis=0))
        dur.append(1000.0 * (e - s + 1) / rate_hz)
    return np.asarray(pos, dtype=np.float64).reshape(-1, 2), np.asarray(dur, dtype=np.float64)


def _eye_data(path: Path) -> np.ndarray:
    """``DATA(1).eyeData`` of one MIT1003 subject file (its one variable is named after the image)."""
    mat = load_mat(path)
    names = [k for k in mat if not k.startswith("__")]
    if len(names) != 1:
        raise AdapterError(path, f"expected one variable named after the image, found {names or 'none'}")
    record: Any = mat[names[0]]
    data = getattr(record, "DATA", None)
    if data is None:
        raise AdapterError(path, "the variable has no DATA field", field=f"{names[0]}.DATA")
    if isinstance(data, np.ndarray):
        data = data.flat[0]
    eye = getattr(data, "eyeData", None)
    eye = None if eye is None else np.asarray(eye, dtype=np.float64)
    if eye is None or eye.ndim != 2 or eye.shape[1] < 2:
        raise AdapterError(path, "DATA(1).eyeData must be an N x 2 array of (x, y) samples",
                           field=f"{names[0]}.DATA.eyeData")
    return eye


class Mit1003(RecordAdapter):
    """Iterate over MIT1003 as :class:`GazeSample` records (one per image).

    Args:
        root: the folder holding ``ALLSTIMULI/`` and ``DATA/`` and/or ``ALLFIXATIONMAPS/``.
        source: ``"auto"`` (per-observer ``DATA`` when present, else ``_fixPts``), ``"observers"`` or
            ``"points"``.
        subjects: restrict to these observers (default: every ``DATA`` sub-folder, sorted).
        drop_first: drop each observer's first fixation, the central start (default True, as Judd et al.).
        on_error: ``"raise"`` the first problem, or ``"skip"`` it (a bad subject file drops one observer, a
            bad image drops that image) and count it in :attr:`skipped`.

    ``observer`` indexes :attr:`subjects`.
    """

    def __init__(self, root: str | os.PathLike, *, source: str = "auto", subjects: list[str] | None = None,
                 drop_first: bool = True, on_error: str = "raise") -> None:
        self.root = Path(root)
        self.stimuli = require_dir(self.root / "ALLSTIMULI", "MIT1003 ALLSTIMULI/ images")
        self.maps_dir = self.root / "ALLFIXATIONMAPS"
        data_dir = self.root / "DATA"
        if source not in ("auto", "observers", "points"):
            raise ValueError(f"source must be 'auto', 'observers' or 'points', got {source!r}")
        if source == "auto":
            source = "observers" if data_dir.is_dir() else "points"
        if source == "observers":
            require_dir(data_dir, "per-observer DATA/<subject>/<name>.mat")
            found = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
            if subjects is not None and sorted(set(subjects) - set(found)):
                raise ValueError(f"subjects {sorted(set(subjects) - set(found))} have no folder in {data_dir}; "
                                 f"found: {', '.join(found)}")
            self.subjects = found if subjects is None else [s for s in found if s in subjects]
            if not self.subjects:
                raise AdapterError(data_dir, "holds no subject folders")
        else:
            require_dir(self.maps_dir, "ALLFIXATIONMAPS/<name>_fixPts.jpg")
            self.subjects = []
        self.source, self.data_dir, self.drop_first = source, data_dir, bool(drop_first)
        super().__init__(on_error)

    @property
    def skipped(self) -> list[AdapterError]:
        """Errors of the records skipped so far (``on_error="skip"``)."""
        return self._policy.skipped

    def __iter__(self) -> Iterator[GazeSample]:
        for image in sorted(p for p in self.stimuli.iterdir() if p.suffix.lower() in (".jpeg", ".jpg")):
            try:
                yield self._sample(image)
            except AdapterError as err:
                self._policy.handle(err)

    def _sample(self, image: Path) -> GazeSample:
        size = image_size(image)
        fix_map = self.maps_dir / f"{image.stem}_fixMap.jpg"
        meta: dict[str, Any] = {"dataset": "mit1003", "source": self.source}
        if self.source == "points":
            fixations = self._points(self.maps_dir / f"{image.stem}_fixPts.jpg", size)
        else:
            fixations, meta["dropped_outside"] = self._observers(image.stem, size)
            meta["subjects"] = self.subjects
        return GazeSample(image_id=image.stem, size=size, label=None, image_path=str(image), fixations=fixations,
                          gaze_map_path=str(fix_map) if fix_map.is_file() else None, meta=meta)

    @staticmethod
    def _points(path: Path, size: tuple[int, int]) -> Fixations:
        if not path.is_file():
            raise AdapterError(path, "missing fixation-points map")
        points = load_gray(path)
        if points.shape != size:
            raise AdapterError(path, f"is {points.shape} but its image is {size} (height, width)")
        x, y = points_of_binary_map(points, 127)  # a JPEG of a binary map: threshold at mid-grey
        n = len(x)
        return Fixations(x, y, np.full(n, np.nan), np.full(n, -1, dtype=np.int64))

    def _observers(self, stem: str, size: tuple[int, int]) -> tuple[Fixations, int]:
        h, w = size
        parts, dropped = [], 0
        for k, subject in enumerate(self.subjects):
            path = self.data_dir / subject / f"{stem}.mat"
            try:
                if not path.is_file():
                    raise AdapterError(path, f"missing eye data of subject {subject!r} for image {stem!r}")
                pos, dur = detect_fixations(_eye_data(path))
            except AdapterError as err:
                self._policy.handle(err)
                continue
            if self.drop_first:
                pos, dur = pos[1:], dur[1:]
            x, y = pos[:, 0] - 1.0, pos[:, 1] - 1.0  # MATLAB 1-based pixels -> 0-based
            inside = (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5)  # pixel centres at integers
            dropped += int((~inside).sum())
            parts.append(Fixations(x[inside], y[inside], dur[inside], np.full(int(inside.sum()), k, dtype=np.int64)))
        return Fixations.concat(parts), dropped
