"""``gazemix mixers``: the table of registered mixers.

Usage:
    gazemix mixers
    gazemix mixers --csv
"""

from __future__ import annotations

import argparse
import csv
import sys

from gazemix.cli._util import tabulate
from gazemix.registry import list_mixers


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mixers", help="list the registered mixers with their papers",
                       description="List every registered mixer, what it needs and its paper reference.")
    p.add_argument("--csv", action="store_true", help="print CSV instead of a text table")
    p.set_defaults(func=run)


def needs_label(info) -> str:
    """What a mixer needs beyond the batch, in words."""
    if info.content_independent:
        return "shape only"
    if info.needs:
        return ", ".join(info.needs)
    return "attention after forward" if info.relabels_after_forward else "pixels"


def run(args: argparse.Namespace) -> int:
    rows = [(m.name, needs_label(m), m.summary, m.reference) for m in list_mixers()]
    headers = ("name", "needs", "summary", "reference")
    if args.csv:
        w = csv.writer(sys.stdout)
        w.writerow(headers)
        w.writerows(rows)
    else:
        print(tabulate(rows, headers))
    return 0
