"""The folder a training run writes into, and its metrics table: runs never overwrite each other.

* No ``out``: a fresh ``runs/train/<YYYYmmdd-HHMMSS>-<mixer>`` (timm's habit), ``-2``, ``-3``, ... appended when
  that name is taken.
* An ``out`` that does not exist or is empty is used; one that holds files is refused unless the run resumes.
* ``--resume`` is the only way to continue a run: ``out`` is then the checkpoint's folder unless given; an
  ``out`` that is another folder holding files is refused.

``metrics.csv`` is rewritten whole after every epoch from the rows of this run (a temporary file renamed over
it), so its epochs are always in order: a resumed run keeps the rows up to the checkpoint's epoch and drops any
later ones (an interrupted run's extra epochs, or those after a ``best.pt`` resumed from).
"""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path
from typing import Any, Sequence

from gazemix.outputs import write_file_atomic

__all__ = ["RunFolderError", "check_out", "fresh_out", "read_metrics", "write_metrics"]

RUNS_ROOT = Path("runs") / "train"


class RunFolderError(ValueError):
    """An output folder a run must not write into; the message names it and says what to pass instead."""


def _holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def check_out(out: str | None, resume: str | None) -> Path | None:
    """The run's folder (``None``: a fresh one is to be made), refusing one that holds another run.

    Reads the file system only, so every process of a ``torchrun`` job can check it.
    """
    if resume is not None:
        source = Path(resume).parent
        if out is None:
            return source
        target = Path(out)
        if target.exists() and not target.is_dir():
            raise RunFolderError(f"--out {target} is a file; pass a folder")
        if _holds_files(target) and target.resolve() != source.resolve():
            raise RunFolderError(f"--out {target} holds files of another run; --resume {resume} continues in "
                                 f"{source} (drop --out) or in a new, empty --out")
        return target
    if out is None:
        return None
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise RunFolderError(f"--out {target} is a file; pass a folder")
    if _holds_files(target):
        raise RunFolderError(f"--out {target} already holds a run: pass --resume to continue it, or a new folder "
                             f"(leave --out out for a fresh runs/train/<date>-<time>-<mixer>)")
    return target


def fresh_out(mixer: str, root: Path = RUNS_ROOT) -> Path:
    """Create and return a new ``root/<date>-<time>-<mixer>`` (``-2``, ``-3``, ... when taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', mixer) or 'none'}"
    root.mkdir(parents=True, exist_ok=True)
    for k in range(1, 1000):
        folder = root / (name if k == 1 else f"{name}-{k}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise RunFolderError(f"{root}: could not find a free folder name for {name}")


def read_metrics(path: Path) -> list[dict[str, str]]:
    """The rows of a ``metrics.csv`` (empty when there is none)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_metrics(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` (in epoch order) as ``path``, whole: a temporary file renamed over the old table."""
    epochs = [int(float(r["epoch"])) for r in rows]
    if epochs != sorted(set(epochs)):
        raise RuntimeError(f"metrics rows out of order: epochs {epochs}")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", restval="", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_file_atomic(path, buf.getvalue(), overwrite=True)
