"""Outputs written whole or not at all: a run folder is built aside and moved into place in one step.

:func:`staged_folder` yields a fresh temporary folder beside the destination; when the block finishes, the
folder is renamed onto the destination (a rename within one file system is atomic). If the block raises or
is interrupted (Ctrl-C), the temporary folder is removed and the destination is left exactly as it was: a
reader sees either the old run or the new one, complete, never a mixture. :func:`write_file_atomic` does the
same for one file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["OutputError", "check_writable_folder", "staged_folder", "write_file_atomic"]


class OutputError(ValueError):
    """An output path cannot be written; the message names it and says what to do."""


def check_writable_folder(out: Path, *, replace: bool) -> None:
    """Refuse early (before any work) an output folder that cannot be created or that holds something else."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder: choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not replace:
        raise OutputError(f"{out} already holds files (an earlier run?)")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{out} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{out} cannot be created: {parent} is not writable")


@contextlib.contextmanager
def staged_folder(out: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out`` when the block ends without an exception.

    With ``replace=True`` an existing ``out`` is swapped for the new folder (the old one is removed only after
    the new one is in place); otherwise a non-empty ``out`` is refused before anything is written.
    """
    out = Path(out)
    check_writable_folder(out, replace=replace)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the finished folder gets the usual permissions
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old / out.name, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_file_atomic(path: str | os.PathLike, data: bytes | str, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and one rename."""
    path = Path(path)
    if path.exists() and (path.is_dir() or not overwrite):
        raise OutputError(f"{path} already exists: choose another file name" if not path.is_dir()
                          else f"{path} is a folder, not a file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
