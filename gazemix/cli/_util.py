"""Small helpers shared by the sub-commands: tables and output folders (and :func:`gazemix.device.resolve_device`,
which the sub-commands take from here)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable, Sequence


__all__ = ["log", "prepare_out", "resolve_device", "tabulate"]


def tabulate(rows: Iterable[Sequence[object]], headers: Sequence[str]) -> str:
    """A plain fixed-width text table."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def resolve_device(name: str):
    """:func:`gazemix.device.resolve_device`, imported on use (it needs PyTorch)."""
    from gazemix.device import resolve_device as resolve

    return resolve(name)


def prepare_out(path: str | os.PathLike) -> Path:
    """Create the output folder (and parents); refuse a path that is an existing file."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def log(msg: str) -> None:
    """Progress and status go to stderr, so stdout stays clean for results."""
    print(msg, file=sys.stderr, flush=True)
