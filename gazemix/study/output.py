"""Output folders written whole or not at all, and CSV cells that a spreadsheet will not run as formulas.

:func:`output_folder` stages a command's files with :func:`gazemix.outputs.staged_folder` (a temporary folder
beside ``--out``, renamed into place at the end; an interrupted run leaves the previous output as it was) and
adds one safeguard for re-runs: an existing ``--out`` is replaced only when an earlier run of the same command
wrote it (a marker file says so), never a folder that holds anything else.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import pandas as pd

from gazemix.outputs import OutputError, staged_folder
from gazemix.study.db import StudyInputError

__all__ = ["FORMULA_PREFIXES", "MARKER", "neutralise_formulas", "output_folder"]

MARKER = ".gazemix-output"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _check_target(out: Path, kind: str) -> None:
    if out.exists() and not out.is_dir():
        raise StudyInputError(f"--out {out} is a file; pass a folder (it is created)", field="out")
    if out.is_dir() and any(out.iterdir()):
        marker = out / MARKER
        if not marker.is_file() or marker.read_text(encoding="utf-8", errors="replace").strip() != kind:
            raise StudyInputError(f"--out {out} holds other files (not an earlier `gazemix {kind}`); pass a new or "
                                  "empty folder", field="out")


@contextlib.contextmanager
def output_folder(out: str | os.PathLike, kind: str) -> Iterator[Path]:
    """A temporary folder to write ``kind``'s files into (``"humans report"``, ``"humans export"``); it becomes
    ``out`` when the block ends without an error."""
    out = Path(out)
    _check_target(out, kind)
    try:
        with staged_folder(out, replace=True) as tmp:
            yield tmp
            (tmp / MARKER).write_text(kind + "\n", encoding="utf-8")
    except OutputError as err:
        raise StudyInputError(f"--out {err}", field="out") from None


def neutralise_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """A copy in which every text cell starting with ``= + - @``, a tab or a carriage return gets a leading
    apostrophe, so a spreadsheet shows it as text instead of running it (OWASP's CSV-injection advice).
    Numbers (including negative ones) stay numbers."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_PREFIXES) else v)
    return out
