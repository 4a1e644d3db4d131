"""``gazemix train``: train a timm classifier with any gazemix mixer (gaze-guided ones get the data set's gaze).

Usage:
    gazemix train --data demo --model deit_tiny_patch16_224 --mixer tdattenmix --epochs 30 --out runs/demo-tdattenmix
    gazemix train --data demo --model resnet18 --mixer cutmix --img-size 64 --epochs 10 --out runs/demo-cutmix
    gazemix train --data cub --root ~/data/CUB_200_2011 --gaze-root ~/data/CUB-GHA/data_5runs \\
        --model deit_small_patch16_224 --mixer tdattenmix --crop-scale 0.5 1 \\
        --pretrained-path ~/weights/deit_small.pth --epochs 100 --batch-size 64 --out runs/cub-tdattenmix
    torchrun --nproc-per-node 4 -m gazemix train --data cub --root ~/data/CUB_200_2011 \\
        --gaze-root ~/data/CUB-GHA/data_5runs --mixer cutmix --out runs/cub-cutmix
    gazemix train ... --resume                 # continue from <out>/last.pt

Writes ``config.json``, ``metrics.csv`` (one row per epoch), ``curves.png``, ``last.pt`` and ``best.pt`` to
``--out``; prints the final metrics as JSON on stdout.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

from gazemix.cli import CliError
from gazemix.contract import MixerInputError
from gazemix.training import TrainConfig, train

DEFAULTS = TrainConfig()


def _mixer_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--mixer-opt takes KEY=VALUE (e.g. alpha=0.8), got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a timm model with a mixer (any data set, CPU, CUDA or torchrun DDP)",
                       description="Train a timm classifier with a gazemix mixer; see `gazemix mixers` for names.")
    p.add_argument("--data", choices=("demo", "cub", "folder"), default=DEFAULTS.data,
                   help="demo (embedded, synthetic), cub (CUB-200-2011 + CUB-GHA) or folder (class sub-folders)")
    p.add_argument("--root", help="data folder: CUB_200_2011 for --data cub, the image folder for --data folder")
    p.add_argument("--gaze-root", help="CUB-GHA folder with Fixation_run<k>.txt (--data cub)")
    p.add_argument("--model", default=DEFAULTS.model, help="timm model name, built with pretrained=False")
    p.add_argument("--mixer", default=DEFAULTS.mixer, help="registered mixer name, or 'none'")
    p.add_argument("--mixer-opt", action="append", type=_mixer_option, default=[], metavar="KEY=VALUE",
                   help="mixer option (repeatable), e.g. --mixer-opt switch_prob=0.5")
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="per process")
    p.add_argument("--img-size", type=int, default=DEFAULTS.img_size)
    p.add_argument("--patch-size", type=int, help="ViT patch size (default: the model's)")
    p.add_argument("--out", default=DEFAULTS.out, help="output folder")
    p.add_argument("--pretrained-path", help="local .pt/.pth/.safetensors weights (nothing is downloaded)")
    p.add_argument("--num-classes", type=int, help="expected class count (checked against the data set)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--resume", nargs="?", const="auto", help="checkpoint to resume (bare flag: <out>/last.pt)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 5e-4 x total batch / 512 for ViTs)")
    p.add_argument("--min-lr", type=float, default=DEFAULTS.min_lr)
    p.add_argument("--warmup-lr", type=float, default=DEFAULTS.warmup_lr)
    p.add_argument("--warmup-epochs", type=int, help="default min(5, epochs // 5)")
    p.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay)
    p.add_argument("--label-smoothing", type=float, help="default 0.1")
    p.add_argument("--drop-path", type=float, help="default 0.1 (ViT) / 0.05 (CNN)")
    p.add_argument("--clip-grad", type=float, help="max gradient norm (default: off, as DeiT)")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="disable bfloat16 autocast on CUDA")
    p.add_argument("--no-square-losses", dest="square_losses", action="store_false",
                   help="drop the mixer's auxiliary losses (SMMix/TdAttenMix consistency and fine-grained, "
                        "SpliceMix-CL consistency; official: on)")
    p.add_argument("--crop-scale", type=float, nargs=2, default=DEFAULTS.crop_scale, metavar=("MIN", "MAX"),
                   help="random-resized-crop area range (default 0.08 1; TdAttenMix's CUB recipe: 0.5 1)")
    p.add_argument("--workers", type=int, default=DEFAULTS.workers, help="data-loader processes")
    p.add_argument("--demo-train", type=int, default=DEFAULTS.demo_train, help="demo training images")
    p.add_argument("--demo-val", type=int, default=DEFAULTS.demo_val, help="demo validation images")
    p.add_argument("--max-steps", type=int, help="cap on steps per epoch (smoke runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    for name in ("epochs", "batch_size", "img_size", "workers", "demo_train", "demo_val"):
        if getattr(args, name) < (0 if name == "workers" else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    resume = str(Path(args.out) / "last.pt") if args.resume == "auto" else args.resume
    return TrainConfig(data=args.data, root=args.root, gaze_root=args.gaze_root, model=args.model, mixer=args.mixer,
                       mixer_options=dict(args.mixer_opt), epochs=args.epochs, batch_size=args.batch_size,
                       img_size=args.img_size, patch_size=args.patch_size, out=args.out,
                       pretrained_path=args.pretrained_path, num_classes=args.num_classes, seed=args.seed,
                       device=args.device, resume=resume, lr=args.lr, min_lr=args.min_lr, warmup_lr=args.warmup_lr,
                       warmup_epochs=args.warmup_epochs, weight_decay=args.weight_decay,
                       label_smoothing=args.label_smoothing, drop_path=args.drop_path, clip_grad=args.clip_grad,
                       amp=args.amp, square_losses=args.square_losses, crop_scale=tuple(args.crop_scale),
                       workers=args.workers,
                       demo_train=args.demo_train, demo_val=args.demo_val, max_steps=args.max_steps, quiet=args.quiet)


def run(args: argparse.Namespace) -> int:
    try:
        result = train(config_from_args(args))
    except MixerInputError as err:  # the library names mixer options as keywords
        raise CliError(f"{err} (on the command line a mixer option is --mixer-opt KEY=VALUE)") from err
    if result.get("rank", 0) == 0:
        print(json.dumps(result))
    return 0
