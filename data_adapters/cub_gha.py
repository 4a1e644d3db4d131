"""CUB-GHA: human gaze on CUB-200-2011 birds (Rong, Xu, Kasneci, Kasneci, Tübingen; BMVC 2021,
"Human Attention in Fine-grained Classification"; data ``yaorong0921/CUB-GHA``, ``data_5runs/``).

Run files ``Fixation_run{1..5}.txt``: one viewing per line, ``image_id,width,height,x1,y1,d1,x2,y2,d2,...``
— all integers, no header; ``image_id`` is CUB's 1-based id, ``(x, y)`` 0-based pixels of the original
image, ``d`` the duration in ms. A run file can hold **several lines for one image** (run 1: 11,634 lines
for 10,556 images), so lines are grouped by id across lines and runs. The observer of a fixation is
``run * 1_000_000 + line`` (:func:`observer_run` recovers the run): whether a line is one participant is
not documented.

The optional CUB-200-2011 folder adds ``label`` (0-based, from ``image_class_labels.txt``), the class name
(``classes.txt``), the split (``train_test_split.txt``), the box (``bounding_boxes.txt``, ``x y w h``) and
``image_path`` (``images.txt`` + ``images/``). Without it the adapter yields gaze and image size only —
enough to score every content-independent mixer.

Bad records (a truncated line, a non-integer field, a fixation outside the image, a size that contradicts
an earlier line, an image id with no label) raise :class:`~data_adapters.base.AdapterError` naming the
file, line and field, or with ``on_error="skip"`` are skipped and kept in :attr:`CubGha.skipped`. A missing
or empty file is always an error.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np

from data_adapters._common import RecordAdapter
from data_adapters.base import AdapterError, Fixations, GazeSample

__all__ = ["CubGha", "OBSERVER_STRIDE", "observer_run", "read_run_file"]

OBSERVER_STRIDE = 1_000_000
RUN_FILE = "Fixation_run{}.txt"


def observer_run(observer: np.ndarray) -> np.ndarray:
    """The run number of CUB-GHA observer ids (``run * OBSERVER_STRIDE + line``)."""
    return np.asarray(observer) // OBSERVER_STRIDE


def _field_name(k: int) -> str:
    if k < 3:
        return ("image_id", "width", "height")[k]
    return f"{'xyd'[(k - 3) % 3]}{(k - 3) // 3 + 1}"


def _parse_line(text: str, path: Path, line: int) -> tuple[int, int, int, np.ndarray]:
    parts = text.split(",")
    if len(parts) < 6 or (len(parts) - 3) % 3:
        raise AdapterError(path, f"{len(parts)} fields: expected image_id,width,height followed by x,y,duration "
                                 f"triples (the line may be truncated)", line=line)
    try:
        vals = np.array(parts, dtype=np.int64)
    except (ValueError, OverflowError):
        for k, p in enumerate(parts):
            try:
                value = int(p)
            except ValueError:
                raise AdapterError(path, f"{p.strip()[:40]!r} is not an integer", line=line,
                                   field=_field_name(k)) from None
            if not -2**63 <= value < 2**63:
                raise AdapterError(path, f"{p.strip()[:40]} is far too large for a pixel position, size or duration",
                                   line=line, field=_field_name(k)) from None
        raise
    image_id, w, h = (int(v) for v in vals[:3])
    if image_id < 1:
        raise AdapterError(path, f"image ids are 1-based, got {image_id}", line=line, field="image_id")
    if w < 1 or h < 1:
        raise AdapterError(path, f"image size must be positive, got {w}x{h}", line=line,
                           field="width" if w < 1 else "height")
    trip = vals[3:].reshape(-1, 3)
    bad = (trip[:, 0] < 0) | (trip[:, 0] >= w) | (trip[:, 1] < 0) | (trip[:, 1] >= h)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        axis = "x" if not 0 <= trip[k, 0] < w else "y"
        raise AdapterError(path, f"fixation ({trip[k, 0]}, {trip[k, 1]}) lies outside the {w}x{h} image",
                           line=line, field=f"{axis}{k + 1}")
    if (trip[:, 2] <= 0).any():
        k = int(np.flatnonzero(trip[:, 2] <= 0)[0])
        raise AdapterError(path, f"duration must be positive (ms), got {trip[k, 2]}", line=line, field=f"d{k + 1}")
    return image_id, h, w, trip


def read_run_file(path: str | os.PathLike, run: int, *, skipped: list[AdapterError] | None = None
                  ) -> list[tuple[int, tuple[int, int], Fixations]]:
    """Parse one run file into ``(image_id, (height, width), fixations)`` per line (not yet grouped).

    Args:
        path: a ``Fixation_run<k>.txt`` file.
        run: its run number (part of every observer id).
        skipped: when given, bad lines are appended here instead of raising.
    """
    path = Path(path)
    if not path.is_file():
        raise AdapterError(path, "missing CUB-GHA run file: point gaze_dir at the folder holding Fixation_run<k>.txt "
                                 "(the repository's data_5runs/)")
    rows = []
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[:err.start].count(b"\n") + 1
        raise AdapterError(path, f"byte {err.object[err.start]:#04x} is not UTF-8 text: a CUB-GHA run file is "
                                 "plain comma-separated integers (is this the right file?)", line=line) from None
    for line, text in enumerate(content.splitlines(), start=1):
        if not text.strip():
            continue
        try:
            image_id, h, w, trip = _parse_line(text, path, line)
        except AdapterError as err:
            if skipped is None:
                raise
            skipped.append(err)
            continue
        obs = np.full(len(trip), run * OBSERVER_STRIDE + line, dtype=np.int64)
        rows.append((image_id, (h, w), Fixations(trip[:, 0].astype(np.float64), trip[:, 1].astype(np.float64),
                                                 trip[:, 2].astype(np.float64), obs)))
    if not rows and not (skipped and any(e.path == str(path) for e in skipped)):
        raise AdapterError(path, "the file is empty: expected lines image_id,width,height,x1,y1,d1,...")
    return rows


def _read_table(path: Path, ncols: int, what: str) -> Iterator[tuple[int, list[str]]]:
    """Whitespace-separated lines ``<id> <values...>`` of a CUB metadata file: ``(line, fields)``."""
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise AdapterError(path, f"the file is empty: expected {what}")
    for line, row in enumerate(text.splitlines(), start=1):
        parts = row.split()
        if not parts:
            continue
        if len(parts) != ncols:
            raise AdapterError(path, f"{len(parts)} fields, expected {ncols} ({what})", line=line)
        yield line, parts


def _int(value: str, path: Path, line: int, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise AdapterError(path, f"{value!r} is not an integer", line=line, field=field) from None


class CubGha(RecordAdapter):
    """CUB-GHA gaze (and, when given, CUB-200-2011 metadata) as :class:`~data_adapters.base.GazeSample` s.

    Samples are sorted by image id; ``image_id`` is CUB's id as a string, ``size`` ``(height, width)``,
    ``fixations`` the merged fixations of all requested runs, ``meta`` holds ``runs``, ``n_lines`` and, with
    CUB metadata, ``class_name``, ``split`` (``"train"``/``"test"``) and ``bbox_xywh``.

    Args:
        gaze_dir: folder with ``Fixation_run<k>.txt`` (or its parent holding ``data_5runs/``).
        cub_dir: optional ``CUB_200_2011`` folder (or its parent).
        runs: run numbers to read (default: every run file present).
        on_error: ``"raise"`` (default) or ``"skip"`` bad records; skipped ones are in :attr:`skipped`.
        split: keep only ``"train"`` or ``"test"`` images (needs ``train_test_split.txt``).
    """

    def __init__(self, gaze_dir: str | os.PathLike, cub_dir: str | os.PathLike | None = None, *,
                 runs: tuple[int, ...] | None = None, on_error: str = "raise", split: str | None = None) -> None:
        super().__init__(on_error)
        if split not in (None, "train", "test"):
            raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
        gaze_dir = Path(gaze_dir)
        if not gaze_dir.is_dir():
            raise AdapterError(gaze_dir, "CUB-GHA gaze folder not found: pass the folder holding Fixation_run<k>.txt")
        if not any(gaze_dir.glob("Fixation_run*.txt")) and (gaze_dir / "data_5runs").is_dir():
            gaze_dir = gaze_dir / "data_5runs"
        if runs is None:
            runs = tuple(sorted(int(p.stem.removeprefix("Fixation_run")) for p in gaze_dir.glob("Fixation_run*.txt")
                                if p.stem.removeprefix("Fixation_run").isdigit()))
            if not runs:
                raise AdapterError(gaze_dir, "no Fixation_run<k>.txt file here: pass the CUB-GHA data_5runs folder")
        self.gaze_dir, self.runs, self.split = gaze_dir, tuple(runs), split
        self.class_names: list[str] | None = None
        keep = None if on_error == "raise" else self.skipped

        by_id: dict[int, list] = {}
        for run in self.runs:
            path = gaze_dir / RUN_FILE.format(run)
            for image_id, size, fix in read_run_file(path, run, skipped=keep):
                entry = by_id.setdefault(image_id, [size, [], set(), path])
                if entry[0] != size:
                    line = int(fix.observer[0] % OBSERVER_STRIDE)
                    err = AdapterError(path, f"image {image_id} is {size[1]}x{size[0]} here but {entry[0][1]}x"
                                             f"{entry[0][0]} in an earlier line of {entry[3].name}", line=line, field="width")
                    if keep is None:
                        raise err
                    keep.append(err)
                    continue
                entry[1].append(fix)
                entry[2].add(run)
        meta = _CubMeta(Path(cub_dir)) if cub_dir is not None else None
        if split is not None and (meta is None or not meta.split):
            raise ValueError("split= needs the CUB-200-2011 metadata: pass cub_dir= holding train_test_split.txt")
        if meta is not None:
            self.class_names = meta.class_names
        self.samples: list[GazeSample] = []
        for image_id in sorted(by_id):
            size, parts, runs_seen, _ = by_id[image_id]
            if not parts:
                continue
            sample = GazeSample(image_id=str(image_id), size=size, fixations=Fixations.concat(parts),
                                meta={"runs": sorted(runs_seen), "n_lines": len(parts)})
            if meta is not None:
                try:
                    meta.annotate(sample, image_id)
                except AdapterError as err:
                    if keep is None:
                        raise
                    keep.append(err)
                    continue
                if split is not None and sample.meta.get("split") != split:
                    continue
            self.samples.append(sample)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[GazeSample]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> GazeSample:
        return self.samples[i]

    def skip_counts(self) -> Counter:
        """How many records were skipped per file."""
        return Counter(Path(e.path).name for e in self.skipped)


class _CubMeta:
    """The CUB-200-2011 metadata files that are present (each one optional)."""

    def __init__(self, root: Path) -> None:
        if not (root / "images.txt").is_file() and (root / "CUB_200_2011").is_dir():
            root = root / "CUB_200_2011"
        if not root.is_dir():
            raise AdapterError(root, "CUB-200-2011 folder not found: pass the folder holding images.txt")
        self.root = root
        self.labels_file = root / "image_class_labels.txt"
        self.paths = {_int(p[0], root / "images.txt", ln, "image_id"): p[1]
                      for ln, p in self._table("images.txt", 2, "<image_id> <relative path>")}
        self.labels = {_int(p[0], self.labels_file, ln, "image_id"): _int(p[1], self.labels_file, ln, "class_id") - 1
                       for ln, p in self._table("image_class_labels.txt", 2, "<image_id> <class_id>")}
        classes = {_int(p[0], root / "classes.txt", ln, "class_id"): p[1]
                   for ln, p in self._table("classes.txt", 2, "<class_id> <class_name>")}
        self.class_names = [classes[k].split(".", 1)[-1] for k in sorted(classes)] if classes else None
        self.split = {_int(p[0], root / "train_test_split.txt", ln, "image_id"):
                      "train" if _int(p[1], root / "train_test_split.txt", ln, "is_training_image") else "test"
                      for ln, p in self._table("train_test_split.txt", 2, "<image_id> <is_training_image>")}
        self.boxes = {}
        for ln, p in self._table("bounding_boxes.txt", 5, "<image_id> <x> <y> <width> <height>"):
            try:
                box = tuple(float(v) for v in p[1:])
            except ValueError:
                raise AdapterError(root / "bounding_boxes.txt", f"box {p[1:]} is not four numbers", line=ln) from None
            self.boxes[_int(p[0], root / "bounding_boxes.txt", ln, "image_id")] = box
        self.images_dir = root / "images" if (root / "images").is_dir() else None

    def _table(self, name: str, ncols: int, what: str) -> Iterator[tuple[int, list[str]]]:
        path = self.root / name
        return _read_table(path, ncols, what) if path.is_file() else iter(())

    def annotate(self, sample: GazeSample, image_id: int) -> None:
        if self.labels_file.is_file():
            if image_id not in self.labels:
                raise AdapterError(self.labels_file, f"image id {image_id} (from the gaze files) has no label here",
                                   field="image_id")
            sample.label = self.labels[image_id]
            if self.class_names is not None:
                if not 0 <= sample.label < len(self.class_names):
                    raise AdapterError(self.labels_file, f"class id {sample.label + 1} of image {image_id} is not in "
                                                         f"classes.txt (1..{len(self.class_names)})", field="class_id")
                sample.meta["class_name"] = self.class_names[sample.label]
        if image_id in self.split:
            sample.meta["split"] = self.split[image_id]
        if image_id in self.boxes:
            sample.meta["bbox_xywh"] = self.boxes[image_id]
        if self.images_dir is not None and image_id in self.paths:
            sample.image_path = str(self.images_dir / self.paths[image_id])
