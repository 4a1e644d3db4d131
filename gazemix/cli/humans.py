"""``gazemix humans``: analyse, export and import human judgments of mixed images.

Usage:
    gazemix humans report --db study.sqlite --out runs/report
    gazemix humans export --db study.sqlite --out runs/export
    gazemix humans import-hmix ../shared/data/hmix --db hmix.sqlite
    gazemix humans import-hmix ../shared/data/hmix --task softlabel --db hmix.sqlite
    gazemix humans import-hmix ../shared/data/hmix --images stimuli/ --name hmix-served --db hmix.sqlite
    gazemix humans report --db hmix.sqlite --study hmix-infer --out runs/hmix
"""

from __future__ import annotations

import argparse

from gazemix.cli._util import log, tabulate


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("humans", help="report, export or import human judgments",
                       description="Analyse a judgment study, export it as CSV, or import the published H-Mix data.")
    hsub = p.add_subparsers(dest="humans_command", metavar="ACTION", required=True)
    r = hsub.add_parser("report", help="human vs label vs gaze weights, agreement, checks (CSV + PNG + summary.md)")
    e = hsub.add_parser("export", help="write items, annotators, responses and events as CSV")
    for q in (r, e):
        q.add_argument("--db", required=True, help="study database")
        q.add_argument("--study", default=None, help="study name when the database holds several")
        q.add_argument("--out", required=True, help="output folder (written whole; an earlier one is replaced)")
    r.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    i = hsub.add_parser("import-hmix", help="load H-Mix's published judgments as a study")
    i.add_argument("dir", help="the H-Mix folder (hmix_infer_mixing_factor.csv, hmix_categorical_soft_labels.csv)")
    i.add_argument("--db", required=True, help="study database to create or add to")
    i.add_argument("--task", default="infer", choices=("infer", "softlabel"),
                   help="infer: mixing-factor sliders (default); softlabel: categorical soft labels")
    i.add_argument("--name", default=None, help="study name (default hmix-<task>)")
    i.add_argument("--images", default=None,
                   help="folder with the mixed_*.png stimuli: copied into the study so `gazemix app` can serve it")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.humans_command == "report":
        from gazemix.study.analysis import summary_table, write_report

        s = write_report(args.db, args.out, study=args.study, seed=args.seed)
        log(f"{s['title']} ({s['study']}, {s['mode']} mode): {s['n_responses']} answers from {s['n_annotators']} "
            f"annotators on {s['n_items']} items")
        headers, rows = summary_table(s)
        print(tabulate(rows, headers))
        for reason, count in s["dropped"].items():
            log(f"left out: {count} answers — {reason}")
        for a in s["agreement"]:
            if a["alpha"] is None:
                log(f"agreement ({a['scope']}): not computed — {a['reason']}")
            else:
                log(f"agreement ({a['scope']}): alpha {a['alpha']:.3f} on {a['n_items']} items")
        checks = s["attention_checks"]
        if checks["n"]:
            log(f"attention checks: {checks['n']} answers, pass rate {checks['pass_rate']:.2f}, "
                f"{len(checks['failed'])} failed")
        log(f"column meanings, agreement and checks: {args.out}/summary.md")
        print(args.out)
    elif args.humans_command == "export":
        from gazemix.study.export import export_csv

        for path in export_csv(args.db, args.out, study=args.study):
            print(path)
    else:
        from gazemix.study.hmix import import_hmix

        study = import_hmix(args.dir, args.db, task=args.task, name=args.name, images=args.images)
        log(f"imported H-Mix as study {study.name!r}; analyse with `gazemix humans report --db {args.db} --out DIR`"
            + (f"; serve it with `gazemix app --db {args.db} --study {study.name}`" if args.images else
               " (pass --images to serve it)"))
        print(args.db)
    return 0
