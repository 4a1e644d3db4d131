"""``gazemix mixers``: the table of registered mixers.

Usage:
    gazemix mixers              # fits the terminal (100 columns when it cannot be measured)
    gazemix mixers --wide       # one line per mixer, with the paper
    gazemix mixers --csv
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import textwrap

from gazemix.cli._util import tabulate


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mixers", help="list the registered mixers with what they read and their papers",
                       description="List every registered mixer (default options), what its mix reads and its paper.")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--wide", action="store_true", help="one line per mixer with the paper reference")
    out.add_argument("--csv", action="store_true", help="print CSV (every column) instead of a text table")
    p.set_defaults(func=run)


def reads_label(info) -> str:
    """What a mixer's mix and label read beyond the shapes, in words (default options)."""
    parts = [k for k in info.needs if k != "model"]
    if info.model_kind is not None:
        parts.append({"cnn": "CNN", "vit": "ViT", "any": "model"}[info.model_kind])
    if not info.content_independent and info.model_kind is None and not info.needs:
        parts.append("pixels")
    if info.relabels_after_forward:
        parts.append("relabel")
    return ", ".join(dict.fromkeys(parts)) or "shapes only"


def run(args: argparse.Namespace) -> int:
    from gazemix.registry import list_mixers

    infos = list_mixers()
    if args.csv:
        w = csv.writer(sys.stdout)
        w.writerow(("name", "reads", "modes", "summary", "reference"))
        w.writerows((m.name, reads_label(m), " ".join(m.modes), m.summary, m.reference) for m in infos)
        return 0
    if args.wide:
        print(tabulate([(m.name, reads_label(m), m.summary, m.reference) for m in infos],
                       ("name", "reads", "summary", "reference")))
        return 0
    width = shutil.get_terminal_size((100, 24)).columns
    name_w = max(len(m.name) for m in infos)
    reads_w = max(len(reads_label(m)) for m in infos)
    summary_w = max(30, width - name_w - reads_w - 4)
    rows = []
    for m in infos:
        lines = textwrap.wrap(m.summary, summary_w) or [""]
        rows.append((m.name, reads_label(m), lines[0]))
        rows += [("", "", line) for line in lines[1:]]
    print(tabulate(rows, ("name", "reads", "summary")))
    print("\n" + textwrap.fill("'reads': what the mix or label depends on beyond the image shapes (gaze, saliency, "
                               "attention, a CNN or ViT model, pixels); `--wide` adds each paper.", min(width, 100)))
    return 0
