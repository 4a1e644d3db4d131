"""``gazemix train``: train a timm classifier with any gazemix mixer (gaze-guided ones get the data set's gaze).

Usage:
    gazemix train --data demo --model deit_tiny_patch16_224 --mixer tdattenmix --epochs 30
    gazemix train --data demo --model resnet18 --mixer cutmix --img-size 64 --epochs 10 --out runs/demo-cutmix
    gazemix train --data cub-gha --root ~/data/CUB_200_2011 --fixations ~/data/CUB-GHA/data_5runs \\
        --model deit_small_patch16_224 --mixer tdattenmix --crop-scale 0.5 1 \\
        --checkpoint ~/weights/deit_small.pth --epochs 100 --batch-size 64 --out runs/cub-tdattenmix
    torchrun --nproc-per-node 4 -m gazemix train --data cub-gha --root ~/data/CUB_200_2011 \\
        --fixations ~/data/CUB-GHA/data_5runs --mixer cutmix --out runs/cub-cutmix
    gazemix train ... --out runs/cub-cutmix --resume     # continue that run from its last.pt
    gazemix train --data demo --mixer mixup --label-source human --calibration runs/calibrate/x/calibration.json
    gazemix train --data demo --mixer cutmix --label-source gaze     # labels from held-out observers' gaze

Writes ``config.json``, ``metrics.csv`` (one row per epoch), ``curves.png``, ``last.pt`` and ``best.pt`` into a
fresh run folder (default ``runs/train/<date>-<time>-<mixer>``; a ``--out`` that holds another run is refused
unless ``--resume`` continues it). Progress goes to stderr; stdout gets one closing line (``--json``: the final
metrics as JSON instead).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from pathlib import Path

from gazemix.cli import CliError
from gazemix.training.config import TrainConfig

DEFAULTS = TrainConfig()
LABEL_SOURCES = ("mixer", "human", "gaze")  # gazemix.training.labels.LABEL_SOURCES, without importing torch


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` where the help text does not already say what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text or action.default == []:
            return text
        return super()._get_help_string(action)


def _warn(message: str) -> None:
    """One deprecation line on stderr (once per process: rank 0 only under torchrun)."""
    if os.environ.get("RANK", "0") == "0":
        print(f"gazemix train: warning: {message}", file=sys.stderr, flush=True)


def _mixer_option(text: str) -> tuple[str | None, str, object, str]:
    """``MIXER.KEY=VALUE`` (or the deprecated ``KEY=VALUE``) → ``(mixer or None, key, value, text)``."""
    target, sep, value = text.partition("=")
    mixer, dot, key = target.rpartition(".")
    if not sep or not key or (dot and not mixer):
        raise argparse.ArgumentTypeError(f"takes MIXER.KEY=VALUE (e.g. cutmix.alpha=0.5), got {text!r}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    return (mixer.strip().lower() or None), key.strip(), parsed, text


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a timm model with a mixer (any data set, CPU, CUDA or torchrun DDP)",
                       description="Train a timm classifier with a gazemix mixer; see `gazemix mixers` for names.",
                       formatter_class=_Help)
    from gazemix.datasets import DATA_SETS

    data = p.add_argument_group("data")
    data.add_argument("--data", default=DEFAULTS.data, metavar="NAME",
                      help=f"data set, by its gazemix name ({', '.join(DATA_SETS)}); training needs photographs "
                           f"and class labels: demo, folder, cub-gha (with --root), coco-search18, cat2000")
    data.add_argument("--root", help="data set folder: CUB_200_2011 for cub-gha, the image folder for folder (default: none; demo "
                           "needs none)")
    data.add_argument("--fixations", nargs="+", metavar="FILE",
                      help="gaze files kept apart from the images: cub-gha's Fixation_run<k>.txt files or their folder "
                           "(default: none)")
    data.add_argument("--gaze-root", help=argparse.SUPPRESS)  # deprecated spelling of --fixations
    data.add_argument("--max-bad-fraction", type=float, default=DEFAULTS.max_bad_fraction,
                      help="stop when more than this fraction of the data set's records are malformed")
    data.add_argument("--demo-train", type=int, default=DEFAULTS.demo_train, help="demo training images")
    data.add_argument("--demo-val", type=int, default=DEFAULTS.demo_val, help="demo validation images")
    data.add_argument("--workers", type=int, default=DEFAULTS.workers, help="data-loader processes")

    model = p.add_argument_group("model and mixer")
    model.add_argument("--model", default=DEFAULTS.model, help="timm model name, built with pretrained=False")
    model.add_argument("--checkpoint", metavar="FILE",
                       help="local .pt/.pth/.safetensors weights to start from (as `gazemix score --checkpoint`; "
                            "nothing is downloaded; default: random initialisation)")
    model.add_argument("--pretrained-path", metavar="FILE", help="the same as --checkpoint (default: none)")
    model.add_argument("--img-size", type=int, default=DEFAULTS.img_size, help="image side in pixels")
    model.add_argument("--patch-size", type=int, help="ViT patch size (default: the model's)")
    model.add_argument("--num-classes", type=int, help="expected class count, checked against the data set "
                                                         "(default: not checked)")
    model.add_argument("--mixer", default=DEFAULTS.mixer, help="registered mixer name, or 'none'")
    model.add_argument("--mixer-opt", action="append", type=_mixer_option, default=[], metavar="MIXER.KEY=VALUE",
                       help="option of the mixer (repeatable), as in `gazemix score`: e.g. cutmix.alpha=0.5 "
                            "(default: the mixer's own defaults)")
    model.add_argument("--no-square-losses", dest="square_losses", action="store_false",
                       help="drop the mixer's auxiliary losses (SMMix/TdAttenMix consistency and fine-grained, "
                            "SpliceMix-CL consistency; default: on, as the official code)")

    labels = p.add_argument_group("labels")
    labels.add_argument("--label-source", choices=LABEL_SOURCES, default=DEFAULTS.label_source,
                        help="mixer: the mixer's label weights; human: the share people perceive at each weight "
                             "(needs --calibration); gaze: the share of held-out observers' gaze each image keeps")
    labels.add_argument("--calibration", metavar="FIT.json",
                        help="calibration.json of `gazemix humans calibrate` (--label-source human; default: none)")
    labels.add_argument("--calibration-mixer", metavar="NAME",
                        help="use this mixer's curve of --calibration (default: the curve of --mixer)")

    recipe = p.add_argument_group("recipe (defaults: the DeiT recipe, per model family)")
    recipe.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="training epochs")
    recipe.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="per process")
    recipe.add_argument("--lr", type=float, help="peak learning rate (default: 5e-4 x total batch / 512 for ViTs, "
                                                  "1e-3 x total batch / 512 for CNNs)")
    recipe.add_argument("--min-lr", type=float, default=DEFAULTS.min_lr, help="learning rate at the end of the cosine")
    recipe.add_argument("--warmup-lr", type=float, default=DEFAULTS.warmup_lr, help="learning rate of the first step")
    recipe.add_argument("--warmup-epochs", type=int, help="default: min(5, epochs // 5)")
    recipe.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay, help="AdamW weight decay")
    recipe.add_argument("--label-smoothing", type=float, help="default: 0.1")
    recipe.add_argument("--drop-path", type=float, help="default: 0.1 (ViT) / 0.05 (CNN)")
    recipe.add_argument("--clip-grad", type=float, help="max gradient norm (default: off, as DeiT)")
    recipe.add_argument("--no-amp", dest="amp", action="store_false",
                        help="disable bfloat16 autocast on CUDA (default: on with CUDA)")
    recipe.add_argument("--crop-scale", type=float, nargs=2, default=DEFAULTS.crop_scale, metavar=("MIN", "MAX"),
                        help="random-resized-crop area range (TdAttenMix's CUB recipe: 0.5 1)")
    recipe.add_argument("--max-steps", type=int, help="cap on steps per epoch, for smoke runs (default: no cap)")
    recipe.add_argument("--seed", type=int, default=DEFAULTS.seed,
                        help="seed of every random draw (data order, crops, mixing, initialisation)")
    recipe.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda or cuda:N")

    run_ = p.add_argument_group("run folder and output")
    run_.add_argument("--out", help="run folder: new or empty (default: a fresh runs/train/<date>-<time>-<mixer>)")
    run_.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                      help="continue a run: from CHECKPOINT (its folder unless --out says otherwise), or, bare, from "
                           "<--out>/last.pt; the only way to write into a folder that holds a run (default: a new run)")
    run_.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    run_.add_argument("--json", action="store_true",
                      help="print the final metrics as one JSON object on stdout instead of the closing line")
    p.set_defaults(func=run)


def _mixer_options(args: argparse.Namespace) -> dict[str, object]:
    """``--mixer-opt`` values for ``--mixer``: prefixed ones must name it; bare ``KEY=VALUE`` is deprecated."""
    options: dict[str, object] = {}
    mixer = args.mixer.strip().lower().replace("-", "_")
    if args.mixer_opt and mixer == "none":
        raise CliError(f"--mixer-opt {args.mixer_opt[0][3]}: --mixer none mixes nothing and takes no options")
    for name, key, value, text in args.mixer_opt:
        if name is None:
            _warn(f"--mixer-opt {text} is deprecated; write --mixer-opt {mixer}.{text} (MIXER.KEY=VALUE, as in "
                  f"`gazemix score`)")
        elif name.replace("-", "_") != mixer:
            raise CliError(f"--mixer-opt {text}: an option of {name}, but --mixer is {args.mixer}; write "
                           f"--mixer-opt {mixer}.{key}=...")
        options[key] = value
    return options


def _check_numbers(args: argparse.Namespace) -> None:
    """Refuse numbers no run can use, naming the flag."""
    for name in ("epochs", "batch_size", "demo_train", "demo_val", "max_steps", "patch_size", "num_classes"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CliError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.workers < 0 or (args.warmup_epochs is not None and args.warmup_epochs < 0):
        flag, value = ("--workers", args.workers) if args.workers < 0 else ("--warmup-epochs", args.warmup_epochs)
        raise CliError(f"{flag} must be 0 or more, got {value}")
    if args.img_size < 8:
        raise CliError(f"--img-size must be at least 8 pixels, got {args.img_size}")
    inf = float("inf")
    for flag, value, lo, hi, lo_open, hi_open in (
            ("--lr", args.lr, 0, inf, True, True), ("--min-lr", args.min_lr, 0, inf, False, True),
            ("--warmup-lr", args.warmup_lr, 0, inf, False, True),
            ("--weight-decay", args.weight_decay, 0, inf, False, True),
            ("--clip-grad", args.clip_grad, 0, inf, True, True),
            ("--label-smoothing", args.label_smoothing, 0, 1, False, True),
            ("--drop-path", args.drop_path, 0, 1, False, True),
            ("--max-bad-fraction", args.max_bad_fraction, 0, 1, False, False)):
        if value is None:
            continue
        if not ((value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)):
            interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            raise CliError(f"{flag} must be in {interval}, got {value:g}")
    lo, hi = args.crop_scale
    if not 0 < lo <= hi <= 1:
        raise CliError(f"--crop-scale MIN MAX must satisfy 0 < MIN <= MAX <= 1, got {lo:g} {hi:g}")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of a command line, with old spellings accepted (one warning line each)."""
    _check_numbers(args)
    data = args.data
    if data == "cub":
        _warn("--data cub is deprecated; write --data cub-gha (the data set's name in every gazemix command)")
        data = "cub-gha"
    from gazemix.datasets import DATA_SETS

    if data not in DATA_SETS:
        import difflib

        close = difflib.get_close_matches(data, DATA_SETS, n=1)
        raise CliError(f"--data {data}: unknown data set{f' (did you mean {close[0]}?)' if close else ''}; choose "
                       f"from {', '.join(DATA_SETS)}")
    fixations = args.fixations
    if args.gaze_root is not None:
        _warn("--gaze-root is deprecated; write --fixations (the CUB-GHA folder or its Fixation_run<k>.txt files)")
        if fixations:
            raise CliError("--gaze-root and --fixations name the same thing; pass --fixations only")
        fixations = [args.gaze_root]
    if args.checkpoint is not None and args.pretrained_path is not None:
        raise CliError("--checkpoint and --pretrained-path name the same weights; pass one")
    checkpoint = args.checkpoint if args.checkpoint is not None else args.pretrained_path
    flag = "--checkpoint" if args.checkpoint is not None else "--pretrained-path"
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise CliError(f"{flag} {checkpoint}: no such file (local .pt/.pth/.safetensors weights; nothing is "
                       f"downloaded)")
    if args.calibration is not None and not Path(args.calibration).is_file():
        raise CliError(f"--calibration {args.calibration}: no such file (write one with `gazemix humans calibrate`)")
    if args.label_source == "human" and args.calibration is None:
        raise CliError("--label-source human needs --calibration FIT.json (from `gazemix humans calibrate`)")
    if args.calibration is not None and args.label_source != "human":
        raise CliError(f"--calibration is read with --label-source human only (this run: --label-source "
                       f"{args.label_source})")
    resume = args.resume
    if resume == "auto":
        if args.out is None:
            raise CliError("--resume without a checkpoint continues the run in --out: pass --out RUN_FOLDER (or "
                           "--resume RUN_FOLDER/last.pt)")
        resume = str(Path(args.out) / "last.pt")
    if resume is not None and not Path(resume).is_file():
        raise CliError(f"--resume {resume}: no such file (a run folder holds last.pt and best.pt)")
    return TrainConfig(data=data, root=args.root, fixations=tuple(fixations) if fixations else None,
                       max_bad_fraction=args.max_bad_fraction, model=args.model, mixer=args.mixer,
                       mixer_options=_mixer_options(args), epochs=args.epochs, batch_size=args.batch_size,
                       img_size=args.img_size, patch_size=args.patch_size, out=args.out, pretrained_path=checkpoint,
                       num_classes=args.num_classes, seed=args.seed, device=args.device, resume=resume, lr=args.lr,
                       min_lr=args.min_lr, warmup_lr=args.warmup_lr, warmup_epochs=args.warmup_epochs,
                       weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, drop_path=args.drop_path,
                       clip_grad=args.clip_grad, amp=args.amp, square_losses=args.square_losses,
                       crop_scale=tuple(args.crop_scale), workers=args.workers, demo_train=args.demo_train,
                       demo_val=args.demo_val, max_steps=args.max_steps, quiet=args.quiet,
                       label_source=args.label_source, calibration=args.calibration,
                       calibration_mixer=args.calibration_mixer)


def closing_line(result: dict) -> str:
    """The readable last line of a run: where it is and how it ended."""
    if "top1" not in result:
        return f"{result['out']}: nothing left to train (the checkpoint is at its last epoch)"
    return (f"{result['out']}: epoch {result['epoch']}, top-1 {result['top1']:.2f}% (best {result['best_top1']:.2f}% "
            f"at epoch {result['best_epoch']}), val loss {result['val_loss']:.4f}")


def run(args: argparse.Namespace) -> int:
    from gazemix.contract import MixerInputError
    from gazemix.training import train
    from gazemix.training.trainer import MixerOptionError

    cfg = config_from_args(args)
    try:
        result = train(cfg)
    except MixerOptionError as err:
        given = {key: text for _, key, _, text in args.mixer_opt}
        raise CliError(f"--mixer-opt {given[err.option]}: {err}" if err.option in given else f"--mixer-opt: {err}") \
            from None
    except MixerInputError as err:  # the library names mixer options as keywords
        raise CliError(f"{err} (on the command line a mixer option is --mixer-opt MIXER.KEY=VALUE)") from None
    if result.get("rank", 0) == 0:
        print(json.dumps(result) if args.json else closing_line(result))
    return 0
