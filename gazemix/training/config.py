"""Every setting of a training run, and the per-family defaults it falls back to.

ViT/DeiT defaults are the DeiT recipe (Touvron et al., ICML 2021; also TdAttenMix's ``main.py``): AdamW,
``lr = 5e-4 * batch / 512``, weight decay 0.05, cosine to ``min_lr = 1e-5`` after 5 warm-up epochs from
``1e-6``, label smoothing 0.1, drop-path 0.1, gradient clipping off. CNNs keep AdamW and the schedule with
``lr = 1e-3 * batch / 512`` and drop-path 0.05 (our choice: the CNN recipes of the mixing papers use SGD).
The warm-up is shortened to ``epochs // 5`` for runs under 25 epochs so that short runs leave warm-up.

Labels (``label_source``): ``"mixer"`` trains on the mixer's own label weights; ``"human"`` on the share of each
source people perceive at that weight (a fit of ``gazemix humans calibrate``, ``calibration``); ``"gaze"`` on the
share of held-out human gaze each source keeps in the mixed image (:mod:`gazemix.training.labels`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainConfig", "model_family", "resolve_recipe"]


@dataclass
class TrainConfig:
    """A training run. ``None`` recipe fields are filled by :func:`resolve_recipe` from the model family; ``out=None``
    is a fresh ``runs/train/<date>-<time>-<mixer>`` folder (see :func:`gazemix.training.trainer.train`)."""

    data: str = "demo"
    root: str | None = None
    fixations: tuple[str, ...] | None = None
    max_bad_fraction: float = 0.01
    model: str = "deit_tiny_patch16_224"
    mixer: str = "tdattenmix"
    mixer_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 64
    img_size: int = 224
    patch_size: int | None = None
    out: str | None = None
    pretrained_path: str | None = None
    num_classes: int | None = None
    seed: int = 0
    device: str = "auto"
    resume: str | None = None
    lr: float | None = None
    min_lr: float = 1e-5
    warmup_lr: float = 1e-6
    warmup_epochs: int | None = None
    weight_decay: float = 0.05
    label_smoothing: float | None = None
    drop_path: float | None = None
    clip_grad: float | None = None
    amp: bool = True
    square_losses: bool = True
    crop_scale: tuple[float, float] = (0.08, 1.0)
    workers: int = 2
    demo_train: int = 512
    demo_val: int = 128
    max_steps: int | None = None
    quiet: bool = False
    label_source: str = "mixer"
    calibration: str | None = None
    calibration_mixer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


VIT_MODULES = ("vision_transformer", "vision_transformer_relpos", "deit", "eva", "beit", "cait", "xcit")


def model_family(model: str) -> str:
    """``"vit"`` for models defined in timm's ViT-family modules, else ``"cnn"`` (unknown names too)."""
    from timm.models import is_model, model_entrypoint
    if not is_model(model):
        return "cnn"
    return "vit" if model_entrypoint(model).__module__.rsplit(".", 1)[-1] in VIT_MODULES else "cnn"


def resolve_recipe(cfg: TrainConfig, world_size: int = 1) -> TrainConfig:
    """A copy of ``cfg`` with every ``None`` default filled for the model family and total batch size."""
    vit = model_family(cfg.model) == "vit"
    total = cfg.batch_size * world_size
    base_lr = 5e-4 if vit else 1e-3
    return dataclasses.replace(
        cfg,
        lr=cfg.lr if cfg.lr is not None else base_lr * total / 512,
        warmup_epochs=cfg.warmup_epochs if cfg.warmup_epochs is not None else min(5, cfg.epochs // 5),
        label_smoothing=cfg.label_smoothing if cfg.label_smoothing is not None else 0.1,
        drop_path=cfg.drop_path if cfg.drop_path is not None else (0.1 if vit else 0.05),
    )
