"""``train(config)``: one training run end to end, single process or under ``torchrun``.

Writes to ``config.out`` (rank 0 only): ``config.json`` (every setting, resolved), ``metrics.csv`` (one row
appended per epoch), ``curves.png``, ``last.pt`` and ``best.pt``; a mixer with training state of its own (the
learned mixers) saves it there too through its training hooks (``mixer.pt``, which the mixer option
``checkpoint=<out>/mixer.pt`` reloads).
"""

from __future__ import annotations

import csv
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from gazemix.contract import Mixer
from gazemix.device import resolve_device
from gazemix.models import ModelError, build_model, check_model_name, is_vit, load_pretrained
from gazemix.registry import create_mixer, mixer_class
from gazemix.training import distributed
from gazemix.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gazemix.training.config import TrainConfig, resolve_recipe
from gazemix.training.data import IMAGENET_MEAN, IMAGENET_STD, BatchAugment, DataError, TrainData, build_data
from gazemix.training.engine import Classifier, Trainer, evaluate

__all__ = ["METRIC_COLUMNS", "build_mixer", "token_head_for", "train"]

METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "top1", "top5", "lr", "gaze_empty_crops", "epoch_seconds")


def _log(msg: str, info: distributed.DistInfo, quiet: bool) -> None:
    if info.is_main and not quiet:
        print(msg, file=sys.stderr, flush=True)


def build_mixer(name: str, backbone: torch.nn.Module, num_classes: int, *, has_gaze: bool, label_smoothing: float = 0.0,
                seed: int = 0, options: dict[str, Any] | None = None) -> Mixer | None:
    """The mixer registered as ``name`` (``"none"``: no mixing) set up for ``backbone``.

    Mixers laid on a token grid (``uses_patch_grid``) get the ViT's patch size unless ``options`` sets one; a mixer
    that reads a ViT (``model_kind == "vit"``, or a relabel from the ViT's attention) on a CNN, or human gaze on a
    data set without it, is refused with what to use instead.
    """
    if name.lower() == "none":
        return None
    cls = mixer_class(name)
    vit = is_vit(backbone)
    options = dict(options or {})
    if vit and cls.uses_patch_grid:
        options.setdefault("patch_size", int(backbone.patch_embed.patch_size[0]))  # mix on the model's token grid
    mixer = create_mixer(cls.name, num_classes=num_classes, label_smoothing=label_smoothing, seed=seed, **options)
    if not vit and (mixer.model_kind == "vit" or mixer.relabels_after_forward):
        raise ModelError(f"mixer {cls.name!r} reads the attention of a Vision Transformer, but the model is a "
                         f"{type(backbone).__name__}: use a timm ViT/DeiT (e.g. deit_tiny_patch16_224) or a mixer that "
                         f"works with CNNs (mixup, cutmix, switch, fmix, resizemix; snapmix/attentivemix use a CAM). "
                         f"What {cls.name} reads: {mixer.context_help()}")
    missing = [k for k in mixer.needs if k in ("gaze", "saliency") and not has_gaze]
    if missing:
        raise DataError(f"mixer {cls.name!r} needs {missing[0]} maps, but the data set has no gaze")
    return mixer


def token_head_for(mixer: Mixer | None, backbone: torch.nn.Module, num_classes: int,
                   square_losses: bool = True) -> torch.nn.Module | None:
    """The extra module the mixer's training hooks want trained with ``backbone`` (e.g. a linear token head), or
    ``None``; none without the auxiliary losses (``square_losses=False``)."""
    if mixer is None:
        return None
    return mixer.training_hooks(auxiliary_losses=square_losses).token_head(backbone, num_classes)


def _loader(ds: torch.utils.data.Dataset, cfg: TrainConfig, info: distributed.DistInfo, *, train: bool,
            seed: int) -> DataLoader:
    """Training: shuffled, whole batches (a ``DistributedSampler`` under torchrun). Evaluation: every sample exactly
    once, each rank taking every ``world_size``-th (no padding duplicates, so top-1 is exact)."""
    g = torch.Generator().manual_seed(seed)
    sampler = None
    if info.enabled and train:
        sampler = DistributedSampler(ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed,
                                     drop_last=True)
    elif info.enabled:
        ds = Subset(ds, range(info.rank, len(ds), info.world_size))
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=cfg.workers, drop_last=train, generator=g, pin_memory=info.device.type == "cuda")


def _seed(*key: int) -> int:
    """A 63-bit seed drawn from ``key`` (NumPy ``SeedSequence``: distinct keys give unrelated streams)."""
    return int(np.random.SeedSequence(list(key)).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def _write_metrics(path: Path, row: dict[str, float]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        if new:
            w.writeheader()
        w.writerow({k: row[k] for k in METRIC_COLUMNS})


def _plot(metrics: Path, out: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(metrics)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(df.epoch, df.train_loss, "o-", label="train (mixed)")
    a.plot(df.epoch, df.val_loss, "o-", label="validation")
    a.set(xlabel="epoch", ylabel="loss")
    a.legend()
    b.plot(df.epoch, df.top1, "o-", label="top-1")
    b.plot(df.epoch, df.top5, "o-", label="top-5")
    b.set(xlabel="epoch", ylabel="validation accuracy (%)")
    b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def train(config: TrainConfig, data: TrainData | None = None) -> dict[str, Any]:
    """Train ``config.model`` with ``config.mixer``; returns the last epoch's metrics and the best top-1.

    Args:
        config: every setting (see :class:`TrainConfig`).
        data: in-memory train/validation sets to use instead of the ones ``config.data`` names.
    """
    info = distributed.setup(resolve_device(config.device))
    try:
        return _train(config, info, data)
    finally:
        distributed.cleanup(info)


@dataclass
class _Run:
    """Everything one run trains with (built in :func:`_build_run`, in the order that fixes its random draws)."""

    cfg: TrainConfig
    out: Path
    data: TrainData
    num_classes: int
    mixer: Mixer | None
    core: Classifier
    model: torch.nn.Module
    train_loader: DataLoader
    val_loader: DataLoader
    steps: int
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    generator: torch.Generator
    augment: BatchAugment
    trainer: Trainer


def _train(config: TrainConfig, info: distributed.DistInfo, data: TrainData | None) -> dict[str, Any]:
    check_model_name(config.model)  # names first: a typo must not wait for the data set
    if config.mixer.lower() != "none":
        mixer_class(config.mixer)
    cfg = resolve_recipe(config, info.world_size)
    out = Path(cfg.out)
    if info.is_main:
        if out.exists() and not out.is_dir():
            raise ValueError(f"the output folder {out} exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    run = _build_run(cfg, out, info, data)
    start, best = 0, -math.inf
    if cfg.resume:
        start, best = _resume(cfg, run.core, run.trainer, run.num_classes)
        _log(f"resumed from {cfg.resume} at epoch {start}", info, cfg.quiet)
    run.trainer.hooks.setup(run.core.backbone, loader=run.train_loader, augment=run.augment,
                            total_steps=cfg.epochs * run.steps, device=info.device, max_steps=cfg.max_steps,
                            quiet=cfg.quiet or not info.is_main, state_dir=out, resume=bool(cfg.resume),
                            start_step=run.trainer.updates)
    if info.is_main:
        _write_config(run, info)
    _log(f"training {cfg.model} with mixer {cfg.mixer} on {run.data.description}: {cfg.epochs} epochs x {run.steps} "
         f"steps, batch {cfg.batch_size} x {info.world_size}, lr {cfg.lr:.2e}, device {info.device}", info, cfg.quiet)
    row: dict[str, float] = {}
    for epoch in range(start, cfg.epochs):
        row, best = _epoch(run, epoch, best, info)
    return {**row, "best_top1": best, "out": str(out), "rank": info.rank}


def _build_run(cfg: TrainConfig, out: Path, info: distributed.DistInfo, data: TrainData | None) -> _Run:
    """The data, model, mixer (and the module its hooks want), loaders, optimiser, schedule and trainer."""
    if data is None:
        data = build_data(cfg.data, cfg.root, cfg.img_size, gaze_root=cfg.gaze_root, seed=cfg.seed,
                          demo_train=cfg.demo_train, demo_val=cfg.demo_val)
    data.check()
    k = len(data.class_names)
    if cfg.num_classes is not None and cfg.num_classes != k:
        raise DataError(f"--num-classes {cfg.num_classes} does not match {data.description}, which has {k} classes: "
                        f"drop --num-classes or point --root at the intended data set")
    backbone = build_model(cfg.model, k, cfg.img_size, patch_size=cfg.patch_size, drop_path=cfg.drop_path)
    if cfg.pretrained_path:
        left = load_pretrained(backbone, cfg.pretrained_path)
        _log(f"loaded {cfg.pretrained_path}; newly initialised: {', '.join(left) or 'nothing'}", info, cfg.quiet)
    mixer = build_mixer(cfg.mixer, backbone, k, has_gaze=data.has_gaze, label_smoothing=cfg.label_smoothing,
                        seed=cfg.seed * 1000 + info.rank, options=cfg.mixer_options)
    core = Classifier(backbone, token_head_for(mixer, backbone, k, cfg.square_losses)).to(info.device)
    model = DistributedDataParallel(core, device_ids=[info.device.index] if info.device.type == "cuda" else None) \
        if info.enabled else core
    train_loader = _loader(data.train, cfg, info, train=True, seed=cfg.seed)
    val_loader = _loader(data.val, cfg, info, train=False, seed=cfg.seed)
    if len(train_loader) == 0:
        raise DataError(f"the train split of {data.description} has {len(data.train)} samples, fewer than one batch "
                        f"of {cfg.batch_size} per process ({info.world_size} processes): use a smaller batch size")
    steps = len(train_loader) if cfg.max_steps is None else min(cfg.max_steps, len(train_loader))
    optimizer = create_optimizer_v2(core, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = CosineLRScheduler(optimizer, t_initial=max(1, (cfg.epochs - cfg.warmup_epochs) * steps),
                                  lr_min=cfg.min_lr, warmup_t=cfg.warmup_epochs * steps, warmup_lr_init=cfg.warmup_lr,
                                  warmup_prefix=True, t_in_epochs=False)
    generator = torch.Generator()
    pcfg = backbone.pretrained_cfg
    augment = BatchAugment(cfg.img_size, cfg.crop_scale, pcfg.get("mean", IMAGENET_MEAN), pcfg.get("std", IMAGENET_STD))
    trainer = Trainer(model, core, mixer, optimizer, scheduler, augment, num_classes=k,
                      label_smoothing=cfg.label_smoothing, generator=generator, clip_grad=cfg.clip_grad,
                      amp=cfg.amp, device=info.device, square_losses=cfg.square_losses)
    return _Run(cfg, out, data, k, mixer, core, model, train_loader, val_loader, steps, optimizer, scheduler,
                generator, augment, trainer)


def _write_config(run: _Run, info: distributed.DistInfo) -> None:
    """``config.json``: every setting, resolved, with the data set, the process layout and the versions."""
    cfg = run.cfg
    record = {**cfg.to_dict(), "num_classes": run.num_classes, "class_names": run.data.class_names,
              "data_description": run.data.description, "world_size": info.world_size, "device": str(info.device),
              "steps_per_epoch": run.steps, "mixer_config": None if run.mixer is None else run.mixer.config(),
              "versions": {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()}}
    (run.out / "config.json").write_text(json.dumps(record, indent=2, default=str))


def _epoch(run: _Run, epoch: int, best: float, info: distributed.DistInfo) -> tuple[dict[str, float], float]:
    """Train and evaluate one epoch, write its row, curves and checkpoints; returns the row and the best top-1."""
    cfg, out = run.cfg, run.out
    # every random draw of an epoch is seeded from (seed, epoch[, rank]): a resumed run draws what it would have
    run.train_loader.generator.manual_seed(_seed(cfg.seed, epoch))
    run.generator.manual_seed(_seed(cfg.seed, epoch, info.rank, 1))  # crops and mixing
    torch.manual_seed(_seed(cfg.seed, epoch, info.rank, 2))  # drop-path, dropout (CPU and CUDA)
    if isinstance(run.train_loader.sampler, DistributedSampler):
        run.train_loader.sampler.set_epoch(epoch)
    t0 = time.perf_counter()
    train_stats = run.trainer.train_epoch(run.train_loader, epoch, info, max_steps=cfg.max_steps, quiet=cfg.quiet)
    metrics = evaluate(run.model, run.val_loader, info, run.augment, amp=cfg.amp)
    row = {"epoch": epoch + 1, **train_stats, **metrics, "lr": run.optimizer.param_groups[0]["lr"],
           "epoch_seconds": time.perf_counter() - t0}
    improved = metrics["top1"] > best
    best = max(best, metrics["top1"])
    if info.is_main:
        _write_metrics(out / "metrics.csv", row)
        _plot(out / "metrics.csv", out / "curves.png", f"{cfg.model} + {cfg.mixer} on {cfg.data}")
        core = run.core
        state = {"model": core.backbone.state_dict(),
                 "token_head": None if core.token_head is None else core.token_head.state_dict(),
                 "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                 "updates": run.trainer.updates, "epoch": epoch + 1, "best_top1": best, "config": cfg.to_dict(),
                 "num_classes": run.num_classes}
        save_checkpoint(state, out / "last.pt")
        run.trainer.hooks.save(out)
        if improved:
            save_checkpoint(state, out / "best.pt")
    _log(f"epoch {epoch + 1}/{cfg.epochs}: train loss {train_stats['train_loss']:.4f}, val loss "
         f"{metrics['val_loss']:.4f}, top-1 {metrics['top1']:.2f}%, top-5 {metrics['top5']:.2f}%", info, cfg.quiet)
    return row, best


def _resume(cfg: TrainConfig, core: Classifier, trainer: Trainer, num_classes: int) -> tuple[int, float]:
    state = load_checkpoint(cfg.resume)
    saved = state["config"]
    if saved.get("model") != cfg.model:
        raise CheckpointError(f"--resume {cfg.resume} was trained with --model {saved.get('model')}, not {cfg.model}")
    if state.get("num_classes") != num_classes:
        raise CheckpointError(f"--resume {cfg.resume} has {state.get('num_classes')} classes but the data set has "
                              f"{num_classes}: resume on the same data set")
    try:
        core.backbone.load_state_dict(state["model"])
        if core.token_head is not None and state.get("token_head") is not None:
            core.token_head.load_state_dict(state["token_head"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(f"--resume {cfg.resume} does not fit this model/optimiser: {err}") from err
    trainer.updates = int(state.get("updates", 0))
    return int(state["epoch"]), float(state["best_top1"])
