"""``gazemix score``: how far each mixer's label is from the share of human gaze each source image keeps.

Usage:
    gazemix score                                         # embedded demo set, every mixer it can run
    gazemix score --mixers mixup,cutmix,resizemix --pairs 5000 --out runs/score-3
    gazemix score --data cub-gha --fixations ../CUB-GHA/data_5runs --pairs 10000 --out runs/cub
    gazemix score --data cub-gha --fixations ../CUB-GHA/data_5runs --root ../CUB_200_2011 --out runs/cub-img
    gazemix score --data folder --root my_lab_data --out runs/lab
    gazemix score --mixers automix,cutmix --mixer-opt automix.checkpoint=runs/automix/mixer.pt   # a trained mixer

Mixers are given one half of each image's observers and scored against the other half
(``--observer-split half``); the table reads each mixer's gap against the human ceiling (how far the two
halves are from each other on the same mixes) and against ``--baseline`` (paired differences).

Writes ``scores.csv`` (one row per mixer), ``samples.parquet`` (one row per mixed sample), ``summary.md``,
``gap_by_mixer.png``, ``lam_vs_gaze.png``, ``worst_examples.png`` and ``config.json`` into a fresh run folder
(default ``runs/score/<date>-<time>-<data>``), written whole: an interrupted run leaves nothing behind.
Exit status: 0, 1 when a mixer failed with an unexpected error (listed apart from the skips), 2 for a user error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gazemix.cli import CliError
from gazemix.cli._util import log, resolve_device, tabulate
from gazemix.datasets import DATA_SETS, DataSetError
from gazemix.observers import SPLITS

if TYPE_CHECKING:
    import pandas as pd
    import torch

_FLAGS = {"root": "--root", "fixations": "--fixations", "gaze_source": "--gaze-source", "data": "--data",
          "observer_split": "--observer-split", "max_bad_fraction": "--max-bad-fraction"}


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
                       description="Replay every mixer on human gaze maps and measure the label-gaze gap, against "
                                   "the human ceiling and a baseline mixer.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", choices=list(DATA_SETS), default="demo",
                   help="data set (demo: the embedded synthetic set)")
    p.add_argument("--root", help="data set folder (CUB_200_2011 for cub-gha: images and labels, optional)")
    p.add_argument("--fixations", nargs="+", metavar="FILE",
                   help="cub-gha: Fixation_run<k>.txt files or their folder; salicon, coco-search18: the JSON")
    p.add_argument("--gaze-source", help="which gaze of a data set that has several (e.g. osie: eye, mouse_lab)")
    p.add_argument("--mixers", default="all", help="'all' or comma-separated names (see `gazemix mixers`)")
    p.add_argument("--pairs", type=int, default=1000, help="mixed samples per mixer")
    p.add_argument("--observer-split", choices=SPLITS, default="half",
                   help="half: mixers see one half of each image's observers and are scored on the other; "
                        "none: one set of gaze for both (gaze-reading mixers are then circular)")
    p.add_argument("--baseline", default="cutmix", help="mixer every other is compared with, pair by pair")
    p.add_argument("--img-size", type=int, default=224, help="image and gaze-map side in pixels")
    p.add_argument("--fit", choices=("resize", "center_crop"), default="resize",
                   help="how images and maps are brought to --img-size")
    p.add_argument("--sigma-px", type=float, default=None,
                   help="gaze blur in original-image pixels (default: 5%% of the long side, about 1 degree)")
    p.add_argument("--n-images", type=int, default=512, help="demo set size")
    p.add_argument("--batch-size", type=int, default=64, help="pairs mixed at once")
    p.add_argument("--worst", type=int, default=4, help="worst-gap examples per mixer in the gallery (0: none)")
    p.add_argument("--model", help="timm model name for mixers that need a model or its attention (e.g. "
                   "deit_tiny_patch16_224, resnet18; random-initialised unless --checkpoint is given), or 'none'. "
                   "Default: on the demo set, the demo CNN and ViT (trained once, cached); elsewhere none")
    p.add_argument("--checkpoint", help="local checkpoint/safetensors file for --model (nothing is downloaded)")
    p.add_argument("--train-learned", action="store_true",
                   help="demo set: also train AutoMix and TransformMix once (cached) and score them")
    p.add_argument("--mixer-opt", action="append", type=_mixer_option, default=[], metavar="MIXER.KEY=VALUE",
                   help="option of one mixer (repeatable), e.g. automix.checkpoint=runs/automix/mixer.pt")
    p.add_argument("--max-bad-fraction", type=float, default=0.01,
                   help="stop when more than this fraction of the data set's records are malformed")
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same pairs, same numbers")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--cache", default=os.environ.get("GAZEMIX_CACHE", str(Path.home() / ".cache" / "gazemix")),
                   help="folder for cached rendered gaze maps (env GAZEMIX_CACHE)")
    p.add_argument("--out", help="output folder (default: a new runs/score/<date>-<time>-<data>)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it holds an earlier run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true", help="also print the time each mixer took")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    for flag, value, low in (("--pairs", args.pairs, 1), ("--batch-size", args.batch_size, 1),
                             ("--img-size", args.img_size, 8), ("--n-images", args.n_images, 2),
                             ("--worst", args.worst, 0)):
        if value < low:
            raise CliError(f"{flag} must be at least {low}, got {value}")
    if args.img_size > 4096:
        raise CliError(f"--img-size {args.img_size} is larger than 4096 pixels")
    if not 0 <= args.max_bad_fraction <= 1:
        raise CliError(f"--max-bad-fraction must be between 0 and 1, got {args.max_bad_fraction}")
    if args.sigma_px is not None and not args.sigma_px > 0:
        raise CliError(f"--sigma-px must be positive, got {args.sigma_px}")
    if args.checkpoint and not args.model:
        raise CliError("--checkpoint needs --model: the timm architecture the checkpoint belongs to")
    if args.checkpoint and not Path(args.checkpoint).is_file():
        raise CliError(f"--checkpoint {args.checkpoint}: no such file")


def load_data(args: argparse.Namespace):
    """The requested data set as ScoringData, plus notes on what was dropped (DataSetErrors name the flag)."""
    from gazemix.score_data import load_scoring_data

    try:
        return load_scoring_data(args.data, root=args.root, fixations=args.fixations, gaze_source=args.gaze_source,
                                 size=args.img_size, fit=args.fit, sigma_px=args.sigma_px, cache_dir=args.cache,
                                 observer_split=args.observer_split, seed=args.seed, n_images=args.n_images,
                                 max_bad_fraction=args.max_bad_fraction)
    except DataSetError as err:
        flag = _FLAGS.get(err.option or "")
        raise CliError(f"{flag}: {err}" if flag else str(err)) from None


def run(args: argparse.Namespace) -> int:
    from gazemix.training.distributed import cleanup, setup

    _check_args(args)
    dist = setup(resolve_device(args.device))
    try:
        return _run(args, dist)
    finally:
        cleanup(dist)


def _run(args: argparse.Namespace, dist) -> int:
    from gazemix.outputs import OutputError, check_writable_folder, staged_folder
    from gazemix.scoring import build_mixers, merge_runs, mixer_options, score_mixers, summarise

    device = dist.device
    out = Path(args.out) if args.out else Path("runs", "score", f"{time.strftime('%Y%m%d-%H%M%S')}-{args.data}")
    if dist.enabled and not args.out:
        raise CliError("--out is required under torchrun (every rank must agree on the run folder)")
    try:
        check_writable_folder(out, replace=args.overwrite)
    except OutputError as err:
        raise CliError(f"--out: {err}: choose a new --out, or pass --overwrite to replace it") from None
    t0 = time.perf_counter()
    log(f"loading {args.data} data at {args.img_size}x{args.img_size} ...")
    data, notes = load_data(args)
    log(f"{data.name}: {data.gaze.shape[0]} images with gaze; " + "; ".join(notes))
    from gazemix.scoring import scored_names

    rows = scored_names(args.mixers, image_saliency_variants=False)
    models, mixer_opts = model_contexts(args, data, device, rows)
    if not models:  # no model: score the image-saliency variants of the model-driven saliency mixers instead
        rows = scored_names(args.mixers)
    for mixer, key, value in args.mixer_opt:
        mixer_opts.setdefault(mixer, {})[key] = value
    learned_skips = _untrained_learned(rows, mixer_opts)
    rows = [r for r in rows if r not in learned_skips]
    try:
        mixers, skipped = build_mixers(rows, num_classes=data.num_classes, seed=args.seed,
                                       has_images=data.images is not None, models=models, mixer_opts=mixer_opts)
    except ValueError as err:
        raise CliError(f"--mixers/--mixer-opt: {err}") from None
    skipped.update(learned_skips)
    if not mixers:
        raise CliError("no mixer can run on this data: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    if args.baseline not in mixers:
        log(f"note: baseline {args.baseline!r} is not scored in this run, so no paired differences are reported")
    log(f"scoring {len(mixers)} mixers on the same {args.pairs} pairs (seed {args.seed}); "
        f"{_split_line(data)}")
    scored = score_mixers(mixers, data, pairs=args.pairs, seed=args.seed, batch_size=args.batch_size,
                          keep_worst=args.worst, models=models, device=device,
                          progress=not args.quiet and dist.is_main, shard=(dist.rank, dist.world_size))
    if dist.enabled:
        import torch.distributed

        log(f"rank {dist.rank}/{dist.world_size}: scored every {dist.world_size}th chunk of {args.batch_size} pairs "
            f"from chunk {dist.rank} ({len(scored.samples)} rows)")
        shards = [None] * dist.world_size if dist.is_main else None
        torch.distributed.gather_object(scored, shards, dst=0)
        if not dist.is_main:
            return 1 if scored.errors else 0
        scored = merge_runs(shards, pairs=args.pairs, keep_worst=args.worst)
    skipped.update(scored.skipped)
    samples = scored.samples
    if samples.empty:
        problems = {**skipped, **{k: v.splitlines()[0] for k, v in scored.errors.items()}}
        raise CliError("no mixer could run: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))
    summary = summarise(samples, baseline=args.baseline, circular=scored.circular, seed=args.seed)
    options = mixer_options({k: v for k, v in mixers.items() if k in scored.seconds})
    summary["options"] = summary["mixer"].map(options)
    samples["options"] = samples["mixer"].map(options)
    table = format_table(summary)
    with staged_folder(out, replace=args.overwrite) as tmp:
        _write_outputs(tmp, args, data, summary, samples, scored, skipped, notes, models, table)
    print(table)
    if skipped:
        print("\nskipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()))
    if scored.errors:
        print("\nFAILED (a bug, not a skip): " + "; ".join(f"{k} ({v.splitlines()[0]})" for k, v in scored.errors.items()))
    if args.verbose:
        print("\n" + tabulate([(k, f"{v:.2f}") for k, v in sorted(scored.seconds.items(), key=lambda kv: -kv[1])],
                              ("mixer", "seconds")))
    print(f"\n{len(scored.seconds)} mixers scored in {time.perf_counter() - t0:.1f} s; results in {out}/")
    return 1 if scored.errors else 0


def _split_line(data) -> str:
    if data.held_out:
        return (f"mixers see guide gaze ({data.split['guide_observers_per_image']} observers per image) and are "
                f"scored on held-out gaze ({data.split['evaluation_observers_per_image']})")
    return f"no observer split ({data.split.get('reason', 'none')}): gaze-reading mixers are circular"


def _write_outputs(folder: Path, args, data, summary: pd.DataFrame, samples: pd.DataFrame, scored, skipped, notes,
                   models, table: str) -> None:
    from gazemix.plots import plot_gallery, plot_gap_bars, plot_lam_scatter

    summary.to_csv(folder / "scores.csv", index=False)
    samples.to_parquet(folder / "samples.parquet", index=False)
    plot_gap_bars(summary, folder / "gap_by_mixer.png",
                  title=f"Label-gaze gap per mixer — {data.name}, {args.pairs} samples each")
    plot_lam_scatter(samples, folder / "lam_vs_gaze.png")
    if scored.examples:
        plot_gallery(scored.examples, folder / "worst_examples.png")
    (folder / "summary.md").write_text(summary_markdown(args, data, summary, skipped, scored, notes, models, table))
    config = {k: v for k, v in vars(args).items() if k != "func"}
    config.update(split=data.split, models={k: m.description for k, m in models.items()},
                  seconds_per_mixer=scored.seconds)
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=str))


LEARNED = ("automix", "transformmix")


def _untrained_learned(rows: list[str], mixer_opts: dict[str, dict]) -> dict[str, str]:
    """Learned mixers asked for without a trained ``mixer.pt``: skipped, with the command that trains them."""
    return {r: "has no trained mixer.pt: add --train-learned (trains it once on the demo set, cached) or pass "
               f"--mixer-opt {r}.checkpoint=FILE from `gazemix train --mixer {r}`"
            for r in rows if r in LEARNED and "checkpoint" not in mixer_opts.get(r, {})}


def _any_reads_a_model(rows: list[str]) -> bool:
    """Whether a requested row (with default options) reads a model: only then are demo models loaded."""
    from gazemix.registry import create_mixer

    for row in rows:
        base, _, source = row.partition("@")
        try:
            mixer = create_mixer(base, **({"saliency_source": source} if source else {}))
        except ValueError:
            continue  # build_mixers reports it
        if mixer.model_kind is not None or mixer.relabels_after_forward:
            return True
    return False


def model_contexts(args: argparse.Namespace, data, device: torch.device, rows: list[str]) -> tuple[dict, dict]:
    """The models that serve model-driven mixers, and the mixer options that go with them.

    ``--model NAME`` (with ``--checkpoint``): that timm model, as a CNN or a ViT. Otherwise, on the demo set, the
    demo CNN and ViT (:mod:`gazemix.demo_models`: trained once, cached under ``--cache``), the token mixers put
    on the ViT's grid, and with ``--train-learned`` the learned mixers trained the same way. ``--model none``:
    no model.
    """
    from gazemix.scoring import ModelContext

    if args.model == "none":
        return {}, {}
    if args.model:
        from gazemix.attention.vit import model_context
        from gazemix.models import build_model, is_vit, load_pretrained

        model = build_model(args.model, data.num_classes or 1000, args.img_size)
        if args.checkpoint:
            load_pretrained(model, args.checkpoint)
            description = f"{args.model} from {args.checkpoint}"
        else:
            log(f"warning: --model {args.model} is random-initialised; pass --checkpoint for meaningful attention")
            description = f"{args.model}, random-initialised (a smoke test, not meaningful attention)"
        model = model.to(device).eval()
        if is_vit(model):
            return {"vit": ModelContext("vit", model_context(model), ("model", "attention", "logits"), description)}, {}
        return {"cnn": ModelContext("cnn", lambda images, targets: {"model": model}, ("model",), description)}, {}
    if data.name != "demo" or not _any_reads_a_model(rows):
        return {}, {}
    from gazemix.demo_models import load_or_train_demo_models, train_learned_mixers, vit_mixer_options

    cache = Path(args.cache) / "demo-models"
    demo = load_or_train_demo_models(cache, progress=not args.quiet, img_size=args.img_size)
    log(demo.summary())
    demo.cnn.to(device)
    demo.vit.to(device)
    models = {"cnn": ModelContext("cnn", demo.context_provider("cnn"), ("model",),
                                  f"demo CNN, {demo.accuracy['cnn']:.1f} % held-out top-1 ({demo.path})"),
              "vit": ModelContext("vit", demo.context_provider("vit"), ("model", "attention", "logits"),
                                  f"demo ViT, {demo.accuracy['vit']:.1f} % held-out top-1 ({demo.path})")}
    options = {name: opts for name, opts in vit_mixer_options(args.img_size).items() if name in rows}
    wanted = tuple(name for name in LEARNED if name in rows)
    if args.train_learned and wanted:
        for name, path in train_learned_mixers(cache, names=wanted, progress=not args.quiet).items():
            options[name] = {"checkpoint": str(path)}
    return models, options


def _ci(mean: float, lo: float, hi: float, signed: bool = False) -> str:
    if math.isnan(mean):
        return "n/a"
    def text(v: float) -> str:
        v = 0.0 if abs(v) < 5e-4 else v  # no "-0.000"
        return f"{v:+.3f}" if signed else f"{v:.3f}"
    return f"{text(mean)} [{text(lo)}, {text(hi)}]"


def format_table(summary: pd.DataFrame) -> str:
    rows = []
    for r in summary.itertuples():
        name = f"{r.mixer}*" if r.circular else r.mixer
        diff = r.verdict if r.verdict in ("baseline", "not paired") else \
            f"{_ci(r.diff_vs_baseline, r.diff_vs_baseline_lo, r.diff_vs_baseline_hi, True)} {r.verdict}"
        rows.append((name, r.n, _ci(r.gap_mean, r.gap_mean_lo, r.gap_mean_hi), _ci(r.ceiling_mean, r.ceiling_mean_lo,
                     r.ceiling_mean_hi), _ci(r.excess_gap, r.excess_gap_lo, r.excess_gap_hi, True), diff,
                     f"{r.disagreement_rate:.3f}", f"{r.ghost_label_rate:.3f}", r.undefined))
    return tabulate(rows, ("mixer", "n", "gap [95% CI]", "ceiling [95% CI]", "excess gap [95% CI]",
                           "vs baseline (paired) [95% CI]", "disagree", "ghost", "undef"))


def summary_markdown(args, data, summary: pd.DataFrame, skipped: dict[str, str], scored, notes: list[str],
                     models: dict, table: str) -> str:
    lines = [f"# gazemix score — {data.name}", "",
             f"- data: {data.name}, {data.gaze.shape[0]} images with gaze at {args.img_size}x{args.img_size}",
             *[f"  - {n}" for n in notes],
             f"- samples per mixer: {args.pairs} (the same image pairs for every mixer, each pair mixed both ways), "
             f"seed {args.seed}",
             f"- observers: {_split_line(data)}.",
             "- gap = |label weight of the own image − share of held-out gaze mass it keeps|, "
             "lam_gaze = g_own / (g_own + g_partner)",
             "- ceiling = |gaze share from the guide observers − gaze share from the held-out observers| on the same "
             "mix: how far humans are from each other; no label can be expected below it. excess gap = gap − ceiling.",
             f"- vs baseline: mean of gap(mixer) − gap({args.baseline}) over the same samples; negative = closer to "
             "humans than the baseline. 'within noise' when the 95 % interval contains 0.",
             "- intervals: percentile bootstrap over image pairs (1000 resamples; a pair's two directions move "
             "together).",
             "- disagree: label and gaze favour different sources; ghost: a source keeps < 5 % of its gaze but gets "
             "≥ 20 % of the label",
             *[f"- model ({k}): {m.description}" for k, m in models.items()],
             "", "```", table, "```", ""]
    if scored.circular:
        lines += ["\\* circular: " + ", ".join(scored.circular) + " read gaze, and this data set has no observer "
                  "ids to hold any out, so they are graded on the gaze that guided them (their gap is optimistic).", ""]
    if scored.errors:
        lines += ["## Failed (unexpected errors: bugs, not skips)", ""]
        for k, v in scored.errors.items():
            lines += [f"### {k}", "", "```", v.rstrip(), "```", ""]
    if skipped:
        lines += ["## Skipped", ""] + [f"- {k}: {v}" for k, v in skipped.items()] + [""]
    lines += ["## Time per mixer", ""] + [f"- {k}: {v:.1f} s" for k, v in scored.seconds.items()] + [""]
    lines += ["![gap](gap_by_mixer.png)", "", "![scatter](lam_vs_gaze.png)", ""]
    lines += ["![worst](worst_examples.png)", ""] if scored.examples else []
    return "\n".join(lines)
