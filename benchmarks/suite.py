"""The gazemix benchmark suite: every content-independent mixer (and BC+) against timm, torchvision and the
memory-bandwidth floor, and batched spectral-residual saliency against a per-image OpenCV loop (issue 9).

Method (stated again in the table notes):

* One process, one input batch per device (``B x 3 x S x S`` float32, uniform in [0, 1), class targets).
  All implementations of one method are timed *interleaved* (one call of each, in turn, ``repeats`` times,
  after ``warmup`` untimed rounds) and the median is reported; CUDA calls are synchronised.
* The **floor** is ``torch.lerp(x, x2, 0.5)`` out of place on two ready batches: any mix must at least read
  two batches and write one.
* **timm** (``timm.data.Mixup``) writes into its input, so each timm call gets a fresh clone of the batch,
  made *outside* the timed region: the clone is not charged to timm (this slightly favours timm, whose
  input is then warm in cache). **torchvision** (``transforms.v2.MixUp`` / ``CutMix``) copies its input and
  draws one ``lam`` per batch, so it appears in ``batch`` mode only.
* **Peak extra memory**: on CUDA ``torch.cuda.max_memory_allocated`` above the memory held before the call;
  on CPU the running sum of the allocations and frees that ``torch.profiler`` records during one call (the
  outputs included, the inputs not).
* **Targets**: a content-independent mixer within 2x of the floor (issue 9; FMix with per-sample masks within
  3x, issue 17: its masks need two normal draws and an inverse FFT per image, about a pass and a half over the
  batch before any pixel is mixed) and no slower than the fastest peer of the same method and mode (with a
  5 % allowance for timing noise); batched saliency at least 10x faster than the per-image loop.
* The machine line gives the 1-minute load average: on a shared machine a load above the number of cores
  makes every figure (the floor included) noisy.
"""

from __future__ import annotations

import inspect
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import numpy as np
import torch

from gazemix.registry import create_mixer, list_mixers, mixer_class

__all__ = ["BenchConfig", "MixerRow", "SaliencyRow", "bench_mixers", "bench_saliency", "floor_target", "machine_line"]

FLOOR_TARGET = 2.0
# Kernel targets of issue 17 beside FLOOR_TARGET: FMix with per-sample masks, and BC+, which is timed although its
# mix depends on pixels (its weight p comes from each image's standard deviation).
FLOOR_TARGETS = {("fmix", "elem"): 3.0, ("bc_plus", "-"): 2.0}
PEER_TOLERANCE = 1.05
SALIENCY_TARGET = 10.0
MODES = ("batch", "elem")


@dataclass
class BenchConfig:
    """Sizes and repetitions of one benchmark run."""

    batch: int = 128
    size: int = 224
    repeats: int = 10
    warmup: int = 2
    num_classes: int = 1000
    mixers: tuple[str, ...] | None = None
    seed: int = 0


@dataclass
class MixerRow:
    """One implementation of one method on one device (a row of the table and of the CSV)."""

    device: str
    mixer: str
    mode: str
    impl: str
    ms: float
    floor_ms: float
    x_floor: float
    x_best_peer: float | None
    peak_extra_mb: float | None
    target_met: str
    note: str = ""


@dataclass
class SaliencyRow:
    device: str
    impl: str
    batch: int
    ms: float
    speedup: float
    target_met: str
    note: str = ""


def columns(row_type: type) -> list[str]:
    """CSV column names of a row type, in order."""
    return [f.name for f in fields(row_type)]


def machine_line() -> str:
    """Machine, software and date, for the header of every result."""
    cpu = platform.processor() or platform.machine()
    parts = [time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), f"{platform.system()} {cpu}",
             f"{os.cpu_count()} cores", f"{torch.get_num_threads()} torch threads"]
    if hasattr(os, "getloadavg"):
        parts.append(f"load average {os.getloadavg()[0]:.1f}")
    parts += [f"python {sys.version.split()[0]}", f"torch {torch.__version__}"]
    if torch.cuda.is_available():
        parts.append(f"CUDA {torch.cuda.get_device_name(0)}")
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Impl:
    """A timed call: ``prepare()`` runs untimed before each call (timm's fresh clone), ``call(arg)`` is timed."""

    name: str
    call: Callable[[Any], Any]
    prepare: Callable[[], Any] = lambda: None
    times: list[float] = field(default_factory=list)


def time_interleaved(impls: list[Impl], device: torch.device, repeats: int, warmup: int) -> dict[str, float]:
    """Median milliseconds per call of each implementation, calls interleaved round by round."""
    for r in range(warmup + repeats):
        for impl in impls:
            arg = impl.prepare()
            _sync(device)
            t0 = time.perf_counter()
            out = impl.call(arg)
            _sync(device)
            dt = time.perf_counter() - t0
            del out, arg
            if r >= warmup:
                impl.times.append(dt * 1e3)
    return {impl.name: statistics.median(impl.times) for impl in impls}


def peak_extra_mb(impl: Impl, device: torch.device) -> float:
    """Peak memory (MiB) that one call allocates above what was held before it (see the module notes)."""
    arg = impl.prepare()
    if device.type == "cuda":
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = impl.call(arg)
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return peak / 2 ** 20
    # The profiler's C++ backend (Kineto) logs to stderr on its first use, and on a CUDA build without a GPU
    # that includes "ERROR ... gpuGetDeviceCount failed": silence it unless the user set a level.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings():  # some torch versions warn that each profiling cycle clears its events
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = impl.call(arg)
    del out
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    running = peak = 0
    for e in events:
        running += e.self_cpu_memory_usage
        peak = max(peak, running)
    return peak / 2 ** 20


# ------------------------------------------------------------------------------------------- mixers
def timed_mixers(selected: tuple[str, ...] | None) -> list[str]:
    """Registered mixers that need no context and whose mask depends on shapes only, or that have a target in
    :data:`FLOOR_TARGETS`; ``selected`` (names) narrows them down."""
    targeted = {mixer for mixer, _ in FLOOR_TARGETS}
    names = [m.name for m in list_mixers() if not m.needs and (m.content_independent or m.name in targeted)]
    if selected is None:
        return names
    unknown = sorted(set(selected) - set(names))
    if unknown:
        raise ValueError(f"--mixers {', '.join(unknown)}: not among the mixers the suite times (content-independent "
                         f"ones and BC+); choose from {', '.join(names)}")
    return [n for n in names if n in selected]


def mixer_modes(name: str) -> tuple[str, ...]:
    """``("batch", "elem")`` for mixers with a ``mode`` option, else ``("-",)``."""
    return MODES if "mode" in inspect.signature(mixer_class(name).__init__).parameters else ("-",)


def _timm(method: str, mode: str, num_classes: int):
    from timm.data import Mixup

    alphas = {"mixup": dict(mixup_alpha=1.0, cutmix_alpha=0.0), "cutmix": dict(mixup_alpha=0.0, cutmix_alpha=1.0),
              "switch": dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)}
    if method not in alphas:
        return None
    return Mixup(**alphas[method], mode=mode, label_smoothing=0.0, num_classes=num_classes)


def _torchvision(method: str, num_classes: int):
    from torchvision.transforms import v2

    classes = {"mixup": v2.MixUp, "cutmix": v2.CutMix}
    return classes[method](alpha=1.0, num_classes=num_classes) if method in classes else None


def _peers(method: str, mode: str, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[Impl]:
    peers = []
    timm_mix = _timm(method, mode, num_classes)
    if timm_mix is not None:
        peers.append(Impl("timm", lambda xc: timm_mix(xc, y), prepare=lambda: x.clone()))
    tv = _torchvision(method, num_classes) if mode in ("batch", "-") else None
    if tv is not None:
        peers.append(Impl("torchvision", lambda _: tv(x, y)))
    return peers


def floor_target(mixer: str, mode: str) -> float:
    """The largest ``x_floor`` that meets the target of ``mixer`` in ``mode``."""
    return FLOOR_TARGETS.get((mixer, mode), FLOOR_TARGET)


def _judge(row: MixerRow) -> tuple[str, str]:
    misses = []
    target = floor_target(row.mixer, row.mode)
    if row.x_floor > target:
        misses.append(f"{row.x_floor:.2f}x the floor (target <= {target:g}x)")
    if row.x_best_peer is not None and row.x_best_peer > PEER_TOLERANCE:
        misses.append(f"{row.x_best_peer:.2f}x the fastest peer")
    return ("no", "; ".join(misses)) if misses else ("yes", "")


def bench_mixers(cfg: BenchConfig, device: torch.device, log: Callable[[str], None] = lambda s: None) -> list[MixerRow]:
    """Time every mixer of :func:`timed_mixers` (each mode) with its peers and the floor on ``device``."""
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    x = torch.rand(cfg.batch, 3, cfg.size, cfg.size, generator=gen).to(device)
    x2 = x.flip(0).contiguous()
    y = torch.randint(0, cfg.num_classes, (cfg.batch,), generator=gen).to(device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)  # timm draws from NumPy's global RNG, torchvision from torch's
    rows: list[MixerRow] = []
    for name in timed_mixers(cfg.mixers):
        for mode in mixer_modes(name):
            try:
                opts = {} if mode == "-" else {"mode": mode}
                mixer = create_mixer(name, num_classes=cfg.num_classes, seed=cfg.seed, **opts)
                mixer(x[:2], y[:2])  # fails fast on an unusable configuration
            except Exception as err:  # one broken mixer must not stop the suite
                log(f"bench: skipping {name} ({mode}): {type(err).__name__}: {err}")
                rows.append(MixerRow(str(device), name, mode, "gazemix", float("nan"), float("nan"), float("nan"),
                                     None, None, "no", f"error: {type(err).__name__}: {err}"))
                continue
            log(f"bench: {device} {name} {mode}")
            g = torch.Generator().manual_seed(cfg.seed)
            impls = [Impl("floor", lambda _: torch.lerp(x, x2, 0.5)),
                     Impl("gazemix", lambda _, m=mixer: m(x, y, generator=g))]
            impls += _peers(name, mode, x, y, cfg.num_classes)
            ms = time_interleaved(impls, device, cfg.repeats, cfg.warmup)
            floor = ms["floor"]
            peer_ms = {k: v for k, v in ms.items() if k not in ("floor", "gazemix")}
            best_peer = min(peer_ms.values()) if peer_ms else None
            for impl in impls:
                if impl.name == "floor":
                    continue
                t = ms[impl.name]
                row = MixerRow(str(device), name, mode, impl.name, t, floor, t / floor,
                               None if best_peer is None else t / best_peer, peak_extra_mb(impl, device), "-")
                if impl.name == "gazemix":
                    row.target_met, row.note = _judge(row)
                rows.append(row)
            rows.append(MixerRow(str(device), name, mode, "floor", floor, floor, 1.0, None,
                                 peak_extra_mb(impls[0], device), "-", "torch.lerp of two batches"))
    return rows


# ----------------------------------------------------------------------------------------- saliency
def _opencv_loop(x: torch.Tensor) -> list[np.ndarray]:
    """Per-image OpenCV spectral residual (``cv2.saliency.StaticSaliencySpectralResidual``), as users write it."""
    import cv2

    algo = cv2.saliency.StaticSaliencySpectralResidual_create()
    maps = []
    for img in x:
        arr = (img.permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()
        _, sal = algo.computeSaliency(arr)
        maps.append(sal)
    return maps


def bench_saliency(cfg: BenchConfig, device: torch.device, log: Callable[[str], None] = lambda s: None) -> list[SaliencyRow]:
    """Batched spectral residual (``gazemix.attention.saliency``) against a per-image OpenCV loop."""
    try:
        from gazemix.attention.saliency import spectral_residual_saliency
    except ImportError as err:
        log(f"bench: no batched saliency to time ({err})")
        return []
    import cv2

    if not hasattr(cv2, "saliency"):
        log("bench: this OpenCV build has no saliency module (install opencv-contrib-python-headless): "
            "saliency section skipped")
        return []
    log(f"bench: {device} saliency")
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.rand(cfg.batch, 3, cfg.size, cfg.size, generator=gen).to(device)
    ms = time_interleaved([Impl("gazemix batched FFT", lambda _: spectral_residual_saliency(x)),
                           Impl("OpenCV per-image loop", lambda _: _opencv_loop(x))], device, cfg.repeats, cfg.warmup)
    fast, loop = ms["gazemix batched FFT"], ms["OpenCV per-image loop"]
    speed = loop / fast
    met = "yes" if speed >= SALIENCY_TARGET else "no"
    note = "" if met == "yes" else f"{speed:.1f}x faster, target {SALIENCY_TARGET:g}x"
    return [SaliencyRow(str(device), "gazemix batched FFT", cfg.batch, fast, speed, met, note),
            SaliencyRow(str(device), "OpenCV per-image loop", cfg.batch, loop, 1.0, "-",
                        "cv2 on CPU; includes each image's uint8 conversion")]


def as_dicts(rows: list) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
