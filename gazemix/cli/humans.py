"""``gazemix humans``: analyse, export and import human judgments of mixed images.

Usage:
    gazemix humans report --db study.sqlite --out runs/report
    gazemix humans export --db study.sqlite --out runs/export
    gazemix humans import-hmix ../shared/data/hmix --db hmix.sqlite
    gazemix humans import-hmix ../shared/data/hmix --task softlabel --db hmix.sqlite
    gazemix humans report --db hmix.sqlite --study hmix-infer --out runs/hmix
"""

from __future__ import annotations

import argparse

from gazemix.cli._util import log, tabulate


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("humans", help="report, export or import human judgments",
                       description="Analyse a judgment study, export it as CSV, or import the published H-Mix data.")
    hsub = p.add_subparsers(dest="humans_command", metavar="ACTION", required=True)
    r = hsub.add_parser("report", help="human vs label vs gaze weights, agreement, checks (CSV + PNG)")
    e = hsub.add_parser("export", help="write items, annotators and responses as CSV")
    for q in (r, e):
        q.add_argument("--db", required=True, help="study database")
        q.add_argument("--study", default=None, help="study name when the database holds several")
        q.add_argument("--out", required=True, help="output folder")
    r.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    i = hsub.add_parser("import-hmix", help="load H-Mix's published judgments as a study")
    i.add_argument("dir", help="the H-Mix folder (hmix_infer_mixing_factor.csv, hmix_categorical_soft_labels.csv)")
    i.add_argument("--db", required=True, help="study database to create or add to")
    i.add_argument("--task", default="infer", choices=("infer", "softlabel"),
                   help="infer: mixing-factor sliders (default); softlabel: categorical soft labels")
    i.add_argument("--name", default=None, help="study name (default hmix-<task>)")
    i.add_argument("--images", default=None, help="optional folder with the mixed_*.png stimuli")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.humans_command == "report":
        from gazemix.study.analysis import write_report

        s = write_report(args.db, args.out, study=args.study, seed=args.seed)
        log(f"{s['study']}: {s['n_responses']} answers from {s['n_annotators']} annotators on {s['n_items']} items")
        fmt = lambda v: "-" if v is None else f"{v:.3f}"
        print(tabulate([(m["mixer"], m["n"], fmt(m["human_mean"]), fmt(m["label_mean"]), fmt(m["gaze_mean"]),
                         fmt(m["mae_label"]), fmt(m["bias_label"]), fmt(m["mae_gaze"])) for m in s["per_mixer"]],
                       ["mixer", "n", "human", "label", "gaze", "|h-label|", "bias", "|h-gaze|"]))
        checks = s["attention_checks"]
        if checks["n"]:
            log(f"attention checks: {checks['n']} answers, pass rate {checks['pass_rate']:.2f}, "
                f"{len(checks['failed'])} failed")
        print(args.out)
    elif args.humans_command == "export":
        from gazemix.study.export import export_csv

        for path in export_csv(args.db, args.out, study=args.study):
            print(path)
    else:
        from gazemix.study.hmix import import_hmix

        study = import_hmix(args.dir, args.db, task=args.task, name=args.name, images=args.images)
        log(f"imported H-Mix as study {study.name!r}; analyse with `gazemix humans report --db {args.db} --out DIR`")
        print(args.db)
    return 0
