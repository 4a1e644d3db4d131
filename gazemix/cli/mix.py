"""``gazemix mix``: a first look — mix the bundled sample photographs and save a captioned PNG grid.

Usage:
    gazemix mix --mixer cutmix --n 16 --out runs/mix
    gazemix mix --mixer fmix --n 8 --size 160 --seed 3 --out runs/fmix
"""

from __future__ import annotations

import argparse
import math


from gazemix.cli._util import log, prepare_out


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mix", help="mix the bundled sample photos with one mixer and save a PNG grid",
                       description="Mix scikit-image's bundled photographs with a mixer and write a captioned grid.")
    p.add_argument("--mixer", default="cutmix", help="registered mixer name (see `gazemix mixers`)")
    p.add_argument("--n", type=int, default=16, help="number of mixed samples (default 16)")
    p.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", default="gazemix-mix", help="output folder (default ./gazemix-mix)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gazemix.registry import create_mixer, mixer_class
    from gazemix.sample_images import sample_batch

    cls = mixer_class(args.mixer)
    if not cls.content_independent:
        raise ValueError(f"mixer {cls.name!r} needs {', '.join(cls.needs) or 'a model'}; `gazemix mix` shows "
                         f"content-independent mixers only (see `gazemix mixers`)")
    out = prepare_out(args.out)
    images, labels, names = sample_batch(args.n, args.size)
    mixer = create_mixer(cls.name, num_classes=len(names), seed=args.seed)
    log(f"mixing {args.n} sample photos with {mixer!r}")
    result = mixer(images, labels)
    b = result.images.shape[0]
    cols = min(4, b)
    rows = math.ceil(b / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows), squeeze=False)
    own, partner = result.own_index.tolist(), result.index.tolist()
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= b:
            continue
        ax.imshow(result.images[k].clamp(0, 1).permute(1, 2, 0).numpy())
        ax.set_title(f"{names[labels[own[k]]]} {result.lam[k]:.2f}\n+ {names[labels[partner[k]]]} "
                     f"{result.partner_lam[k]:.2f}", fontsize=9)
    fig.suptitle(f"{cls.name}: label weight of own image + partner", fontsize=11)
    fig.tight_layout()
    path = out / f"{cls.name}_grid.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(path)
    return 0
