"""COCO-Search18 (Chen, Yang, Ahn, Samaras, Hoai, Zelinsky, Sci. Rep. 2021; Yang et al., CVPR 2020):
10 observers searching 6,202 COCO scenes for one of 18 target categories: gaze paired with a class.

Layout (the data set's readme): fixation JSON files such as ``coco_search18_fixations_TP_train_split1.json``,
each a list of trials with ``name`` (image file), ``subject``, ``task`` (target category), ``condition``
(``present``/``absent``), ``bbox`` (target ``[x, y, w, h]``), ``X``, ``Y`` (fixations, *including the
initial centre fixation*), ``T`` (durations, ms), ``length``, ``correct``, ``RT`` (ms), ``split``. Images are
1680x1050 (resized with zero padding) and ship as ``images/<task>/<name>``.

Coordinates: the readme does not state a base; like pysaliency we keep ``X``, ``Y`` as continuous 0-based
pixels of the 1680x1050 canvas (gaze_humans spec §1.8, §1.10: base UNCONFIRMED).

One :class:`GazeSample` per (image, task): all subjects' trials merged (``observer`` = subject), the
label the task's index in :data:`TASKS` (the readme's alphabetical order, as pysaliency). Each subject's
first fixation is the imposed centre start; it is dropped by default (``drop_initial=True``), as Judd et
al. drop the central start fixation in MIT1003, because it says where the trial began, not where people
searched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np

from data_adapters._common import RecordAdapter, as_number_array, check_inside, load_json
from data_adapters.base import AdapterError, Fixations, GazeSample

__all__ = ["CocoSearch18", "TASKS", "CANVAS"]

TASKS = ("bottle", "bowl", "car", "chair", "clock", "cup", "fork", "keyboard", "knife", "laptop", "microwave",
         "mouse", "oven", "potted plant", "sink", "stop sign", "toilet", "tv")
CANVAS = (1050, 1680)  # (height, width) of every stimulus


class CocoSearch18(RecordAdapter):
    """Iterate over COCO-Search18 fixation files as one :class:`GazeSample` per (image, target task).

    Args:
        fixation_files: one JSON file or several (e.g. the train and valid files of a split).
        images_dir: the ``images`` folder holding ``<task>/<name>`` (optional).
        drop_initial: drop each trial's first fixation, the imposed centre start (default True).
        on_error: ``"raise"`` the first bad trial, or ``"skip"`` it and count it in :attr:`skipped`.

    ``meta`` holds ``task``, ``condition``, the target ``bbox`` (x, y, w, h), ``split``, the ``subjects``
    and, per subject, ``correct`` and ``rt_ms``.
    """

    def __init__(self, fixation_files: str | os.PathLike | list[str | os.PathLike], *,
                 images_dir: str | os.PathLike | None = None, drop_initial: bool = True,
                 on_error: str = "raise") -> None:
        files = fixation_files if isinstance(fixation_files, (list, tuple)) else [fixation_files]
        if not files:
            raise ValueError("fixation_files is empty: pass at least one COCO-Search18 JSON file")
        self.files = [Path(f) for f in files]
        self.images_dir = None if images_dir is None else Path(images_dir)
        self.drop_initial = bool(drop_initial)
        super().__init__(on_error)

    @property
    def skipped(self) -> list[AdapterError]:
        """Errors of the trials skipped so far (``on_error="skip"``)."""
        return self._policy.skipped

    def __iter__(self) -> Iterator[GazeSample]:
        groups: dict[tuple[str, str], list[tuple[dict, Fixations]]] = {}
        for path in self.files:
            trials = load_json(path)
            if not isinstance(trials, list):
                raise AdapterError(path, f"expected a JSON list of trials, got {type(trials).__name__}")
            if not trials:
                raise AdapterError(path, "the file holds no trials")
            for k, trial in enumerate(trials):
                try:
                    info, fix = self._trial(path, k, trial)
                except AdapterError as err:
                    self._policy.handle(err)
                    continue
                groups.setdefault((info["name"], info["task"]), []).append((info, fix))
        for (name, task), trials in groups.items():
            image_path = None
            if self.images_dir is not None:
                image_path = self.images_dir / task / name
                if not image_path.is_file():
                    self._policy.handle(AdapterError(image_path, f"missing image {name!r} of task {task!r}"))
                    continue
            first = trials[0][0]
            meta = {"dataset": "coco_search18", "task": task, "condition": first["condition"],
                    "bbox": first["bbox"], "split": first["split"],
                    "subjects": [t["subject"] for t, _ in trials],
                    "correct": [t["correct"] for t, _ in trials], "rt_ms": [t["rt_ms"] for t, _ in trials]}
            yield GazeSample(image_id=name, size=CANVAS, label=TASKS.index(task),
                             image_path=None if image_path is None else str(image_path),
                             fixations=Fixations.concat([f for _, f in trials]), meta=meta)

    def _trial(self, path: Path, k: int, trial: object) -> tuple[dict, Fixations]:
        where = f"[{k}]"
        if not isinstance(trial, dict):
            raise AdapterError(path, f"trial {k} must be an object", field=where)
        missing = [key for key in ("name", "subject", "task", "X", "Y", "T") if key not in trial]
        if missing:
            raise AdapterError(path, f"trial {k} lacks {', '.join(map(repr, missing))}", field=f"{where}.{missing[0]}")
        name, task = trial["name"], trial["task"]
        if not isinstance(name, str) or not name:
            raise AdapterError(path, f"trial {k} needs an image 'name' string", field=f"{where}.name")
        if task not in TASKS:
            raise AdapterError(path, f"trial {k} has task {task!r}, which is none of the 18 COCO-Search18 "
                                     f"categories, so it has no label", field=f"{where}.task")
        subject = trial["subject"]
        if isinstance(subject, bool) or not isinstance(subject, int):
            raise AdapterError(path, f"trial {k} needs an integer 'subject', got {subject!r}", field=f"{where}.subject")
        x = as_number_array(trial["X"], path, field=f"{where}.X")
        y = as_number_array(trial["Y"], path, field=f"{where}.Y")
        t = as_number_array(trial["T"], path, field=f"{where}.T")
        if not len(x) == len(y) == len(t):
            raise AdapterError(path, f"trial {k} has {len(x)} X, {len(y)} Y and {len(t)} T values",
                               field=f"{where}.Y")
        length = trial.get("length", len(x))
        if length != len(x):
            raise AdapterError(path, f"trial {k} says length {length!r} but lists {len(x)} fixations (truncated?)",
                               field=f"{where}.length")
        check_inside(x, y, CANVAS, path, field=f"{where}.X")
        bbox = trial.get("bbox")
        if bbox is not None:
            bbox = [float(v) for v in as_number_array(bbox, path, field=f"{where}.bbox")]
            if len(bbox) != 4:
                raise AdapterError(path, f"trial {k} bbox must be [x, y, w, h], got {len(bbox)} values",
                                   field=f"{where}.bbox")
        if self.drop_initial:
            x, y, t = x[1:], y[1:], t[1:]
        info = {"name": name, "task": task, "subject": subject, "condition": trial.get("condition"),
                "bbox": bbox, "split": trial.get("split"), "correct": trial.get("correct"), "rt_ms": trial.get("RT")}
        return info, Fixations(x, y, t, np.full(len(x), subject, dtype=np.int64))
