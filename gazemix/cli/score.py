"""``gazemix score``: how far each mixer's label is from the share of human gaze each source image keeps.

Usage:
    gazemix score                                         # embedded demo set, every mixer it can run
    gazemix score --mixers mixup,cutmix,resizemix --pairs 5000 --out runs/score
    gazemix score --data cub-gha --fixations ../CUB-GHA/data_5runs --pairs 10000 --out runs/cub
    gazemix score --data cub-gha --fixations ../CUB-GHA/data_5runs --root ../CUB_200_2011 --out runs/cub-img
    gazemix score --data folder --root my_lab_data --out runs/lab
    gazemix score --mixers automix,cutmix --mixer-opt automix.checkpoint=runs/automix/mixer.pt   # a trained mixer

Writes ``scores.csv`` (one row per mixer), ``samples.parquet`` (one row per mixed sample), ``summary.md``,
``gap_by_mixer.png``, ``lam_vs_gaze.png``, ``worst_examples.png`` and ``config.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import pandas as pd
import torch

from gazemix.cli._util import log, prepare_out, resolve_device, tabulate

DATA_SETS = ("demo", "cub-gha", "salicon", "mit1003", "cat2000", "coco-search18", "folder")


def _mixer_option(text: str) -> tuple[str, str, object]:
    """``MIXER.KEY=VALUE`` → ``(mixer, key, value)`` (the value as a Python literal when it parses as one)."""
    import ast

    target, sep, value = text.partition("=")
    mixer, dot, key = target.partition(".")
    if not sep or not dot or not mixer or not key:
        raise argparse.ArgumentTypeError(f"--mixer-opt takes MIXER.KEY=VALUE (e.g. automix.checkpoint=run/mixer.pt), "
                                         f"got {text!r}")
    try:
        return mixer.strip().lower(), key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return mixer.strip().lower(), key, value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score mixers against human gaze (the main job)",
                       description="Replay every mixer on human gaze maps and measure the label-gaze gap.")
    p.add_argument("--data", choices=DATA_SETS, default="demo", help="data set (default: the embedded demo set)")
    p.add_argument("--root", help="data set folder (CUB_200_2011 for cub-gha: images and labels, optional)")
    p.add_argument("--fixations", nargs="+", metavar="FILE",
                   help="cub-gha: Fixation_run<k>.txt files or their folder; salicon: the fixations JSON")
    p.add_argument("--mixers", default="all", help="'all' or comma-separated names (see `gazemix mixers`)")
    p.add_argument("--pairs", type=int, default=1000, help="mixed samples per mixer (default 1000)")
    p.add_argument("--img-size", type=int, default=224, help="image and gaze-map side in pixels (default 224)")
    p.add_argument("--fit", choices=("resize", "center_crop"), default="resize",
                   help="how images and maps are brought to --img-size (default resize)")
    p.add_argument("--sigma-px", type=float, default=None,
                   help="gaze blur in original-image pixels (default: 5%% of the long side, about 1 degree)")
    p.add_argument("--n-images", type=int, default=512, help="demo set size (default 512)")
    p.add_argument("--batch-size", type=int, default=64, help="pairs mixed at once (default 64)")
    p.add_argument("--worst", type=int, default=4, help="worst-gap examples per mixer in the gallery (default 4)")
    p.add_argument("--model", help="timm model name for mixers that need a model or its attention "
                   "(e.g. deit_tiny_patch16_224, resnet18); random-initialised unless --checkpoint is given")
    p.add_argument("--mixer-opt", action="append", type=_mixer_option, default=[], metavar="MIXER.KEY=VALUE",
                   help="option of one mixer (repeatable), e.g. automix.checkpoint=runs/automix/mixer.pt")
    p.add_argument("--checkpoint", help="local checkpoint/safetensors file for --model (nothing is downloaded)")
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same pairs, same numbers")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--cache", default=os.environ.get("GAZEMIX_CACHE", str(Path.home() / ".cache" / "gazemix")),
                   help="folder for cached rendered gaze maps (env GAZEMIX_CACHE)")
    p.add_argument("--out", default="runs/score", help="output folder (default runs/score)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def load_data(args: argparse.Namespace):
    """The requested data set as ScoringData, plus a line about what was dropped."""
    from gazemix.score_data import demo_scoring_data, samples_scoring_data

    size = args.img_size
    if args.data == "demo":
        return demo_scoring_data(n=args.n_images, size=size, seed=args.seed), "synthetic demo set (see README)"
    opts = dict(size=size, fit=args.fit, sigma_px=args.sigma_px, cache_dir=args.cache)
    if args.data == "cub-gha":
        from data_adapters.cub_gha import CubGha

        if not args.fixations:
            raise ValueError("--data cub-gha needs --fixations: the CUB-GHA Fixation_run<k>.txt files or their folder")
        paths = [Path(f) for f in args.fixations]
        if len(paths) == 1 and paths[0].is_dir():
            gaze_dir, runs = paths[0], None
        else:
            for f in paths:
                if not f.is_file():
                    raise FileNotFoundError(f"--fixations {f}: no such file")
            if len({f.parent.resolve() for f in paths}) != 1:
                raise ValueError("--fixations files must lie in one folder")
            runs = tuple(int(m.group(1)) for f in paths if (m := re.search(r"run(\d+)", f.name)))
            if len(runs) != len(paths):
                raise ValueError("--fixations files must be named Fixation_run<k>.txt")
            gaze_dir = paths[0].parent
        cub = CubGha(gaze_dir, args.root, runs=runs, on_error="skip")
        if cub.skipped:
            log(f"cub-gha: skipped {len(cub.skipped)} malformed records, e.g. {cub.skipped[0]}")
        data, note = samples_scoring_data(cub, name="cub-gha", class_names=cub.class_names, **opts)
        return data, note
    if not args.root and args.data != "salicon":
        raise ValueError(f"--data {args.data} needs --root: the folder where the data set was downloaded")
    if args.data == "salicon":
        from data_adapters.salicon import SaliconFixations

        if not args.fixations:
            raise ValueError("--data salicon needs --fixations: SALICON's fixations JSON file")
        samples = SaliconFixations(args.fixations[0], images_dir=args.root, on_error="skip")
    elif args.data == "mit1003":
        from data_adapters.mit1003 import Mit1003
        samples = Mit1003(args.root, on_error="skip")
    elif args.data == "cat2000":
        from data_adapters.cat2000 import Cat2000
        samples = Cat2000(args.root, on_error="skip")
    elif args.data == "coco-search18":
        from data_adapters.coco_search18 import CocoSearch18
        if not args.fixations:
            raise ValueError("--data coco-search18 needs --fixations: the COCO-Search18 fixations JSON file")
        samples = CocoSearch18(args.fixations[0], images_dir=args.root, on_error="skip")
    else:
        from data_adapters.folder import FolderGaze
        samples = FolderGaze(args.root, on_error="skip")
    return samples_scoring_data(samples, name=args.data, class_names=getattr(samples, "class_names", None), **opts)


def run(args: argparse.Namespace) -> int:
    from gazemix.plots import plot_gallery, plot_gap_bars, plot_lam_scatter
    from gazemix.scoring import build_mixers, mixer_options, score_mixers, summarise

    if args.pairs < 1 or args.batch_size < 1 or args.img_size < 8:
        raise ValueError("--pairs and --batch-size must be positive and --img-size at least 8")
    device = resolve_device(args.device)
    out = prepare_out(args.out)
    t0 = time.perf_counter()
    log(f"loading {args.data} data at {args.img_size}x{args.img_size} ...")
    data, note = load_data(args)
    log(f"{data.name}: {data.gaze.shape[0]} images with gaze; {note}")
    provider, available = None, ("gaze", "index")
    if args.model:
        provider = model_provider(args, data.num_classes or 1000, device)
        available += ("model", "attention", "logits")
    mixer_opts: dict[str, dict] = {}
    for mixer, key, value in args.mixer_opt:
        mixer_opts.setdefault(mixer, {})[key] = value
    mixers, skipped = build_mixers(args.mixers, num_classes=data.num_classes, seed=args.seed,
                                   has_images=data.images is not None, available_context=available,
                                   mixer_opts=mixer_opts)
    if not mixers:
        raise ValueError("no mixer can run on this data: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    log(f"scoring {len(mixers)} mixers on the same {args.pairs} pairs (seed {args.seed})")
    scored = score_mixers(mixers, data, pairs=args.pairs, seed=args.seed, batch_size=args.batch_size,
                          keep_worst=args.worst, context_provider=provider, device=device,
                          progress=not args.quiet)
    samples = scored.samples
    skipped.update(scored.skipped)
    mixers = {k: v for k, v in mixers.items() if k not in scored.skipped}
    if samples.empty:
        raise ValueError("no mixer could run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    summary = summarise(samples, seed=args.seed)
    options = mixer_options(mixers)
    summary["options"] = summary["mixer"].map(options)
    samples["options"] = samples["mixer"].map(options)

    summary.to_csv(out / "scores.csv", index=False)
    samples.to_parquet(out / "samples.parquet", index=False)
    plot_gap_bars(summary, out / "gap_by_mixer.png", title=f"Label-gaze gap per mixer — {data.name}, {args.pairs} pairs")
    plot_lam_scatter(samples, out / "lam_vs_gaze.png")
    if scored.examples:
        plot_gallery(scored.examples, out / "worst_examples.png")
    table = format_table(summary)
    (out / "summary.md").write_text(summary_markdown(args, data, summary, skipped, note, table))
    (out / "config.json").write_text(json.dumps({k: v for k, v in vars(args).items() if k != "func"}, indent=2))
    print(table)
    if skipped:
        print("\nskipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()))
    log(f"done in {time.perf_counter() - t0:.1f} s; results in {out}/ (scores.csv, samples.parquet, summary.md, *.png)")
    return 0


def model_provider(args: argparse.Namespace, num_classes: int, device: torch.device):
    """A context provider for model-driven mixers: the model, and for ViTs its attention and logits."""
    from gazemix.attention.vit import model_context
    from gazemix.models import build_model, is_vit

    model = build_model(args.model, num_classes, args.img_size)
    if args.checkpoint:
        from gazemix.models import load_pretrained
        load_pretrained(model, args.checkpoint)
    else:
        log(f"warning: --model {args.model} is random-initialised; pass --checkpoint for meaningful attention")
    model = model.to(device).eval()
    if is_vit(model):
        return model_context(model)
    return lambda images, targets: {"model": model}


def format_table(summary: pd.DataFrame) -> str:
    rows = [(r.mixer, r.n, f"{r.gap_mean:.3f} [{r.gap_mean_lo:.3f}, {r.gap_mean_hi:.3f}]", f"{r.gap_median:.3f}",
             f"{r.gap_p90:.3f}", f"{r.disagreement_rate:.3f}", f"{r.ghost_label_rate:.3f}", r.undefined)
            for r in summary.itertuples()]
    return tabulate(rows, ("mixer", "n", "gap mean [95% CI]", "median", "p90", "disagree", "ghost", "undefined"))


def summary_markdown(args, data, summary: pd.DataFrame, skipped: dict[str, str], note: str, table: str) -> str:
    lines = [f"# gazemix score — {data.name}", "",
             f"- data: {data.name}, {data.gaze.shape[0]} images with gaze at {args.img_size}x{args.img_size} ({note})",
             f"- pairs per mixer: {args.pairs} (the same pairs for every mixer), seed {args.seed}",
             "- gap = |label weight of the own image − share of gaze mass it keeps|, lam_gaze = g_own / (g_own + g_partner)",
             "- disagree: label and gaze favour different sources; ghost: a source keeps < 5 % of its gaze but gets ≥ 20 % of the label",
             "", "```", table, "```", ""]
    if skipped:
        lines += ["## Skipped", ""] + [f"- {k}: {v}" for k, v in skipped.items()] + [""]
    lines += ["![gap](gap_by_mixer.png)", "", "![scatter](lam_vs_gaze.png)", ""]
    lines += ["![worst](worst_examples.png)", ""] if args.worst > 0 else []
    return "\n".join(lines)
