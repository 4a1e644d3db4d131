"""The judgment app's command-line options, shared by ``python -m apps.judgment_app`` and ``gazemix app``.

Kept apart from :mod:`apps.judgment_app` so that building the ``gazemix`` parser does not import Gradio.
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "check_arguments"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The app's options."""
    p.add_argument("--db", required=True, help="study database (from `gazemix study build` or `humans import-hmix`)")
    p.add_argument("--study", default=None, help="study name when the database holds several")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port, 1..65535 (default 7860)")
    p.add_argument("--auth", action="append", default=[], metavar="USER:PASS",
                   help="require login; the user name is the annotator id (repeatable)")
    p.add_argument("--auth-file", default=None, help="file with one user:password per line")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse option values argparse's types cannot (a ``ValueError`` naming the option and the fix)."""
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be from 1 to 65535, got {args.port} (e.g. --port 7860)")
