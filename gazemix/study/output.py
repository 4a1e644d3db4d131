"""Output folders written whole or not at all, and CSV cells that a spreadsheet will not run as formulas.

:func:`output_folder` gives a fresh temporary folder beside ``--out``; when the caller's block finishes, the
folder is moved into place (a previous run of the same command is moved aside first and then deleted).
An interrupted run (Ctrl-C, an error) leaves the previous output untouched and removes its temporary folder;
a crash between the two renames leaves the previous output under ``.<name>.old-*`` and the new one
complete under ``.<name>.tmp-*``, never a mix of both in ``--out``. A folder that holds anything else is
never replaced.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator

import pandas as pd

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
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.tmp-{secrets.token_hex(4)}"
        tmp.mkdir()  # (not mkdtemp: the folder gets the usual permissions, not 0700)
    except OSError as err:
        raise StudyInputError(f"--out {out}: cannot write there ({err.strerror}); pass a folder you can write",
                              field="out") from None
    try:
        yield tmp
        (tmp / MARKER).write_text(kind + "\n", encoding="utf-8")
        _check_target(out, kind)  # again: something may have appeared meanwhile
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def neutralise_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """A copy in which every text cell starting with ``= + - @``, a tab or a carriage return gets a leading
    apostrophe, so a spreadsheet shows it as text instead of running it (OWASP's CSV-injection advice).
    Numbers (including negative ones) stay numbers."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_PREFIXES) else v)
    return out
