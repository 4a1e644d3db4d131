"""SALICON (Jiang, Huang, Duan, Zhao, "SALICON: Saliency in Context", CVPR 2015): mouse-tracking gaze on
MS COCO 2014 images (640x480), read from its COCO-style JSON fixation files.

Layout (salicon-api, ``fixations_{train,val}2014.json``): top-level ``images`` (``id``, ``file_name``,
``height``, ``width``) and ``annotations`` (``id``, ``image_id``, ``worker_id``, ``fixations``). Each
fixation is a ``[row, col]`` = ``[y, x]`` pair, **1-based**: the official map builder and evaluator index
``map[y - 1][x - 1]``. We return 0-based ``x = col - 1``, ``y = row - 1`` (gaze_humans spec §1.4, §1.10).
An older example file stored ``[x, y]`` floats: pass ``order="xy"`` for it; points that fall outside the
image are reported, which is how a wrong order shows itself.

SALICON gives no class label (COCO's multi-label annotations can be joined on ``image_id``), so
``label`` is ``None``. Points are dense mouse samples, so there are no durations (NaN).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from data_adapters._common import RecordAdapter, as_number_array, check_inside, load_json
from data_adapters.base import AdapterError, Fixations, GazeSample

__all__ = ["SaliconFixations"]


def _int_field(rec: dict, key: str, path: Path, where: str) -> int:
    v = rec.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
        raise AdapterError(path, f"{where} needs an integer {key!r}, got {v!r}", field=f"{where}.{key}")
    return int(v)


class SaliconFixations(RecordAdapter):
    """Iterate over the images of one SALICON fixation JSON file as :class:`GazeSample` records.

    Args:
        fixations_json: e.g. ``fixations_train2014.json``.
        images_dir: folder of the COCO images named by ``file_name`` (optional; without it
            ``image_path`` is ``None``).
        order: ``"yx"`` (current release, default) or ``"xy"`` (old example file).
        one_based: subtract 1 from both coordinates (default True, the release's convention).
        on_error: ``"raise"`` the first bad record, or ``"skip"`` it (a bad annotation drops one worker's
            points, a bad image entry drops that image) and count it in :attr:`skipped`.

    Images without annotations (e.g. the test split) are yielded with empty fixations, so the caller's
    empty-map policy decides what to do with them.
    """

    def __init__(self, fixations_json: str | os.PathLike, *, images_dir: str | os.PathLike | None = None,
                 order: str = "yx", one_based: bool = True, on_error: str = "raise") -> None:
        if order not in ("yx", "xy"):
            raise ValueError(f"order must be 'yx' (current SALICON JSON) or 'xy' (old example file), got {order!r}")
        self.path = Path(fixations_json)
        self.images_dir = None if images_dir is None else Path(images_dir)
        self.order, self.one_based = order, bool(one_based)
        super().__init__(on_error)

    @property
    def skipped(self) -> list[AdapterError]:
        """Errors of the records skipped so far (``on_error="skip"``)."""
        return self._policy.skipped

    def __iter__(self) -> Iterator[GazeSample]:
        data = load_json(self.path)
        for key in ("images", "annotations"):
            if not isinstance(data, dict) or not isinstance(data.get(key), list):
                raise AdapterError(self.path, f"a SALICON fixation file needs a top-level list {key!r}", field=key)
        images = self._images(data["images"])
        points: dict[int, list[Fixations]] = {k: [] for k in images}
        for k, ann in enumerate(data["annotations"]):
            try:
                image_id, fix = self._annotation(k, ann, images)
            except AdapterError as err:
                self._policy.handle(err)
                continue
            points[image_id].append(fix)
        for image_id, (size, file_name) in images.items():
            image_path = None
            if self.images_dir is not None:
                image_path = self.images_dir / file_name
                if not image_path.is_file():
                    self._policy.handle(AdapterError(image_path, f"missing image of SALICON image {image_id}"))
                    continue
            fix = Fixations.concat(points[image_id])
            yield GazeSample(image_id=str(image_id), size=size, label=None,
                             image_path=None if image_path is None else str(image_path), fixations=fix,
                             meta={"dataset": "salicon", "file_name": file_name,
                                   "workers": len(points[image_id]), "signal": "mouse"})

    def _images(self, records: list) -> dict[int, tuple[tuple[int, int], str]]:
        images: dict[int, tuple[tuple[int, int], str]] = {}
        for k, rec in enumerate(records):
            where = f"images[{k}]"
            try:
                if not isinstance(rec, dict):
                    raise AdapterError(self.path, f"{where} must be an object", field=where)
                image_id = _int_field(rec, "id", self.path, where)
                h, w = (_int_field(rec, key, self.path, where) for key in ("height", "width"))
                if h < 1 or w < 1:
                    raise AdapterError(self.path, f"{where} has size {w}x{h}", field=f"{where}.width")
                name = rec.get("file_name")
                if not isinstance(name, str) or not name:
                    raise AdapterError(self.path, f"{where} needs a 'file_name' string", field=f"{where}.file_name")
            except AdapterError as err:
                self._policy.handle(err)
                continue
            images[image_id] = ((h, w), name)
        return images

    def _annotation(self, k: int, ann: object, images: dict) -> tuple[int, Fixations]:
        where = f"annotations[{k}]"
        if not isinstance(ann, dict):
            raise AdapterError(self.path, f"{where} must be an object", field=where)
        image_id = _int_field(ann, "image_id", self.path, where)
        if image_id not in images:
            raise AdapterError(self.path, f"{where} refers to image_id {image_id}, which has no entry in 'images'",
                               field=f"{where}.image_id")
        worker = _int_field(ann, "worker_id", self.path, where)
        pts = as_number_array(ann.get("fixations"), self.path, field=f"{where}.fixations", columns=2)
        first, second = pts[:, 0], pts[:, 1]
        x, y = (second, first) if self.order == "yx" else (first, second)
        if self.one_based:
            x, y = x - 1.0, y - 1.0
        check_inside(x, y, images[image_id][0], self.path, field=f"{where}.fixations")
        n = len(x)
        return image_id, Fixations(x, y, np.full(n, np.nan), np.full(n, worker, dtype=np.int64))
