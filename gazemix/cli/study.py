"""``gazemix study``: build a human-judgment study (mixed images as PNGs + an SQLite database).

Usage:
    gazemix study build --data demo --mixers mixup,cutmix,saliencymix --n 200 --seed 0 --db study.sqlite
    gazemix study build --data samples --mixers mixup,cutmix --n 40 --mode click --checks 0 --db click.sqlite
"""

from __future__ import annotations

import argparse

from gazemix.cli._util import log


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="build a human-judgment study for `gazemix app`",
                       description="Build a human-judgment study: mix a data set, render PNGs, store the items.")
    ssub = p.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    b = ssub.add_parser("build", help="mix images and create the study database")
    b.add_argument("--data", default="demo", help="demo (synthetic, with simulated gaze) or samples (bundled photos)")
    b.add_argument("--mixers", default="mixup,cutmix", help="comma-separated registered mixers (default mixup,cutmix)")
    b.add_argument("--n", type=int, default=200, help="number of mixed items, split over the mixers (default 200)")
    b.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    b.add_argument("--db", required=True, help="SQLite file to create or add the study to")
    b.add_argument("--mode", default="infer", choices=("infer", "softlabel", "click"),
                   help="elicitation: infer (slider + confidence), softlabel, click (default infer)")
    b.add_argument("--name", default=None, help="study name (default <data>-<mode>-seed<seed>)")
    b.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    b.add_argument("--pool", type=int, default=256, help="source images drawn from the data set (default 256)")
    b.add_argument("--checks", type=int, default=4, help="attention-check items: unmixed images (default 4)")
    b.add_argument("--distractors", type=int, default=2, help="extra classes offered in softlabel mode (default 2)")
    b.add_argument("--items-per-annotator", type=int, default=None, help="regular items per annotator (default all)")
    b.add_argument("--repeats", type=int, default=2, help="items repeated at the end for consistency (default 2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gazemix.study.build import build_study

    mixers = [m.strip() for m in args.mixers.split(",") if m.strip()]
    log(f"building a {args.mode} study from --data {args.data} with {', '.join(mixers)}")
    study = build_study(args.db, data=args.data, mixers=mixers, n=args.n, seed=args.seed, mode=args.mode,
                        size=args.size, pool=args.pool, checks=args.checks, distractors=args.distractors,
                        name=args.name, items_per_annotator=args.items_per_annotator, repeats=args.repeats)
    log(f"study {study.name!r}: {args.n} mixed items + {args.checks} checks; serve it with `gazemix app --db {args.db}`")
    print(args.db)
    return 0
