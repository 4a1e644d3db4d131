"""``gazemix app``: serve a study in the browser (the Gradio judgment app, ``apps/judgment_app.py``, which owns
its options).

Usage:
    gazemix app --db study.sqlite
    gazemix app --db study.sqlite --host 0.0.0.0 --port 7861 --auth alice:secret --auth bob:pw
    gazemix app --db study.sqlite --auth-file annotators.txt

Crowd workers arrive with ``?PROLIFIC_PID=...&STUDY_ID=...&SESSION_ID=...`` (or ``?id=...``) in the URL.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from apps.judgment_args import add_arguments

    p = sub.add_parser("app", help="serve a human-judgment study in the browser (Gradio)",
                       description="Serve a study built by `gazemix study build` as a Gradio app.")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from apps.judgment_app import launch

    return launch(args)
