"""Small helpers shared by the sub-commands: tables and output folders (and :func:`gazemix.device.resolve_device`,
which the sub-commands take from here)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["add_renamed", "fresh_run_folder", "log", "prepare_out", "resolve_device", "tabulate"]


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


class _Renamed(argparse.Action):
    """An old spelling of an option: accepted, with one deprecation line on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "", **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if os.environ.get("RANK", "0") == "0":
            log(f"{parser.prog}: warning: {option_string} is deprecated; write {self.new} (the same option in every "
                "gazemix command)")
        setattr(namespace, self.dest, values)


def add_renamed(parser: argparse.ArgumentParser, old: str, new: str, **kwargs: Any) -> None:
    """Accept ``old`` (hidden from ``--help``) as a deprecated spelling of the option ``new``."""
    dest = new.lstrip("-").replace("-", "_")
    parser.add_argument(old, dest=dest, action=_Renamed, new=new, help=argparse.SUPPRESS,
                        default=argparse.SUPPRESS, **kwargs)


def fresh_run_folder(command: str, label: str) -> Path:
    """The default output folder of a run: a new ``runs/<command>/<date>-<time>-<label>`` (timm's habit)."""
    stem = Path("runs", command, f"{time.strftime('%Y%m%d-%H%M%S')}-{label}")
    out, k = stem, 1
    while out.exists():
        k += 1
        out = stem.with_name(f"{stem.name}-{k}")
    return out
