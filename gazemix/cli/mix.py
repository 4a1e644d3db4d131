"""``gazemix mix``: a first look — mix demo images with one mixer and save a captioned PNG grid.

Usage:
    gazemix mix --mixer cutmix --pairs 8 --out runs/mix-cutmix
    gazemix mix --mixer gazemix --show-gaze               # human-gaze-guided squares, replayed gaze on top
    gazemix mix --mixer puzzlemix@gaze --img-size 160 --seed 3

The images are the embedded demo set (labelled objects on photographs, simulated observers): every tile mixes
two images of different classes, with per-sample parameters where the mixer has them, and mixers that read
gaze are given the demo's gaze maps. The caption gives each source's class and label weight.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from gazemix.cli import CliError
from gazemix.cli._util import log


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mix", help="mix demo images with one mixer and save a captioned PNG grid",
                       description="Mix pairs of demo images (different classes) with one mixer and write a "
                                   "captioned grid.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mixer", default="cutmix", help="mixer name, or NAME@SOURCE for a saliency variant "
                   "(see `gazemix mixers`)")
    p.add_argument("--pairs", type=int, default=8, help="mixed samples in the grid")
    p.add_argument("--img-size", type=int, default=224, help="image side in pixels")
    p.add_argument("--show-gaze", action="store_true",
                   help="overlay each tile's replayed gaze (own image blue, partner orange)")
    p.add_argument("--mixer-opt", action="append", default=[], metavar="KEY=VALUE", help="mixer option (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", help="output folder (default: a new runs/mix/<date>-<time>-<mixer>)")
    p.set_defaults(func=run)


def _options(pairs: list[str]) -> dict:
    import ast

    options = {}
    for text in pairs:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise CliError(f"--mixer-opt takes KEY=VALUE (e.g. alpha=0.8), got {text!r}")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def run(args: argparse.Namespace) -> int:
    from gazemix.outputs import OutputError, check_writable_folder, staged_folder

    if not 1 <= args.pairs <= 64:
        raise CliError(f"--pairs must be between 1 and 64, got {args.pairs}")
    if not 32 <= args.img_size <= 1024:
        raise CliError(f"--img-size must be between 32 and 1024, got {args.img_size}")
    safe = args.mixer.replace("@", "-")
    out = Path(args.out) if args.out else Path("runs", "mix", f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}")
    try:
        check_writable_folder(out, replace=False)
    except OutputError as err:
        raise CliError(f"--out: {err}: choose a new --out") from None
    fig, text = mix_figure(args.mixer, _options(args.mixer_opt), pairs=args.pairs, size=args.img_size,
                           seed=args.seed, show_gaze=args.show_gaze)
    with staged_folder(out) as tmp:
        from gazemix.plots import save_figure

        save_figure(fig, tmp / f"{safe}_grid.png", dpi=80)
    log(text)
    print(out / f"{safe}_grid.png")
    return 0


def mix_figure(name: str, options: dict, *, pairs: int, size: int, seed: int, show_gaze: bool):
    """The grid figure and a one-line description of the mix (what the mixer was given)."""
    import torch

    from gazemix.plots import mix_grid_figure
    from gazemix.score_data import demo_scoring_data
    from gazemix.scoring import build_mixers

    data = demo_scoring_data(n=max(24, 3 * pairs), size=size, seed=seed, observer_split="none")
    try:
        mixers, skipped = build_mixers([name], num_classes=data.num_classes, seed=seed, has_images=True,
                                       mixer_opts={name: options} if options else None)
    except ValueError as err:
        raise CliError(f"--mixer/--mixer-opt: {err}") from None
    if skipped:
        raise CliError(f"--mixer {name}: {next(iter(skipped.values()))}; `gazemix mix` gives mixers the demo "
                       "images and gaze only")
    (row, mixer), = mixers.items()
    own, partner = _distinct_pairs(data.labels, pairs, seed)
    ids = torch.cat([own, partner])
    index = torch.cat([torch.arange(pairs, 2 * pairs), torch.arange(pairs)])
    result = mixer(data.images[ids], data.labels[ids], index=index, gaze=data.gaze[ids],
                   generator=torch.Generator().manual_seed(seed))
    names = data.class_names
    k = min(pairs, result.images.shape[0])
    rows = torch.arange(k) if result.images.shape[0] == 2 * pairs else torch.arange(2 * pairs, result.images.shape[0])[:k]
    shown = result.select(rows)
    captions = []
    for j in range(shown.images.shape[0]):
        parts = [f"{names[int(data.labels[ids[int(s.index[j])]])]} {float(s.weight[j]):.2f}" for s in shown.sources
                 if float(s.weight[j]) > 0]
        captions.append(" + ".join(parts))
    maps = shown.source_maps(data.gaze[ids]) if show_gaze else None
    fig = mix_grid_figure(shown.images, captions, maps, title=f"{row}: label weight of each source")
    return fig, f"{row}: {pairs} mixes of demo images of different classes ({mixer!r})"


def _distinct_pairs(labels, pairs: int, seed: int):
    """``pairs`` (own, partner) pairs of different classes, no image used twice."""
    import torch

    order = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed)).tolist()
    own, partner, used = [], [], set()
    for i in order:
        if len(own) == pairs:
            break
        if i in used:
            continue
        j = next((j for j in order if j not in used and j != i and labels[j] != labels[i]), None)
        if j is None:
            continue
        own.append(i)
        partner.append(j)
        used |= {i, j}
    return torch.tensor(own), torch.tensor(partner)
