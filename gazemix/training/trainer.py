"""``train(config)``: one training run end to end, single process or under ``torchrun``.

Writes to its run folder (rank 0 only; :mod:`gazemix.training.run_folder`: a fresh
``runs/train/<date>-<time>-<mixer>`` by default, never a folder that holds another run unless resuming it):
``config.json`` (every setting, resolved), ``metrics.csv`` (one row per epoch, rewritten whole each epoch),
``curves.png`` (:mod:`gazemix.training.curves`), ``last.pt`` and ``best.pt``; a mixer with training state of its own
(the learned mixers) saves it there too through its training hooks (``mixer.pt``, which the mixer option
``checkpoint=<out>/mixer.pt`` reloads).
"""

from __future__ import annotations

import inspect
import json
import math
import platform
import re
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
from gazemix.outputs import write_file_atomic
from gazemix.registry import create_mixer, mixer_class
from gazemix.training import distributed
from gazemix.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gazemix.training.config import TrainConfig, resolve_recipe
from gazemix.training.curves import write_curves
from gazemix.training.data import IMAGENET_MEAN, IMAGENET_STD, BatchAugment, DataError, TrainData, build_data
from gazemix.training.engine import Classifier, RunClock, Trainer, evaluate, format_duration
from gazemix.training.labels import LABEL_SOURCES, LabelSource, make_label_source
from gazemix.training.run_folder import check_out, fresh_out, read_metrics, write_metrics

__all__ = ["METRIC_COLUMNS", "MixerOptionError", "build_mixer", "token_head_for", "train"]

METRIC_COLUMNS = ("epoch", "train_loss", "val_loss", "top1", "top5", "lr", "images_per_second",
                  "data_seconds_per_step", "gaze_empty_crops", "label_fallbacks", "epoch_seconds")

#: options every mixer takes that the trainer sets itself (from the data set, --label-smoothing and --seed)
TRAINER_SET = ("num_classes", "label_smoothing", "seed")


class MixerOptionError(ValueError):
    """A mixer option the mixer refuses; ``option`` names it (``None`` when the options as a whole are refused)."""

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


def _log(msg: str, info: distributed.DistInfo, quiet: bool) -> None:
    if info.is_main and not quiet:
        print(msg, file=sys.stderr, flush=True)


def mixer_options_of(cls: type[Mixer]) -> list[str]:
    """The keyword options a mixer class takes (its ``__init__`` and its bases'), less those the trainer sets."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self":
                names.add(p.name)
    return sorted(names - set(TRAINER_SET))


def build_mixer(name: str, backbone: torch.nn.Module, num_classes: int, *, has_gaze: bool, label_smoothing: float = 0.0,
                seed: int = 0, options: dict[str, Any] | None = None) -> Mixer | None:
    """The mixer registered as ``name`` (``"none"``: no mixing) set up for ``backbone``.

    Mixers laid on a token grid (``uses_patch_grid``) get the ViT's patch size unless ``options`` sets one; a mixer
    that reads a ViT (``model_kind == "vit"``, or a relabel from the ViT's attention) on a CNN, or human gaze on a
    data set without it, is refused with what to use instead. An option the mixer does not take, or refuses, raises
    :class:`MixerOptionError` naming it.
    """
    if name.lower() == "none":
        return None
    cls = mixer_class(name)
    vit = is_vit(backbone)
    user = dict(options or {})
    for key in user:
        if key in TRAINER_SET:
            raise MixerOptionError(f"mixer option {key!r} is set by the trainer (num_classes from the data set, "
                                   f"label_smoothing from --label-smoothing, seed from --seed)", key)
    options = dict(user)
    if vit and cls.uses_patch_grid:
        options.setdefault("patch_size", int(backbone.patch_embed.patch_size[0]))  # mix on the model's token grid
    try:
        mixer = create_mixer(cls.name, num_classes=num_classes, label_smoothing=label_smoothing, seed=seed, **options)
    except TypeError as err:
        m = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        if m is None or m.group(1) not in user:
            raise
        raise MixerOptionError(f"mixer {cls.name!r} has no option {m.group(1)!r}; its options: "
                               f"{', '.join(mixer_options_of(cls))} (see its docstring)", m.group(1)) from None
    except ValueError as err:
        if not user:
            raise
        named = [k for k in user if re.search(rf"\b{re.escape(k)}\b", str(err))]
        raise MixerOptionError(f"mixer {cls.name!r} refuses {', '.join(f'{k}={v!r}' for k, v in user.items())}: "
                               f"{err}", named[0] if len(named) == 1 else None) from None
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


def train(config: TrainConfig, data: TrainData | None = None) -> dict[str, Any]:
    """Train ``config.model`` with ``config.mixer``; returns the last epoch's metrics (the columns of
    ``metrics.csv``), ``best_top1`` and ``best_epoch``, the run folder ``out``, ``label_source`` and ``rank``.

    Args:
        config: every setting (see :class:`TrainConfig`).
        data: in-memory train/validation sets to use instead of the ones ``config.data`` names.
    """
    try:
        device = resolve_device(config.device)
    except ValueError as err:
        raise ValueError(f"--device: {err}") from None
    info = distributed.setup(device)
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
    metrics: list[dict[str, Any]]


def _check_names(config: TrainConfig) -> None:
    """Names and files first: a typo must not wait for the data set."""
    check_model_name(config.model)
    if config.mixer.lower() != "none":
        mixer_class(config.mixer)
    if config.label_source not in LABEL_SOURCES:
        raise ValueError(f"--label-source must be one of {', '.join(LABEL_SOURCES)}, got {config.label_source!r}")
    if config.label_source != "mixer" and config.mixer.lower() == "none":
        raise ValueError(f"--label-source {config.label_source} relabels mixed images, but --mixer none mixes none")
    if config.resume is not None and not Path(config.resume).is_file():
        raise CheckpointError(f"--resume {config.resume}: no such file (a run folder holds last.pt and best.pt)")
    if config.pretrained_path is not None and not Path(config.pretrained_path).is_file():
        raise ModelError(f"--pretrained-path {config.pretrained_path}: no such file (local .pt/.pth/.safetensors "
                         f"weights; nothing is downloaded)")


def _train(config: TrainConfig, info: distributed.DistInfo, data: TrainData | None) -> dict[str, Any]:
    _check_names(config)
    cfg = resolve_recipe(config, info.world_size)
    curve = cfg.calibration_mixer or (mixer_class(cfg.mixer).name if cfg.mixer.lower() != "none" else None)
    make_label_source(cfg.label_source, 2, 0.0, calibration=cfg.calibration, curve=curve)  # refuse a bad fit early
    planned = check_out(cfg.out, cfg.resume)
    created = False
    if info.is_main:
        if planned is None:
            planned, created = fresh_out(mixer_class(cfg.mixer).name if cfg.mixer.lower() != "none" else "none"), True
        else:
            created = not planned.exists()
            planned.mkdir(parents=True, exist_ok=True)
    out = Path(distributed.broadcast_object(str(planned), info))
    cfg.out = str(out)
    try:
        return _train_in(cfg, out, info, data, curve)
    except BaseException:
        if info.is_main and created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that failed before writing anything leaves no empty folder behind
        raise


def _train_in(cfg: TrainConfig, out: Path, info: distributed.DistInfo, data: TrainData | None,
              curve: str | None) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    run = _build_run(cfg, out, info, data, curve)
    start, best, best_epoch = 0, -math.inf, 0
    if cfg.resume:
        start, best, best_epoch = _resume(cfg, run.core, run.trainer, run.num_classes)
        run.metrics[:] = _resumed_metrics(cfg, out, start, info)
        _log(f"resumed from {cfg.resume} at epoch {start}", info, cfg.quiet)
    run.trainer.hooks.setup(run.core.backbone, loader=run.train_loader, augment=run.augment,
                            total_steps=cfg.epochs * run.steps, device=info.device, max_steps=cfg.max_steps,
                            quiet=cfg.quiet or not info.is_main, state_dir=out, resume=bool(cfg.resume),
                            start_step=run.trainer.updates)
    if info.is_main:
        _write_config(run, info)
    labels = "" if cfg.label_source == "mixer" else f", labels: {cfg.label_source}"
    _log(f"training {cfg.model} with mixer {cfg.mixer} on {run.data.description}{labels}: {cfg.epochs} epochs x "
         f"{run.steps} steps, batch {cfg.batch_size} x {info.world_size}, lr {cfg.lr:.2e}, device {info.device}; "
         f"writing to {out}", info, cfg.quiet)
    for note in run.data.notes:
        _log(f"data: {note}", info, cfg.quiet)
    clock = RunClock(steps_left=(cfg.epochs - start) * run.steps, evals_left=cfg.epochs - start)
    row: dict[str, Any] = {}
    for epoch in range(start, cfg.epochs):
        row, best, best_epoch = _epoch(run, epoch, best, best_epoch, info, clock)
    if not row and run.metrics:
        row = {k: _number(v) for k, v in run.metrics[-1].items()}
    return {**row, "best_top1": best, "best_epoch": best_epoch, "out": str(out), "label_source": cfg.label_source,
            "rank": info.rank}


def _number(text: Any) -> Any:
    """A ``metrics.csv`` cell as the number it was written from."""
    for kind in (int, float):
        try:
            return kind(text)
        except (TypeError, ValueError):
            continue
    return text


def _resumed_metrics(cfg: TrainConfig, out: Path, start: int, info: distributed.DistInfo) -> list[dict[str, Any]]:
    """The rows up to the resumed epoch: from ``out``'s table, or the checkpoint's run folder for a new ``out``."""
    own = read_metrics(out / "metrics.csv")
    rows = own if own else read_metrics(Path(cfg.resume).parent / "metrics.csv")
    kept = [r for r in rows if int(float(r["epoch"])) <= start]
    if len(kept) < len(rows):
        later = sorted({int(float(r["epoch"])) for r in rows} - {int(float(r["epoch"])) for r in kept})
        which = f"epoch {later[0]}" if len(later) == 1 else f"epochs {later[0]}-{later[-1]}"
        _log(f"metrics.csv: {which} dropped (the checkpoint was written after epoch {start}; trained again)", info,
             cfg.quiet)
    return kept


def _build_run(cfg: TrainConfig, out: Path, info: distributed.DistInfo, data: TrainData | None,
               curve: str | None) -> _Run:
    """The data, model, mixer (and the module its hooks want), loaders, optimiser, schedule and trainer."""
    if data is None:
        data = build_data(cfg.data, cfg.root, cfg.img_size, fixations=cfg.fixations, seed=cfg.seed,
                          demo_train=cfg.demo_train, demo_val=cfg.demo_val, label_gaze=cfg.label_source == "gaze",
                          max_bad_fraction=cfg.max_bad_fraction)
    data.check()
    k = len(data.class_names)
    if cfg.num_classes is not None and cfg.num_classes != k:
        raise DataError(f"--num-classes {cfg.num_classes} does not match {data.description}, which has {k} classes: "
                        f"drop --num-classes or point --root at the intended data set")
    if cfg.label_source == "gaze" and not data.has_label_gaze:
        raise DataError(f"--label-source gaze needs held-out human gaze, and {data.description} has "
                        + ("gaze but no held-out split of it (build the data with label_gaze=True)" if data.has_gaze
                           else "no gaze"))
    try:
        backbone = build_model(cfg.model, k, cfg.img_size, patch_size=cfg.patch_size, drop_path=cfg.drop_path)
    except ModelError as err:  # a patch size on a CNN, an image side the patches do not tile
        flag = f"--patch-size {cfg.patch_size}" if cfg.patch_size and "patch size applies" in str(err) \
            else f"--img-size {cfg.img_size}"
        raise ModelError(f"{flag}: {err}") from None
    if cfg.pretrained_path:
        left = load_pretrained(backbone, cfg.pretrained_path)
        _log(f"loaded {cfg.pretrained_path}; newly initialised: {', '.join(left) or 'nothing'}", info, cfg.quiet)
    mixer = build_mixer(cfg.mixer, backbone, k, has_gaze=data.has_gaze, label_smoothing=cfg.label_smoothing,
                        seed=cfg.seed * 1000 + info.rank, options=cfg.mixer_options)
    labels: LabelSource = make_label_source(cfg.label_source, k, cfg.label_smoothing, calibration=cfg.calibration,
                                            curve=curve)
    core = Classifier(backbone, token_head_for(mixer, backbone, k, cfg.square_losses)).to(info.device)
    model = DistributedDataParallel(core, device_ids=[info.device.index] if info.device.type == "cuda" else None) \
        if info.enabled else core
    train_loader = _loader(data.train, cfg, info, train=True, seed=cfg.seed)
    val_loader = _loader(data.val, cfg, info, train=False, seed=cfg.seed)
    if len(train_loader) == 0:
        raise DataError(f"the train split of {data.description} has {len(data.train)} samples, fewer than one batch "
                        f"of {cfg.batch_size} per process ({info.world_size} processes): use a smaller --batch-size "
                        f"(at most {len(data.train) // info.world_size})")
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
                      amp=cfg.amp, device=info.device, square_losses=cfg.square_losses, label_source=labels)
    return _Run(cfg, out, data, k, mixer, core, model, train_loader, val_loader, steps, optimizer, scheduler,
                generator, augment, trainer, [])


def _write_config(run: _Run, info: distributed.DistInfo) -> None:
    """``config.json``: every setting, resolved, with the data set, the process layout and the versions."""
    cfg = run.cfg
    record = {**cfg.to_dict(), "num_classes": run.num_classes, "class_names": run.data.class_names,
              "data_description": run.data.description, "data_notes": run.data.notes,
              "world_size": info.world_size, "device": str(info.device),
              "steps_per_epoch": run.steps, "mixer_config": None if run.mixer is None else run.mixer.config(),
              "versions": {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()}}
    write_file_atomic(run.out / "config.json", json.dumps(record, indent=2, default=str), overwrite=True)


def _epoch(run: _Run, epoch: int, best: float, best_epoch: int, info: distributed.DistInfo,
           clock: RunClock) -> tuple[dict[str, Any], float, int]:
    """Train and evaluate one epoch, write its row, curves and checkpoints; returns the row, the best top-1 and its
    epoch."""
    cfg, out = run.cfg, run.out
    # every random draw of an epoch is seeded from (seed, epoch[, rank]): a resumed run draws what it would have
    run.train_loader.generator.manual_seed(_seed(cfg.seed, epoch))
    run.generator.manual_seed(_seed(cfg.seed, epoch, info.rank, 1))  # crops and mixing
    torch.manual_seed(_seed(cfg.seed, epoch, info.rank, 2))  # drop-path, dropout (CPU and CUDA)
    if isinstance(run.train_loader.sampler, DistributedSampler):
        run.train_loader.sampler.set_epoch(epoch)
    t0 = time.perf_counter()
    train_stats = run.trainer.train_epoch(run.train_loader, epoch, info, max_steps=cfg.max_steps, quiet=cfg.quiet,
                                          clock=clock, epochs=cfg.epochs)
    t1 = time.perf_counter()
    metrics = evaluate(run.model, run.val_loader, info, run.augment, amp=cfg.amp)
    clock.evaluated(time.perf_counter() - t1)
    row = {"epoch": epoch + 1, **train_stats, **metrics, "lr": run.optimizer.param_groups[0]["lr"],
           "epoch_seconds": time.perf_counter() - t0}
    improved = metrics["top1"] > best
    if improved:
        best, best_epoch = metrics["top1"], epoch + 1
    if info.is_main:
        run.metrics.append(row)
        write_metrics(out / "metrics.csv", run.metrics, METRIC_COLUMNS)
        labels = "" if cfg.label_source == "mixer" else f", {cfg.label_source} labels"
        write_curves(run.metrics, out / "curves.png", run.num_classes,
                     f"{cfg.model} + {cfg.mixer}{labels} on {cfg.data}")
        core = run.core
        state = {"model": core.backbone.state_dict(),
                 "token_head": None if core.token_head is None else core.token_head.state_dict(),
                 "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                 "updates": run.trainer.updates, "epoch": epoch + 1, "best_top1": best, "best_epoch": best_epoch,
                 "config": cfg.to_dict(), "num_classes": run.num_classes}
        save_checkpoint(state, out / "last.pt")
        run.trainer.hooks.save(out)
        if improved:
            save_checkpoint(state, out / "best.pt")
    _log(_summary(row, cfg.epochs, run.num_classes, clock, cfg.label_source), info, cfg.quiet)
    return row, best, best_epoch


def _summary(row: dict[str, Any], epochs: int, num_classes: int, clock: RunClock, label_source: str) -> str:
    """The epoch's line: the numbers of its ``metrics.csv`` row, in the bar's words, and the run's ETA."""
    top5 = f", top-5 {row['top5']:.2f}%" if num_classes >= 10 else ""
    fallbacks = f", {row['label_fallbacks']} mixer-labelled (no held-out gaze)" if label_source == "gaze" else ""
    return (f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f} (mean), val loss {row['val_loss']:.4f}, "
            f"top-1 {row['top1']:.2f}%{top5}, {row['images_per_second']:.0f} img/s, data "
            f"{1000 * row['data_seconds_per_step']:.0f} ms/step{fallbacks}, {row['epoch_seconds']:.1f} s, run ETA "
            f"{format_duration(clock.eta())}")


def _resume(cfg: TrainConfig, core: Classifier, trainer: Trainer, num_classes: int) -> tuple[int, float, int]:
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
    return int(state["epoch"]), float(state["best_top1"]), int(state.get("best_epoch", 0))
