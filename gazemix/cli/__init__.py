"""The ``gazemix`` command line: one sub-command per module of this package.

Each module ``gazemix/cli/<name>.py`` defines ``add_parser(subparsers)`` (which registers the sub-command
and sets ``func=run``) and ``run(args) -> int``. Results go to stdout or to files, progress and errors to
stderr; ``--seed``, ``--device`` and ``--out`` are spelled the same everywhere.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

__all__ = ["main", "build_parser", "CliError"]


class CliError(Exception):
    """A user-facing error: printed as ``gazemix <cmd>: error: ...`` with exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gazemix",
        description="Image-mixing augmentations scored against human gaze and human judgments.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gazemix`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if argv is None and len(sys.argv) <= 1 else 2
    try:
        return int(args.func(args) or 0)
    except (CliError, ValueError, FileNotFoundError) as err:
        print(f"gazemix {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gazemix {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `gazemix mixers | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0
