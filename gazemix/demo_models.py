"""Small classifiers trained once on the synthetic demo set, for the mixers that read a model.

The model-driven mixers need a trained classifier: CAM, feature and input-gradient mixers (SnapMix, Attentive
CutMix, PuzzleMix, Co-Mixup, R-Mix, Saliency Grafting; AutoMix and TransformMix learn from one) a CNN, the attention
mixers (TransMix, TokenMix, MixPro, SMMix, TdAttenMix) a Vision Transformer. Nothing may be downloaded, so
:func:`load_or_train_demo_models` trains both from scratch on the demo set (:mod:`gazemix.demo`, synthetic), once,
seeded, with gazemix's own trainer (:func:`gazemix.training.train`, no mixing), and caches the weights in a user
cache folder under a key that hashes every setting and the source of the demo generator and of this module.

Both networks take images of **any size in [0, 1]**: their first layer resizes the input to ``RESOLUTION`` = 64 pixels
(antialiased bilinear) and normalises it, so the mixers can run them on 224-px images although they are trained
on 64-px ones (the demo draws a small set like a downsampled large one; see :mod:`gazemix.demo`).

* ``gazemix_demo_cnn`` — a timm ResNet (timm's ``test_resnet`` layout: deep 16-wide stem, stages of 32, 48, 48 and
  96 channels) with output stride 8: its CAM / last feature map is an 8 x 8 grid over the image, bilinearly
  upsampled by the CAM code as for any CNN.
* ``gazemix_demo_vit`` — a timm ``VisionTransformer`` (width 64, 4 blocks, 2 heads, MLP ratio 3, class token)
  on an 8 x 8 token grid, whose logits read the class token and the patch tokens (:class:`DemoViT`). Built for
  ``img_size`` S its patch size is ``S // 8`` pixels, so every gazemix reader of ViT attention
  (:class:`~gazemix.attention.vit.AttentionHook`, TdAttenMix's top-down read-out, TokenMix's token labels, SMMix's
  patch attention) lays the 8 x 8 grid over the whole image; token mixers should be built with
  :func:`vit_mixer_options` (``patch_size=vit_patch_size(S)``, 28 at 224 px) to mix on the same grid.

Both are registered as timm models (``timm.create_model("gazemix_demo_vit", img_size=224)`` works once this module
is imported), so gazemix checkpoints of them — ``gazemix train`` runs, learned mixers' ``mixer.pt`` — reload by name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import timm
import torch
import torch.nn.functional as F
from timm.models import register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

__all__ = ["CNN_NAME", "LEARNED_MIXERS", "RESOLUTION", "DemoModelConfig", "DemoModels", "DemoViT", "VIT_GRID", "VIT_NAME", "build_demo_model",
           "cache_key", "default_cache_dir", "demo_train_data", "held_out_accuracy", "learned_mixer_path",
           "load_or_train_demo_models", "train_learned_mixers", "vit_mixer_options", "vit_patch_size"]

CNN_NAME, VIT_NAME = "gazemix_demo_cnn", "gazemix_demo_vit"
VIT_GRID = 8  # tokens per side of the demo ViT, whatever the input size
RESOLUTION = 64  # both networks resize their input to this side (the architecture: it is not a setting)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the networks normalise their [0, 1] input themselves
FORMAT = 1
TRAIN_SEED_OFFSET, VAL_SEED_OFFSET, TEST_SEED_OFFSET = 1_000_003, 2_000_003, 3_000_003  # demo seeds of the models'
# data: far from the seeds `gazemix score` draws its scoring set with (0, 1, 2, ...), so no scene is shared


class InputPrep(nn.Module):
    """Resize ``(B, C, H, W)`` images in [0, 1] to ``resolution`` (antialiased bilinear) and normalise them."""

    def __init__(self, resolution: int, mean: tuple[float, ...] = MEAN, std: tuple[float, ...] = STD) -> None:
        super().__init__()
        self.resolution = int(resolution)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True,
                              align_corners=False)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class ResizedPatchEmbed(nn.Module):
    """A ViT patch embedding for inputs of any size: :class:`InputPrep` to ``resolution``, then ``grid x grid``
    non-overlapping patches projected to ``embed_dim``.

    Seen from outside (``img_size``, ``patch_size``, ``grid_size``) it is a patch embedding of ``img_size``-px
    images with ``img_size // grid``-px patches, which is how gazemix maps tokens to pixels.
    """

    def __init__(self, img_size: int | tuple[int, int] = 224, patch_size: Any = None, in_chans: int = 3,
                 embed_dim: int = 64, bias: bool = True, *, resolution: int = 64, grid: int = VIT_GRID,
                 **_: Any) -> None:
        super().__init__()
        if resolution % grid:
            raise ValueError(f"resolution {resolution} must be a multiple of the token grid {grid}")
        self.grid, self.flatten, self.dynamic_img_pad = int(grid), True, False
        self.prep = InputPrep(resolution)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=resolution // grid, stride=resolution // grid,
                              bias=bias)
        self.set_input_size(img_size)

    def set_input_size(self, img_size: int | tuple[int, int] | None = None, patch_size: Any = None) -> None:
        """Re-target the same weights to inputs of ``img_size`` (the patch size follows; the grid stays)."""
        if img_size is not None:
            size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
            if min(size) < self.grid:
                raise ValueError(f"img_size {size} is smaller than the {self.grid} x {self.grid} token grid")
            self.img_size = size
        self.patch_size = (self.img_size[0] // self.grid, self.img_size[1] // self.grid)
        self.grid_size = (self.grid, self.grid)
        self.num_patches = self.grid * self.grid

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        return self.patch_size[0] if as_scalar else self.patch_size

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        return self.grid_size

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.prep(x)).flatten(2).transpose(1, 2)


def _no_weights(pretrained: bool, name: str) -> None:
    if pretrained:
        raise ValueError(f"{name} has no pretrained weights: gazemix.demo_models.load_or_train_demo_models trains it")


def _card(model: nn.Module, name: str) -> nn.Module:
    """Give a hand-built model the ``pretrained_cfg`` timm models carry (gazemix reads architecture, mean, std)."""
    cfg = {"architecture": name, "input_size": (3, RESOLUTION, RESOLUTION), "mean": (0.0, 0.0, 0.0),
           "std": (1.0, 1.0, 1.0), "num_classes": model.num_classes, "url": "", "license": "same as gazemix",
           "notes": "normalises internally: feed images in [0, 1]"}
    model.pretrained_cfg = model.default_cfg = cfg
    return model


@register_model
def gazemix_demo_cnn(pretrained: bool = False, *, num_classes: int = 6, drop_path_rate: float = 0.0,
                     **_: Any) -> ResNet:
    """The demo CNN: timm's ``test_resnet`` layout with output stride 8, resizing its input to ``RESOLUTION``."""
    _no_weights(pretrained, CNN_NAME)
    model = ResNet(block=[BasicBlock, BasicBlock, Bottleneck, BasicBlock], layers=(1, 1, 1, 1), stem_width=16,
                   stem_type="deep", avg_down=True, channels=(32, 48, 48, 96), output_stride=8,
                   num_classes=num_classes, drop_path_rate=drop_path_rate)
    model.conv1 = nn.Sequential(InputPrep(RESOLUTION), model.conv1)  # every path (features, intermediates) starts here
    return _card(model, CNN_NAME)


class DemoViT(VisionTransformer):
    """A timm ``VisionTransformer`` whose logits read the class token and every patch token through one head:
    ``head(z_cls) + 0.5 * max_t head(z_t)``, the form of LV-ViT's inference output (Jiang et al., "All Tokens
    Matter: Token Labeling for Training Better Vision Transformers", NeurIPS 2021: class-token logits plus half the
    token-wise maximum of an auxiliary head; here the head is shared).

    Why: TransMix and MixPro read the class token's attention, which only means something when the class token
    carries the prediction; TdAttenMix's top-down read-out and TokenMix's token labels compare *patch* tokens with
    the head's class vectors, which only means something when patch tokens are trained against that head. With
    class-token pooling alone the top-down map missed the object (less mass on it than a uniform map); with
    average pooling the class-token attention was near uniform; this head makes both follow the object.
    """

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        cls = self.head_drop(self.fc_norm(x[:, 0]))
        if pre_logits:
            return cls
        tokens = self.head_drop(self.fc_norm(x[:, self.num_prefix_tokens:]))
        return self.head(cls) + 0.5 * self.head(tokens).amax(dim=1)


@register_model
def gazemix_demo_vit(pretrained: bool = False, *, img_size: int = 224, num_classes: int = 6,
                     drop_path_rate: float = 0.0, **_: Any) -> DemoViT:
    """The demo ViT: 4 blocks of width 64 on an 8 x 8 token grid over ``img_size``-px inputs (see the module doc)."""
    _no_weights(pretrained, VIT_NAME)
    model = DemoViT(img_size=img_size, patch_size=max(1, img_size // VIT_GRID), num_classes=num_classes,
                    embed_dim=64, depth=4, num_heads=2, mlp_ratio=3.0, drop_path_rate=drop_path_rate,
                    embed_layer=partial(ResizedPatchEmbed, resolution=RESOLUTION, grid=VIT_GRID))
    return _card(model, VIT_NAME)


def vit_patch_size(img_size: int) -> int:
    """Pixels per token of the demo ViT on ``img_size``-px images (``patch_size=`` for token mixers; 28 at 224)."""
    return max(1, img_size // VIT_GRID)


def vit_mixer_options(img_size: int) -> dict[str, dict[str, int]]:
    """Options that put the token mixers reading the demo ViT on its 8 x 8 grid over ``img_size``-px images.

    TokenMix and TdAttenMix get the ViT's patch size; MixPro also MaskMix cells of 2 x 2 tokens (a quarter of the
    side; the official 4 x 4 of a 14 x 14 grid is two sevenths). TransMix and SMMix read the grid off the
    attention and need none.
    """
    p = vit_patch_size(img_size)
    return {"tokenmix": {"patch_size": p}, "mixpro": {"patch_size": p, "mask_patch_size": 2 * p},
            "tdattenmix": {"patch_size": p}}


def build_demo_model(kind: str, img_size: int = 224, *, num_classes: int = 6) -> nn.Module:
    """A fresh (untrained) demo ``"cnn"`` or ``"vit"`` for ``img_size``-px inputs."""
    if kind == "cnn":
        return gazemix_demo_cnn(num_classes=num_classes)
    if kind == "vit":
        return gazemix_demo_vit(img_size=img_size, num_classes=num_classes)
    raise ValueError(f"kind must be 'cnn' or 'vit', got {kind!r}")


# ----------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class DemoModelConfig:
    """Every setting of the demo models' training (all enter the cache key).

    Defaults: 4,096 training images at ``floor(64 / 0.875) = 73`` px (random-resized crops of 60-100 % of the area
    to 64 px, flips), AdamW with a one-epoch warm-up and cosine decay, label smoothing 0.1, no mixing; held-out
    accuracy on 1,024 new images at 64 px and 512 at ``eval_size`` (the size `gazemix score` runs the models at).
    """

    train_images: int = 4096
    val_images: int = 1024
    eval_images: int = 512
    eval_size: int = 224
    batch_size: int = 64
    cnn_epochs: int = 5
    vit_epochs: int = 10
    cnn_lr: float = 2e-3
    vit_lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    crop_scale: tuple[float, float] = (0.6, 1.0)

    def __post_init__(self) -> None:
        for name in ("train_images", "val_images", "eval_images", "eval_size", "batch_size",
                     "cnn_epochs", "vit_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DemoModelConfig.{name} must be a positive integer, got {value!r}")
        if self.train_images < self.batch_size:
            raise ValueError(f"DemoModelConfig.train_images ({self.train_images}) must be at least one batch "
                             f"({self.batch_size})")


def default_cache_dir() -> Path:
    """``$GAZEMIX_CACHE``, else ``~/.cache/gazemix`` (the folder `gazemix score --cache` defaults to)."""
    return Path(os.environ.get("GAZEMIX_CACHE", Path.home() / ".cache" / "gazemix"))


def _source_hash(*modules: Any) -> str:
    h = hashlib.sha256()
    for module in modules:
        h.update(inspect.getsource(module).encode())
    return h.hexdigest()[:16]


def cache_key(config: DemoModelConfig, seed: int) -> str:
    """16 hex digits of a hash of the settings, the seed and the source of the demo generator and this module."""
    import gazemix.demo

    record = {"format": FORMAT, "seed": seed, "config": dataclasses.asdict(config),
              "source": _source_hash(gazemix.demo, sys.modules[__name__])}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- data
def demo_train_data(n_train: int, n_val: int, img_size: int, seed: int, *, gaze: bool = False):
    """A :class:`~gazemix.training.TrainData` of new demo images: ``n_train`` at ``floor(img_size / 0.875)`` px
    (the trainer's random-resized crops take ``img_size`` from them) and ``n_val`` held out at ``img_size``.

    The demo seeds are ``seed + 1,000,003`` (train) and ``seed + 2,000,003`` (validation), so the scenes differ
    from each other and from any set `gazemix score` draws with a small seed.
    """
    from gazemix.demo import make_demo
    from gazemix.training import TensorGazeDataset, TrainData
    from gazemix.training.data import base_size

    tr = make_demo(n=n_train, size=base_size(img_size), seed=seed + TRAIN_SEED_OFFSET)
    va = make_demo(n=n_val, size=img_size, seed=seed + VAL_SEED_OFFSET)
    return TrainData(TensorGazeDataset(tr.images, tr.labels, tr.gaze if gaze else None),
                     TensorGazeDataset(va.images, va.labels), list(tr.class_names), gaze,
                     f"the synthetic demo set ({n_train} train / {n_val} held out, seed {seed})")


@torch.no_grad()
def held_out_accuracy(model: nn.Module, n: int, size: int, seed: int, *, batch: int = 128) -> float:
    """Top-1 (%) of ``model`` on ``n`` new demo images drawn at ``size`` px (demo seed ``seed + 3,000,003``)."""
    from gazemix.demo import make_demo

    model.eval()
    correct = 0
    for start in range(0, n, 256):  # draw in chunks: 224-px sets are large
        demo = make_demo(n=min(256, n - start), size=size, seed=seed + TEST_SEED_OFFSET + start)
        for i in range(0, len(demo), batch):
            logits = model(demo.images[i:i + batch])
            correct += int((logits.argmax(1) == demo.labels[i:i + batch]).sum())
    return 100.0 * correct / n


# ----------------------------------------------------------------------------------------------- the models
@dataclass
class DemoModels:
    """The trained demo CNN and ViT (eval mode, frozen), built for ``img_size``-px inputs.

    Attributes:
        cnn, vit: the networks (inputs: images in [0, 1] of any size; the ViT's token grid is laid over
            ``img_size``-px images).
        accuracy: held-out top-1 (%) per ``"cnn"`` / ``"vit"`` on ``config.eval_images`` new demo images at
            ``config.eval_size`` px (the scoring size).
        train_accuracy: the same at the training resolution (the trainer's last-epoch validation, ``val_images``).
        path: the cache file.
        seconds: training seconds per model (as recorded when they were trained) and ``"total"`` for the whole
            training call (data generation and evaluation included).
        trained_now: True when this call trained them, False when they were loaded from the cache.
        config, seed, img_size: what they were trained and built with.
        meta: machine, date, versions and per-epoch history of the training run.
    """

    cnn: nn.Module
    vit: nn.Module
    accuracy: dict[str, float]
    train_accuracy: dict[str, float]
    path: Path
    seconds: dict[str, float]
    trained_now: bool
    config: DemoModelConfig
    seed: int
    img_size: int
    meta: dict[str, Any] = field(default_factory=dict)

    def model(self, kind: str) -> nn.Module:
        if kind not in ("cnn", "vit"):
            raise ValueError(f"kind must be 'cnn' or 'vit', got {kind!r}")
        return self.cnn if kind == "cnn" else self.vit

    def context_provider(self, kind: str) -> Callable[[Tensor, Tensor], dict[str, Any]]:
        """A scoring context provider ``(images, targets) -> dict`` for mixers that read this model.

        ``"cnn"``: ``{"model": cnn}`` (CAMs, features, input gradients). ``"vit"``:
        :func:`gazemix.attention.vit.model_context` — ``model`` (TdAttenMix's top-down map, SMMix's patch attention,
        TokenMix's token labels), ``attention`` (last-block class-token attention, TransMix/MixPro) and ``logits``.
        """
        if kind == "vit":
            from gazemix.attention.vit import model_context
            return model_context(self.vit)
        cnn = self.model(kind)
        return lambda images, targets: {"model": cnn}

    def summary(self) -> str:
        """One line for the terminal / ``summary.md``."""
        how = "trained now" if self.trained_now else "loaded from the cache"
        return (f"demo models ({how}, {self.path}): CNN {self.accuracy['cnn']:.1f} %, ViT {self.accuracy['vit']:.1f} % "
                f"held-out top-1 on {self.config.eval_images} new demo images at {self.config.eval_size} px "
                f"(training took {self.seconds['total']:.0f} s)")


def _cache_path(cache_dir: str | os.PathLike, key: str) -> Path:
    return Path(cache_dir) / f"demo-models-{key}.pt"


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _train_one(kind: str, config: DemoModelConfig, seed: int, data: Any, out: Path, device: str,
               progress: bool) -> tuple[dict[str, Tensor], float, float, list[dict[str, float]]]:
    """Train one demo network with :func:`gazemix.training.train` (no mixing); returns its weights, last-epoch
    validation top-1, seconds and per-epoch metrics."""
    import pandas as pd

    from gazemix.training import TrainConfig, train
    from gazemix.training.checkpoint import load_checkpoint

    name = CNN_NAME if kind == "cnn" else VIT_NAME
    cfg = TrainConfig(data="demo", model=name, mixer="none", epochs=getattr(config, f"{kind}_epochs"),
                      batch_size=config.batch_size, img_size=RESOLUTION, out=str(out), seed=seed,
                      device=device, lr=getattr(config, f"{kind}_lr"), warmup_epochs=config.warmup_epochs,
                      weight_decay=config.weight_decay, label_smoothing=config.label_smoothing, drop_path=0.0,
                      crop_scale=config.crop_scale, workers=0, quiet=not progress)
    t0 = time.perf_counter()
    result = train(cfg, data=data)
    seconds = time.perf_counter() - t0
    state = load_checkpoint(out / "last.pt")["model"]
    history = pd.read_csv(out / "metrics.csv").to_dict("records")
    return state, float(result["top1"]), seconds, history


def _log(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def load_or_train_demo_models(cache_dir: str | os.PathLike | None = None, *, seed: int = 0, progress: bool = True,
                              config: DemoModelConfig | None = None, img_size: int = 224,
                              device: str = "cpu") -> DemoModels:
    """The demo CNN and ViT: loaded from ``cache_dir`` when trained before with the same settings, else trained
    (both, one after the other, a few minutes on two CPU cores) and cached.

    Args:
        cache_dir: folder for ``demo-models-<key>.pt`` (default :func:`default_cache_dir`). The file is written
            to a temporary name and renamed; an unreadable or mismatching file is reported in one line and replaced.
        seed: seeds the demo draws, initialisation and training order (same seed and settings: same models).
        progress: the trainer's progress bars and per-epoch lines on stderr.
        config: training settings (default :class:`DemoModelConfig`).
        img_size: input size the returned models are built for (the ViT's token grid spans it; the CNN takes any).
        device: where to train (``"cpu"``, ``"cuda"``, ``"auto"``); the returned models are on the CPU.
    """
    config = config or DemoModelConfig()
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not isinstance(img_size, int) or img_size < VIT_GRID:
        raise ValueError(f"img_size must be an integer of at least {VIT_GRID} pixels, got {img_size!r}")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(config, seed)
    path = _cache_path(cache_dir, key)
    if path.exists():
        try:
            return _from_state(_read_cache(path, key), path, config, seed, img_size, trained_now=False)
        except Exception as err:  # any unreadable, truncated or foreign file: say so, then train again
            first = str(err).strip().splitlines()[0][:120] if str(err).strip() else ""
            reason = f"{type(err).__name__}: {first}" if first else type(err).__name__
            print(f"gazemix: the demo-model cache {path} cannot be used ({reason}); training the models again",
                  file=sys.stderr, flush=True)
    state = _train_both(config, seed, cache_dir, device, progress)
    state["key"] = key
    _atomic_save(state, path)
    _log(f"demo models cached in {path}", progress)
    return _from_state(state, path, config, seed, img_size, trained_now=True)


def _read_cache(path: Path, key: str) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("key") != key:
        raise ValueError("not a demo-model cache file of this version and these settings")
    return state


def _train_both(config: DemoModelConfig, seed: int, cache_dir: Path, device: str, progress: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    _log(f"training the demo models once (CNN {config.cnn_epochs} + ViT {config.vit_epochs} epochs on "
         f"{config.train_images} synthetic demo images at {RESOLUTION} px); later runs load them from "
         f"{cache_dir}", True)  # said even without progress bars: the first run takes minutes
    data = demo_train_data(config.train_images, config.val_images, RESOLUTION, seed)
    out: dict[str, Any] = {"format": FORMAT, "seed": seed, "config": dataclasses.asdict(config)}
    seconds: dict[str, float] = {}
    history: dict[str, list] = {}
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="demo-models-run-", dir=cache_dir) as runs:
        for kind in ("cnn", "vit"):
            weights, val_top1, secs, hist = _train_one(kind, config, seed, data, Path(runs) / kind, device, progress)
            model = build_demo_model(kind, config.eval_size)
            model.load_state_dict(weights)
            out[kind] = weights
            out[f"{kind}_train_accuracy"] = val_top1
            out[f"{kind}_accuracy"] = held_out_accuracy(model, config.eval_images, config.eval_size, seed)
            seconds[kind], history[kind] = secs, hist
            _log(f"demo {kind.upper()}: held-out top-1 {out[f'{kind}_accuracy']:.1f} % at {config.eval_size} px, "
                 f"{val_top1:.1f} % at {RESOLUTION} px ({secs:.0f} s)", progress)
    seconds["total"] = time.perf_counter() - t0
    out["seconds"] = seconds
    out["meta"] = {"history": history, "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                   "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                   "cpu_threads": torch.get_num_threads(), "device": device,
                   "versions": {"torch": str(torch.__version__), "timm": str(timm.__version__),
                                "python": platform.python_version()}}
    return out


def _from_state(state: Mapping[str, Any], path: Path, config: DemoModelConfig, seed: int, img_size: int, *,
                trained_now: bool) -> DemoModels:
    nets = {}
    for kind in ("cnn", "vit"):
        net = build_demo_model(kind, img_size)
        net.load_state_dict(state[kind])
        nets[kind] = net.eval().requires_grad_(False)
    return DemoModels(cnn=nets["cnn"], vit=nets["vit"],
                      accuracy={k: float(state[f"{k}_accuracy"]) for k in ("cnn", "vit")},
                      train_accuracy={k: float(state[f"{k}_train_accuracy"]) for k in ("cnn", "vit")},
                      path=path, seconds={k: float(v) for k, v in state["seconds"].items()}, trained_now=trained_now,
                      config=config, seed=seed, img_size=img_size, meta=dict(state.get("meta", {})))


# ----------------------------------------------------------------------------------------------- learned mixers
LEARNED_MIXERS = ("automix", "transformmix")


def learned_mixer_path(cache_dir: str | os.PathLike | None, name: str, *, seed: int = 0,
                       config: DemoModelConfig | None = None) -> Path:
    """Where :func:`train_learned_mixers` keeps the ``mixer.pt`` of ``name`` for these settings."""
    key = cache_key(config or DemoModelConfig(), seed)
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / f"demo-{name}-{key}.pt"


def train_learned_mixers(cache_dir: str | os.PathLike | None = None, *, names: tuple[str, ...] = LEARNED_MIXERS,
                         seed: int = 0, progress: bool = True, config: DemoModelConfig | None = None,
                         device: str = "cpu") -> dict[str, Path]:
    """Train the learned mixers on the demo set with the demo CNN's recipe (once; cached like the models).

    Each is one :func:`gazemix.training.train` run of ``gazemix_demo_cnn`` with that mixer on the same demo
    training set, for ``config.cnn_epochs`` epochs: AutoMix learns its Mix Block alongside the classifier;
    TransformMix first runs its search phase against the trained demo CNN as teacher
    (:func:`load_or_train_demo_models`, trained first if not cached). Returns ``{name: path}`` of the ``mixer.pt``
    files, for the mixer option ``checkpoint=`` (their networks are demo CNNs: loading them needs this module
    imported, which registers the architecture with timm).
    """
    from gazemix.learned.base import load_mixer_checkpoint
    from gazemix.training import TrainConfig, train

    config = config or DemoModelConfig()
    unknown = [n for n in names if n not in LEARNED_MIXERS]
    if unknown:
        raise ValueError(f"learned demo mixers are {', '.join(LEARNED_MIXERS)}; got {', '.join(unknown)}")
    paths: dict[str, Path] = {}
    data = None
    for name in names:
        path = learned_mixer_path(cache_dir, name, seed=seed, config=config)
        paths[name] = path
        if path.exists():
            try:
                load_mixer_checkpoint(path, name)
                continue
            except Exception as err:  # unreadable: say so, then train again
                first = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
                print(f"gazemix: the cached {name} mixer {path} cannot be used ({first}); training it again",
                      file=sys.stderr, flush=True)
        if data is None:
            data = demo_train_data(config.train_images, config.val_images, RESOLUTION, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"demo-{name}-run-", dir=path.parent) as run:
            options: dict[str, Any] = {}
            if name == "transformmix":
                options["teacher"] = str(_teacher_checkpoint(cache_dir, config, seed, device, progress, Path(run)))
            _log(f"training the {name} mixer on the demo set ({config.cnn_epochs} epochs of {CNN_NAME}); "
                 f"cached as {path}", True)
            cfg = TrainConfig(data="demo", model=CNN_NAME, mixer=name, mixer_options=options,
                              epochs=config.cnn_epochs, batch_size=config.batch_size, img_size=RESOLUTION,
                              out=str(Path(run) / "train"), seed=seed, device=device, lr=config.cnn_lr,
                              warmup_epochs=config.warmup_epochs, weight_decay=config.weight_decay,
                              label_smoothing=config.label_smoothing, drop_path=0.0, crop_scale=config.crop_scale,
                              workers=0, quiet=not progress)
            train(cfg, data=data)
            os.replace(Path(run) / "train" / "mixer.pt", path)  # same folder: an atomic rename
    return paths


def _teacher_checkpoint(cache_dir: str | os.PathLike | None, config: DemoModelConfig, seed: int, device: str,
                        progress: bool, folder: Path) -> Path:
    """The cached demo CNN as a ``gazemix train`` checkpoint file (what TransformMix's ``teacher=`` reads)."""
    models = load_or_train_demo_models(cache_dir, seed=seed, progress=progress, config=config, device=device)
    path = folder / "teacher.pt"
    torch.save({"model": models.cnn.state_dict(), "num_classes": int(models.cnn.num_classes),
                "config": {"model": CNN_NAME, "img_size": RESOLUTION, "patch_size": None}}, path)
    return path
