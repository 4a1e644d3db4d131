"""``gazemix app``: serve a study in the browser (the Gradio judgment app, ``apps/judgment_app.py``).

Usage:
    gazemix app --db study.sqlite
    gazemix app --db study.sqlite --host 0.0.0.0 --port 7861 --auth alice:secret --auth bob:pw
    gazemix app --db study.sqlite --auth-file annotators.txt
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The app's options (shared with ``python -m apps.judgment_app``)."""
    p.add_argument("--db", required=True, help="study database (from `gazemix study build` or `humans import-hmix`)")
    p.add_argument("--study", default=None, help="study name when the database holds several")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--auth", action="append", default=[], metavar="USER:PASS",
                   help="require login; the user name is the annotator id (repeatable)")
    p.add_argument("--auth-file", default=None, help="file with one user:password per line")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="serve a human-judgment study in the browser (Gradio)",
                       description="Serve a study built by `gazemix study build` as a Gradio app.")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from apps.judgment_app import launch

    return launch(args)
