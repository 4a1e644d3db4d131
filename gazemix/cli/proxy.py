"""``gazemix proxy``: how well does mouse tracking stand in for eye tracking? (OSIE: eye and mouse on 700 photos)

Usage:
    gazemix proxy --root ../shared/data/osie                          # lab mouse tracking vs eye, default run
    gazemix proxy --root OSIE --mouse mouse_amt --pairs 2000 --splits 5 --out runs/proxy-amt
    gazemix proxy --root OSIE --n-images 50 --pairs 100 --mixers cutmix,resizemix,fmix   # a quick look

Per image: the mouse map's NSS / CC / AUC against the eye fixations, beside the eye data's own split-half
agreement and a matched-observer mouse map scored against the same held-out half. Per mixer: the label-gaze
gap under eye vs mouse gaze on the same mixes, and Spearman / Kendall of the mixers' order (see
:mod:`gazemix.proxy` for the estimators). Writes ``per_image.csv``, ``per_image_summary.csv``,
``per_mixer.csv``, ``ranking.csv``, ``samples.parquet``, ``summary.md``, ``proxy.png`` and ``config.json`` to
``--out``, all at once (a temporary folder, then a rename).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gazemix.cli import CliError
from gazemix.cli._util import add_renamed, fresh_run_folder, log, tabulate

if TYPE_CHECKING:
    import pandas as pd

MOUSE_SOURCES = ("mouse_lab", "mouse_amt")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("proxy", help="mouse tracking as a proxy for eye tracking (OSIE): per image and per mixer",
                       description="Compare OSIE's mouse tracking with its eye tracking: per-image saliency "
                                   "agreement against the eye data's split-half agreement, and the mixers' "
                                   "label-gaze gaps and ranking under the two.")
    p.add_argument("--root", required=True, help="the OSIE download (folder holding data/stimuli, data/eye, data/mouse_*)")
    p.add_argument("--mouse", choices=MOUSE_SOURCES, default="mouse_lab",
                   help="which mouse tracking to compare (default mouse_lab)")
    p.add_argument("--mixers", default="all",
                   help="'all' (every mixer that needs no model and does not choose its mix from gaze) or "
                        "comma-separated names")
    p.add_argument("--pairs", type=int, default=500, help="mixed samples per mixer and gaze variant (default 500)")
    p.add_argument("--splits", type=int, default=1,
                   help="random observer splits averaged per image (default 1; the mixers use the first)")
    p.add_argument("--img-size", type=int, default=224, help="map and image side in pixels (default 224)")
    p.add_argument("--sigma-px", type=float, default=24.0,
                   help="gaze blur in original pixels (default 24, OSIE's own config.m)")
    p.add_argument("--n-images", type=int, default=None, help="use only the first N images (default: all)")
    p.add_argument("--batch-size", type=int, default=64, help="pairs mixed at once (default 64)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the intervals (default 1000)")
    add_renamed(p, "--boot", "--n-boot", type=int)
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same splits, pairs and numbers")
    p.add_argument("--out", default=None, help="output folder (default: a new runs/proxy/<date>-<time>-<mouse>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> Path:
    for name, low in (("pairs", 1), ("splits", 1), ("batch_size", 1), ("n_boot", 10), ("img_size", 8)):
        if getattr(args, name) < low:
            raise CliError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(args, name)}")
    if args.n_images is not None and args.n_images < 2:
        raise CliError(f"--n-images must be at least 2, got {args.n_images}")
    if not args.sigma_px > 0:
        raise CliError(f"--sigma-px must be positive, got {args.sigma_px}")
    out = Path(args.out) if args.out else fresh_run_folder("proxy", args.mouse)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        config = out / "config.json"
        try:
            previous = json.loads(config.read_text()).get("command") if config.is_file() else None
        except (ValueError, OSError):
            previous = None
        if previous != "proxy":
            raise CliError(f"--out {out} is a non-empty folder that is not a previous `gazemix proxy` output: "
                           f"choose a new folder (it is replaced as a whole)")
    return out


def _load(args: argparse.Namespace):
    from data_adapters.base import AdapterError
    from data_adapters.osie import Osie, available_sources
    from gazemix.proxy import pair_samples

    root = Path(args.root)
    if not root.is_dir():
        raise CliError(f"--root {root}: no such folder (the OSIE download, holding data/stimuli)")
    present = available_sources(root)
    if "eye" not in present or args.mouse not in present:
        raise CliError(f"--root {root} has gaze sources {present or 'none'}: the comparison needs 'eye' and "
                       f"{args.mouse!r} (data/eye/fixations.mat, data/{args.mouse}/<id>.mat)")
    try:
        eye = Osie(root, source="eye", on_error="skip")
        ids = [p.stem for p in eye.stimuli][:args.n_images]
        eye = Osie(root, source="eye", images=ids, on_error="skip")
        mouse = Osie(root, source=args.mouse, images=ids, on_error="skip")
        data, note = pair_samples(eye, mouse, name=f"osie eye vs {args.mouse}")
    except AdapterError as err:
        raise CliError(str(err)) from None
    for name, adapter in (("eye", eye), (args.mouse, mouse)):
        if adapter.skipped:
            log(f"osie {name}: skipped {len(adapter.skipped)} malformed records, e.g. {adapter.skipped[0]}")
    return data, note, len(eye.skipped) + len(mouse.skipped)


def run(args: argparse.Namespace) -> int:
    import torch

    from gazemix.proxy import measure_images, measure_mixers, plot_proxy, summarise_images
    from gazemix.registry import mixer_class
    from gazemix.score_data import load_image
    from gazemix.outputs import staged_folder
    from gazemix.scoring import build_mixers

    out = _check_args(args)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    log(f"loading OSIE eye and {args.mouse} data from {args.root} ...")
    data, note, n_skipped = _load(args)
    times["load"] = time.perf_counter() - t0
    log(f"{note}")

    names = args.mixers
    excluded: dict[str, str] = {}
    if names == "all":
        from gazemix.registry import list_mixers

        names = []
        for info in list_mixers():
            if info.reads_gaze:
                excluded[info.name] = "chooses its mix from gaze: eye and mouse runs would not share mixes"
            else:
                names.append(info.name)
    mixers, skipped = build_mixers(names, num_classes=None, seed=args.seed, has_images=data.image_paths is not None)
    if not mixers:
        raise CliError("no mixer can run here: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))

    t = time.perf_counter()
    images_agree = measure_images(data, size=args.img_size, sigma_px=args.sigma_px, splits=args.splits,
                                  seed=args.seed, progress=not args.quiet)
    times["per_image"] = time.perf_counter() - t
    image_summary = summarise_images(images_agree.table, n_boot=args.n_boot, seed=args.seed)

    t = time.perf_counter()
    images = None
    if data.image_paths is not None and not all(mixer_class(m).content_independent for m in mixers):
        images = torch.stack([load_image(p, args.img_size, "resize") for p in data.image_paths])
    times["load_images"] = time.perf_counter() - t
    t = time.perf_counter()
    agreement = measure_mixers(images_agree.maps, data.ids, mixers, images=images, pairs=args.pairs, seed=args.seed,
                               batch_size=args.batch_size, n_boot=args.n_boot, progress=not args.quiet)
    times["per_mixer"] = time.perf_counter() - t
    skipped.update(agreement.skipped)
    times["total"] = time.perf_counter() - t0

    with staged_folder(out, replace=True) as folder:  # replaces only an earlier proxy output (_check_args)
        images_agree.table.to_csv(folder / "per_image.csv", index=False)
        image_summary.to_csv(folder / "per_image_summary.csv", index=False)
        agreement.per_mixer.to_csv(folder / "per_mixer.csv", index=False)
        agreement.ranking.to_csv(folder / "ranking.csv", index=False)
        agreement.samples.to_parquet(folder / "samples.parquet", index=False)
        plot_proxy(images_agree.table, agreement.per_mixer, agreement.ranking, folder / "proxy.png",
                   title=f"OSIE: {args.mouse} vs eye tracking, {len(data)} images, {args.pairs} pairs per mixer")
        (folder / "summary.md").write_text(summary_markdown(args, data, note, n_skipped, image_summary, agreement,
                                                            skipped, excluded, times))
        config = {k: v for k, v in vars(args).items() if k != "func"}
        (folder / "config.json").write_text(json.dumps({**config, "seconds": times}, indent=2))
    print(format_images(image_summary))
    print()
    print(format_mixers(agreement.per_mixer))
    print()
    print(format_ranking(agreement.ranking))
    log(f"done in {times['total']:.1f} s; results in {out}/ (per_image.csv, per_mixer.csv, ranking.csv, summary.md, "
        f"proxy.png)")
    return 0


def _ci(est: float, lo: float, hi: float, fmt: str = "{:.3f}") -> str:
    if est is None or math.isnan(est):
        return "n/a"
    return f"{fmt.format(est)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def format_images(summary: pd.DataFrame) -> str:
    rows = []
    for r in summary.itertuples():
        if r.predictor == "normalised":
            rows.append((r.predictor, r.metric, r.n, "", _ci(r.mean, r.mean_lo, r.mean_hi)))
        else:
            rows.append((r.predictor, r.metric, r.n, _ci(r.median, r.median_lo, r.median_hi),
                         _ci(r.mean, r.mean_lo, r.mean_hi)))
    return tabulate(rows, ("per image", "metric", "n", "median [95% CI]", "mean [95% CI]"))


def format_mixers(per_mixer: pd.DataFrame) -> str:
    rows = []
    for r in per_mixer.itertuples():
        flag = "gaze-driven" if r.gaze_driven else ("mixes differ" if not r.shared_mixes else
                                                    ("" if r.gaze_sensitive else "gaze-insensitive"))
        rows.append((r.mixer, r.n, _ci(r.gap_mean_eye, r.gap_mean_eye_lo, r.gap_mean_eye_hi),
                     _ci(r.gap_mean_proxy, r.gap_mean_proxy_lo, r.gap_mean_proxy_hi),
                     _ci(r.gap_diff, r.gap_diff_lo, r.gap_diff_hi, "{:+.3f}"),
                     f"{r.dlam_eye_vs_proxy:.3f}", f"{r.dlam_eye_a_vs_eye_b:.3f}",
                     f"{r.dlam_proxy_matched_vs_eye_b:.3f}", flag))
    return tabulate(rows, ("mixer", "n", "gap eye [95% CI]", "gap mouse [95% CI]", "mouse - eye [95% CI]",
                           "|dlam| eye/mouse", "|dlam| eyeA/eyeB", "|dlam| mouse~/eyeB", "note"))


def format_ranking(ranking: pd.DataFrame) -> str:
    rows = [(r.comparison.replace("proxy", "mouse"), r.set, r.n_mixers, _ci(r.spearman, r.spearman_lo, r.spearman_hi),
             _ci(r.kendall, r.kendall_lo, r.kendall_hi)) for r in ranking.itertuples()]
    return tabulate(rows, ("mixer order", "mixers", "k", "Spearman [95% CI]", "Kendall [95% CI]"))


def summary_markdown(args, data, note: str, n_skipped: int, image_summary: pd.DataFrame, agreement,
                     skipped: dict[str, str], excluded: dict[str, str], times: dict[str, float]) -> str:
    lines = [
        f"# gazemix proxy — OSIE, {args.mouse} vs eye tracking", "",
        f"- data: {args.root}: {note}; {n_skipped} malformed records skipped",
        f"- maps: {args.img_size}x{args.img_size} (resized), Gaussian sigma {args.sigma_px:g} px of the 800x600 "
        f"original; mouse maps mark each distinct sampled pixel once (the release's convention)",
        f"- per image: {args.splits} seeded observer split(s) averaged per image; seed {args.seed}; intervals: "
        f"percentile bootstrap over images ({args.n_boot} resamples)",
        f"- per mixer: {args.pairs} pairs per mixer, the same pairs under every gaze variant; rank correlations "
        f"and differences: image-cluster bootstrap",
        f"- time: {times['total']:.0f} s in all (load {times['load']:.0f} s, per image {times['per_image']:.0f} s, "
        f"images {times['load_images']:.0f} s, mixers {times['per_mixer']:.0f} s)", "",
        "## Per image", "",
        "Predictions against eye data: `proxy` = mouse map (all mouse observers) vs all eye observers; "
        "`eye_half` = half A of the eye observers vs half B; `proxy_matched` = mouse map of |A| mouse observers vs "
        "the same half B; `*_shuffled` = another image's map (centre-bias reference). `normalised` = "
        "(proxy_matched − eye_half_shuffled) / (eye_half − eye_half_shuffled) on the means: 0 = another image's "
        "eye map, 1 = the other half of the eye observers.", "",
        "```", format_images(image_summary), "```", "",
        "## Per mixer", "",
        "Mean label-gaze gap under eye and mouse gaze on the same mixes; `mouse − eye` is the paired difference; "
        "`|dlam|` the mean per-sample difference of the gaze weight between two gaze variants (eyeA/eyeB: eye "
        "split-half; mouse~/eyeB: matched mouse observers vs the same eye half B).", "",
        "```", format_mixers(agreement.per_mixer), "```", "",
        "## Ranking of the mixers", "",
        "`sensitive`: mixers whose gaze weight depends on the gaze (pixel blends excluded); `all`: every mixer "
        "that shares its mixes across gaze variants. `eye_a vs eye_b` is the eye data's own split-half "
        "reliability of the order; `proxy_matched vs eye_b` the mouse at a matched observer count.", "",
        "```", format_ranking(agreement.ranking), "```", "",
    ]
    if excluded or skipped:
        lines += ["## Not compared", ""] + [f"- {k}: {v}" for k, v in {**excluded, **skipped}.items()] + [""]
    lines += ["![proxy](proxy.png)", ""]
    return "\n".join(lines)
