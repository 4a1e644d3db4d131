"""``gazemix study``: build a human-judgment study (mixed images as PNGs + an SQLite database).

Usage:
    gazemix study build --data demo --mixers mixup,cutmix,saliencymix --pairs 200 --seed 0 --db study.sqlite
    gazemix study build --data samples --mixers mixup,cutmix --pairs 40 --mode click --checks 0 --db click.sqlite
    gazemix study build --data folder --root my_images --mixers mixup,cutmix --db lab.sqlite \\
        --title "Blended photos" --consent consent.md --instructions instructions.md --questions quiz.json \\
        --completion-code C1234ABC --redirect-url "https://app.prolific.com/submissions/complete?cc=C1234ABC"
    gazemix study build --data cub-gha --fixations ../CUB-GHA/data_5runs --root ../CUB_200_2011 --db cub.sqlite
"""

from __future__ import annotations

import argparse
import shlex

from gazemix.cli._util import add_renamed, log


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="build a human-judgment study for `gazemix app`",
                       description="Build a human-judgment study: mix a data set, render PNGs, store the items.")
    ssub = p.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    b = ssub.add_parser("build", help="mix images and create the study database")
    from gazemix.datasets import DATA_SETS

    g = b.add_argument_group("data")
    g.add_argument("--data", default="demo", choices=("demo", "samples", *(n for n in DATA_SETS if n != "demo")),
                   help="demo (synthetic, simulated gaze), samples (bundled photos), folder (--root of class "
                        "sub-folders, gaze beside the images optional), cub-gha (--fixations + --root "
                        "CUB_200_2011) or another data set with photographs and labels; default demo")
    g.add_argument("--root", default=None, help="the folder holding the photographs (folder: root/<class>/<image>; "
                   "cub-gha: CUB_200_2011)")
    g.add_argument("--fixations", nargs="+", default=None, metavar="FILE",
                   help="gaze files kept apart from the images (cub-gha: Fixation_run<k>.txt or their folder)")
    g.add_argument("--fit", default="center_crop", choices=("center_crop", "resize"),
                   help="how photographs are brought to --img-size (default center_crop)")
    g.add_argument("--max-bad-fraction", type=float, default=0.01,
                   help="stop when more than this fraction of the data's records is unusable (default 0.01)")
    g.add_argument("--img-size", type=int, default=224, help="image side in pixels, 8..1024 (default 224)")
    add_renamed(g, "--max-skipped", "--max-bad-fraction", type=float)
    add_renamed(g, "--size", "--img-size", type=int)
    g.add_argument("--pool", type=int, default=256, help="source images drawn from the data set (default 256)")
    m = b.add_argument_group("items")
    m.add_argument("--mixers", default="mixup,cutmix", help="comma-separated registered mixers (default mixup,cutmix)")
    m.add_argument("--pairs", type=int, default=200, help="number of mixed items, split over the mixers (default 200)")
    add_renamed(m, "--n", "--pairs", type=int)
    m.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    m.add_argument("--mode", default="infer", choices=("infer", "softlabel", "click"),
                   help="elicitation: infer (mixing slider + confidence; default), softlabel, click")
    m.add_argument("--checks", type=int, default=4, help="attention-check items: unmixed images (default 4)")
    m.add_argument("--practice", type=int, default=3, help="practice items with feedback: unmixed images (default 3)")
    m.add_argument("--distractors", type=int, default=2, help="extra classes offered in softlabel mode (default 2)")
    m.add_argument("--items-per-annotator", type=int, default=None,
                   help="regular items per annotator (default: what fits in about 15 minutes at the mode's pace)")
    m.add_argument("--repeats", type=int, default=2, help="items repeated at the end for consistency (default 2)")
    s = b.add_argument_group("what participants see")
    s.add_argument("--title", default=None, help="heading of every page (default per mode)")
    s.add_argument("--instructions", default=None, metavar="FILE.md", help="instructions (markdown; default per mode)")
    s.add_argument("--consent", default=None, metavar="FILE.md",
                   help="consent text (markdown; a generic one by default)")
    s.add_argument("--questions", default=None, metavar="FILE.json",
                   help='comprehension questions: [{"question": ..., "options": [...], "answer": ...}, ...]')
    s.add_argument("--minutes", type=int, default=None, help="estimated time shown on the consent page "
                   "(default: estimated from the number of items)")
    s.add_argument("--completion-code", default=None, help="shown on the end page (default: a random code)")
    s.add_argument("--redirect-url", default=None, help="link on the end page, e.g. Prolific's completion URL")
    d = b.add_argument_group("storage")
    d.add_argument("--db", required=True, help="SQLite file to create or add the study to")
    d.add_argument("--name", default=None, help="study name (default <data>-<mode>-seed<seed>)")
    d.add_argument("--synchronous", default="full", choices=("full", "normal"),
                   help="durability of a new database: full (default; answers survive an OS crash) or normal "
                        "(faster; answers survive a killed server only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gazemix.study.build import build_study
    from gazemix.study.protocol import load_questions, read_text_file

    texts = {k: read_text_file(getattr(args, k), f"--{k}") if getattr(args, k) else None
             for k in ("instructions", "consent")}
    questions = load_questions(args.questions) if args.questions else None
    mixers = [m.strip() for m in args.mixers.split(",") if m.strip()]
    study = build_study(args.db, data=args.data, root=args.root, fixations=args.fixations, fit=args.fit,
                        max_skipped=args.max_bad_fraction, mixers=mixers, n=args.pairs, seed=args.seed, mode=args.mode,
                        size=args.img_size, pool=args.pool, checks=args.checks, practice=args.practice,
                        distractors=args.distractors, name=args.name, items_per_annotator=args.items_per_annotator,
                        repeats=args.repeats, title=args.title, questions=questions, minutes=args.minutes,
                        completion_code=args.completion_code, redirect_url=args.redirect_url,
                        synchronous=args.synchronous.upper(), log=log, **texts)
    cfg = study.config
    if not args.consent:
        log("note: no --consent given; participants see a generic consent text (replace it for a real study)")
    log(f"study {study.name!r}: {args.pairs} mixed items + {args.checks} checks + {args.practice} practice; "
        f"{cfg['items_per_annotator']} items per annotator, about {cfg['minutes']} minutes; completion code "
        f"{cfg['completion_code']}")
    log(f"serve it with `gazemix app --db {shlex.quote(str(args.db))} --study {shlex.quote(study.name)}`; "
        "participants open the URL with ?PROLIFIC_PID=... or ?id=...")
    print(args.db)
    return 0
