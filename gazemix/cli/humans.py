"""``gazemix humans``: analyse, export and import human judgments of mixed images.

Usage:
    gazemix humans report --db study.sqlite --out runs/report
    gazemix humans export --db study.sqlite --out runs/export
    gazemix humans import-hmix ../shared/data/hmix --db hmix.sqlite
    gazemix humans import-hmix ../shared/data/hmix --task softlabel --db hmix.sqlite
    gazemix humans import-hmix ../shared/data/hmix --images stimuli/ --name hmix-served --db hmix.sqlite
    gazemix humans report --db hmix.sqlite --study hmix-infer --out runs/hmix
    gazemix humans calibrate --hmix ../shared/data/hmix --out runs/calibrate-hmix
    gazemix humans calibrate --db study.sqlite --study my-study --unit annotator --out runs/calibrate
"""

from __future__ import annotations

import argparse
import time

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
    _add_calibrate(hsub)
    p.set_defaults(func=run)


def _add_calibrate(hsub: argparse._SubParsersAction) -> None:
    # literals, not gazemix.study.calibration's constants: building the parser must not import pandas
    c = hsub.add_parser("calibrate", help="fit perceived share against lambda per mixer (JSON + PNG) for training",
                        description="Fit, per mixer, the share of image 1 people perceive as a monotone (isotonic) "
                                    "function of the mixer's label weight lambda, with bootstrap bands; "
                                    "`gazemix train --label-source human --calibration DIR/calibration.json` "
                                    "trains on it.")
    source = c.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", help="study database")
    source.add_argument("--hmix", metavar="DIR", help="the H-Mix folder (hmix_infer_mixing_factor.csv)")
    c.add_argument("--study", help="study name when the database holds several (default: its only study)")
    c.add_argument("--unit", choices=("both", "annotator", "item"), default="both",
                   help="bootstrap resampling unit: both = annotators and items (pigeonhole bootstrap; default)")
    c.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    c.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    c.add_argument("--out", help="new output folder (default: runs/calibrate/<date>-<time>-<source>)")


def _calibrate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from gazemix.outputs import OutputError, check_writable_folder
    from gazemix.study.calibration import answers_from_db, answers_from_hmix, fit_calibration, write_calibration

    if args.hmix is not None and args.study is not None:
        raise ValueError("--study selects a study of --db; H-Mix (--hmix) has one")
    if args.n_boot < 10:
        raise ValueError(f"--n-boot must be at least 10, got {args.n_boot}")
    answers = answers_from_hmix(args.hmix) if args.hmix is not None else answers_from_db(args.db, args.study)
    out = Path(args.out or time.strftime("runs/calibrate/%Y%m%d-%H%M%S-") + answers.source.get("study", "hmix"))
    try:
        check_writable_folder(out, replace=False)
    except OutputError as err:
        raise ValueError(f"--out {err}: pass a new or empty folder") from None
    fits = fit_calibration(answers, unit=args.unit, n_boot=args.n_boot, seed=args.seed)
    path = write_calibration(fits, answers, out, unit=args.unit, n_boot=args.n_boot, seed=args.seed)
    rows = [[name, f"{p.lam:.3g}", str(p.n), f"{p.mean:.3f}", f"{float(f(p.lam)):.3f}",
             "[{:.3f}, {:.3f}]".format(*f.band(p.lam))] for name, f in fits.items() for p in f.points.itertuples()]
    print(tabulate(rows, ["mixer", "lambda", "answers", "mean perceived", "fitted", "95% band of the fit"]))
    for name, f in fits.items():
        log(f"{name}: {f.n_answers:,} answers from {f.n_annotators} annotators on {f.n_items:,} items")
    unit = "annotators and items" if args.unit == "both" else f"{args.unit}s"
    log(f"bands: {args.n_boot} bootstrap resamples of {unit}; plot: {path.parent / 'calibration.png'}")
    print(f"wrote {path}")


def run(args: argparse.Namespace) -> int:
    if args.humans_command == "calibrate":
        _calibrate(args)
    elif args.humans_command == "report":
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
