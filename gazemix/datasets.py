"""One registry of the data sets gazemix reads, by one set of names, for every command.

Each entry names what it requires (``root``: the folder the data set was downloaded to; ``fixations``: the
gaze files where they live apart from the images) and opens the matching reader of :mod:`data_adapters`,
which yields :class:`~data_adapters.base.GazeSample` records and keeps every record it skipped (``skipped``,
each an :class:`~data_adapters.base.AdapterError` naming file, line and field). ``demo`` is built in memory
(:mod:`gazemix.demo`) and has no reader.

Errors raised here are :class:`DataSetError`: they name the option at fault (``option``) so that a command
line can say which flag to fix.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["ALIASES", "DATA_SETS", "DataSet", "DataSetError", "get_data_set", "open_samples"]


class DataSetError(ValueError):
    """A data set cannot be opened with the options given; ``option`` names the one at fault (or ``None``)."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class DataSet:
    """A registered data set: its name, what it holds, what it requires and how to open its reader."""

    name: str
    summary: str
    requires: tuple[str, ...] = ()
    opener: Callable[..., Any] | None = None
    gaze_sources: tuple[str, ...] = ()

    def open(self, *, root: str | None = None, fixations: Sequence[str] | None = None,
             gaze_source: str | None = None) -> Any:
        """The reader of this data set (``on_error="skip"``: bad records are kept in its ``skipped``)."""
        if self.opener is None:
            raise DataSetError(f"the {self.name} data set is built in memory and has no reader")
        for option, value in (("root", root), ("fixations", fixations)):
            if option in self.requires and not value:
                raise DataSetError(f"the {self.name} data set needs {option}: {_REQUIRES_HELP[self.name][option]}",
                                   option)
        if gaze_source is not None and gaze_source not in self.gaze_sources:
            allowed = ", ".join(self.gaze_sources) or "none (it has one kind of gaze)"
            raise DataSetError(f"the {self.name} data set has no gaze source {gaze_source!r}; choose from {allowed}",
                               "gaze_source")
        return self.opener(root=root, fixations=list(fixations or []), gaze_source=gaze_source)


def _cub_gha(*, root: str | None, fixations: list[str], gaze_source: str | None) -> Any:
    from data_adapters.cub_gha import CubGha

    paths = [Path(f) for f in fixations]
    if len(paths) == 1 and paths[0].is_dir():
        return CubGha(paths[0], root, on_error="skip")
    for f in paths:
        if not f.is_file():
            raise DataSetError(f"{f}: no such file (give the Fixation_run<k>.txt files or their folder)", "fixations")
    if len({f.parent.resolve() for f in paths}) != 1:
        raise DataSetError("the Fixation_run<k>.txt files must lie in one folder", "fixations")
    runs = tuple(int(m.group(1)) for f in paths if (m := re.fullmatch(r"Fixation_run(\d+)\.txt", f.name)))
    if len(runs) != len(paths):
        raise DataSetError("CUB-GHA fixation files are named Fixation_run<k>.txt", "fixations")
    return CubGha(paths[0].parent, root, runs=runs, on_error="skip")


def _salicon(*, root: str | None, fixations: list[str], gaze_source: str | None) -> Any:
    from data_adapters.salicon import SaliconFixations

    return SaliconFixations(fixations[0], images_dir=root, on_error="skip")


def _mit1003(*, root: str | None, fixations: list[str], gaze_source: str | None) -> Any:
    from data_adapters.mit1003 import Mit1003

    return Mit1003(root, on_error="skip")


def _cat2000(*, root: str | None, fixations: list[str], gaze_source: str | None) -> Any:
    from data_adapters.cat2000 import Cat2000

    return Cat2000(root, on_error="skip")


def _coco_search18(*, root: str | None, fixations: list[str], gaze_source: str | None) -> Any:
    from data_adapters.coco_search18 import CocoSearch18

    return CocoSearch18(fixations, images_dir=root, on_error="skip")


def _folder(*, root: str | None, fixations: list[str], gaze_source: str | None) -> Any:
    from data_adapters.folder import FolderGaze

    return FolderGaze(root, on_error="skip")


_REQUIRES_HELP = {
    "cub-gha": {"fixations": "CUB-GHA's Fixation_run<k>.txt files or their folder (data_5runs/)"},
    "salicon": {"fixations": "SALICON's fixations JSON file"},
    "coco-search18": {"fixations": "the COCO-Search18 fixations JSON file(s)"},
    "mit1003": {"root": "the folder holding ALLSTIMULI/ (and DATA/ or ALLFIXATIONMAPS/)"},
    "cat2000": {"root": "the folder holding Stimuli/ and FIXATIONLOCS/"},
    "folder": {"root": "a folder of root/<class>/<image> with gaze beside each image"},
}

DATA_SETS: dict[str, DataSet] = {d.name: d for d in (
    DataSet("demo", "embedded synthetic set: labelled shapes on real photographs, simulated observers"),
    DataSet("cub-gha", "CUB-GHA eye tracking on CUB-200-2011 birds (images and labels with root=CUB_200_2011)",
            ("fixations",), _cub_gha),
    DataSet("salicon", "SALICON mouse-contingent 'fixations' on MS-COCO (images with root=)", ("fixations",),
            _salicon),
    DataSet("mit1003", "MIT1003: 1,003 photographs, 15 eye-tracked observers", ("root",), _mit1003),
    DataSet("cat2000", "CAT2000 training set: 20 categories, ready-made fixation maps", ("root",), _cat2000),
    DataSet("coco-search18", "COCO-Search18 target search, 18 target classes (images with root=)",
            ("fixations",), _coco_search18),
    DataSet("folder", "your own: root/<class>/<image> with a .png gaze map or .csv fixations beside each",
            ("root",), _folder),
)}

ALIASES = {"cub": "cub-gha"}


def get_data_set(name: str) -> DataSet:
    """The registered data set called ``name`` (old spellings in :data:`ALIASES` are accepted)."""
    name = ALIASES.get(name, name)
    if name not in DATA_SETS:
        close = difflib.get_close_matches(name, DATA_SETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataSetError(f"unknown data set {name!r}{hint}; choose from {', '.join(DATA_SETS)}", "data")
    return DATA_SETS[name]


def open_samples(name: str, **options: Any) -> Any:
    """Open data set ``name``'s reader with ``root=``, ``fixations=``, ``gaze_source=``."""
    return get_data_set(name).open(**options)
