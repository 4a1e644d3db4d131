"""Score mixers against human gaze: for many pairs, how far each mixer's label is from the gaze each source keeps.

Every mixer is run on the **same pairs** (the partner of each sample is fixed by the caller through the
contract's ``index=``), with per-sample parameters where a mixer offers them (``mode="elem"``) so the
samples are independent draws. For each mixed sample the mix is replayed on the two source images' gaze
densities (unit mass each): ``g_own`` is the share of the own image's gaze still visible, ``g_partner`` the
share of the partner's gaze shown, and ``lam_gaze = g_own / (g_own + g_partner)`` is compared with the
mixer's label weight. Multi-source mixers (SpliceMix) are scored per mosaic with the total-variation gap
between normalised label weights and gaze shares (:func:`gazemix.metrics.consistency.source_shares_gap`).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gazemix.contract import Mixer, MixerInputError, MixResult
from gazemix.metrics.consistency import (bootstrap_interval, disagreement, gaze_weight, ghost_label,
                                         label_gaze_gap, pasted_region_shares, source_shares_gap)
from gazemix.registry import create_mixer, list_mixers, mixer_class

__all__ = ["Example", "ScoreRun", "ScoringData", "build_mixers", "draw_pairs", "mixer_options", "score_mixers",
           "summarise"]

ContextProvider = Callable[[Tensor, Tensor], Mapping[str, Any]]


@dataclass
class ScoringData:
    """What scoring needs: unit-mass gaze maps, and when available labels and images (all registered).

    Attributes:
        gaze: ``(N, 1, H, W)`` densities, each summing to 1.
        ids: the data set's image ids.
        labels: ``(N,)`` class indices, or ``None``.
        images: ``(N, 3, H, W)`` float in [0, 1], or ``None`` (content-independent mixers only).
        class_names: names of the classes, when known.
        name: the data set's name, for reports.
        meta: anything worth recording (source files, rendering report, synthetic flag).
    """

    gaze: Tensor
    ids: list[str]
    labels: Tensor | None = None
    images: Tensor | None = None
    class_names: list[str] | None = None
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.gaze.shape[0]
        if self.gaze.ndim != 4 or self.gaze.shape[1] != 1:
            raise ValueError(f"gaze must be (N, 1, H, W) maps, got {tuple(self.gaze.shape)}")
        if n < 2:
            raise ValueError(f"scoring needs at least 2 images with gaze, got {n}")
        if not torch.isfinite(self.gaze).all():
            raise ValueError("gaze maps contain NaN/inf: drop invalid maps (GazeMaps.valid) before scoring")
        if len(self.ids) != n:
            raise ValueError(f"{len(self.ids)} ids for {n} gaze maps")
        if self.labels is not None and self.labels.shape != (n,):
            raise ValueError(f"labels must be ({n},), got {tuple(self.labels.shape)}")
        if self.images is not None and (self.images.shape[0] != n or self.images.shape[-2:] != self.gaze.shape[-2:]):
            raise ValueError(f"images {tuple(self.images.shape)} do not match gaze {tuple(self.gaze.shape)}")

    @property
    def num_classes(self) -> int | None:
        if self.labels is None:
            return None
        return len(self.class_names) if self.class_names else int(self.labels.max()) + 1


def draw_pairs(data: ScoringData, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` (own, partner) index pairs, partner always another image — of another class when labels exist.

    Drawn once from ``seed`` and shared by every mixer.
    """
    if n < 1:
        raise ValueError(f"--pairs must be at least 1, got {n}")
    g = torch.Generator().manual_seed(seed)
    total = data.gaze.shape[0]
    own = torch.randint(0, total, (n,), generator=g)
    partner = (own + torch.randint(1, total, (n,), generator=g)) % total
    if data.labels is not None and int(data.labels.unique().numel()) > 1:
        for _ in range(32):  # resample same-class partners; a handful of rounds suffices
            same = data.labels[partner] == data.labels[own]
            if not bool(same.any()):
                break
            redraw = (own[same] + torch.randint(1, total, (int(same.sum()),), generator=g)) % total
            partner[same] = redraw
    return own, partner


def build_mixers(names: Sequence[str] | str, *, num_classes: int | None, seed: int, has_images: bool,
                 available_context: Sequence[str],
                 mixer_opts: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[dict[str, Mixer], dict[str, str]]:
    """Create the named mixers for scoring (``"all"`` = every registered one) and say which are skipped.

    A mixer is skipped when it needs pixels and no images are given, or needs a context key (model,
    attention, ...) that the caller cannot supply. Mixers with a ``mode`` option get ``mode="elem"``.
    ``mixer_opts`` maps a mixer name to extra options (e.g. ``{"automix": {"checkpoint": "run/mixer.pt"}}``).
    """
    if isinstance(names, str):
        names = [i.name for i in list_mixers()] if names == "all" else [n.strip() for n in names.split(",") if n.strip()]
    mixers, skipped = {}, {}
    for name in names:
        cls = mixer_class(name)
        missing = [k for k in cls.needs if k not in available_context]
        if missing:
            skipped[cls.name] = f"needs {', '.join(missing)} (pass --model or a data set that provides it)"
            continue
        if cls.relabels_after_forward and "attention" not in available_context:
            skipped[cls.name] = "relabels from the model's attention on the mixed batch (pass --model)"
            continue
        if not cls.content_independent and not has_images and "gaze" not in cls.needs:
            skipped[cls.name] = "needs image pixels (this data set has gaze and sizes only)"
            continue
        options: dict[str, Any] = {"seed": seed}
        if num_classes is not None:
            options["num_classes"] = num_classes
        if "mode" in inspect.signature(cls.__init__).parameters:
            options["mode"] = "elem"
        options.update((mixer_opts or {}).get(cls.name, {}))
        try:
            mixers[cls.name] = create_mixer(cls.name, **options)
        except (TypeError, ValueError) as err:
            skipped[cls.name] = f"could not be built with default options: {err}"
    return mixers, skipped


def _chunk_seed(seed: int, start: int) -> int:
    return seed * 100_003 + start


def _mix_chunk(mixer: Mixer, data: ScoringData, own: Tensor, partner: Tensor, seed: int,
               context_provider: ContextProvider | None, device: torch.device) -> tuple[MixResult, Tensor]:
    """Mix the batch ``own`` + ``partner`` with partners swapped (each pair both ways); returns result and gaze."""
    b = own.shape[0]
    ids = torch.cat([own, partner])
    gaze = data.gaze[ids].to(device)
    if data.images is not None:
        images = data.images[ids].to(device)
    else:  # content-independent mixers only look at the shape: a batch with no channels mixes no pixels
        images = torch.zeros(2 * b, 0, *data.gaze.shape[-2:], device=device)
    if data.labels is not None:
        targets = data.labels[ids].to(device)
    else:  # no labels: every source its own class, so label weights stay separable
        targets = torch.eye(2 * b, device=device)
    index = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(device)
    context: dict[str, Any] = {"index": index, "gaze": gaze}
    if context_provider is not None:
        context.update(context_provider(images, targets))
    result = mixer(images, targets, generator=torch.Generator().manual_seed(seed), **context)
    if mixer.relabels_after_forward and context_provider is not None:
        context.update(context_provider(result.images, targets))
        result = mixer.relabel(result, **context)
    return result, gaze


@dataclass
class Example:
    """One mixed sample to look at: the mixed image (if pixels exist) and its replayed gaze."""

    mixer: str
    own_id: str
    partner_id: str
    lam: float
    lam_gaze: float
    gap: float
    image: Tensor | None
    gaze: Tensor


@dataclass
class ScoreRun:
    """One row per mixed sample, the mixers that could not run (with why), and the worst-gap examples."""

    samples: pd.DataFrame
    skipped: dict[str, str]
    examples: list[Example]


def score_mixers(mixers: Mapping[str, Mixer], data: ScoringData, *, pairs: int = 1000, seed: int = 0,
                 batch_size: int = 64, ghost_max_gaze: float = 0.05, ghost_min_label: float = 0.2,
                 keep_worst: int = 0, context_provider: ContextProvider | None = None,
                 device: torch.device | str = "cpu", progress: bool = True) -> ScoreRun:
    """Replay every mixer on the same ``pairs`` mixed samples and measure the label-gaze gap of each.

    ``ceil(pairs / 2)`` image pairs are drawn once (:func:`draw_pairs`) and each is mixed both ways (A on B
    and B on A), so every mixer sees the same ordered pairs. A mixer that raises
    :class:`~gazemix.contract.MixerInputError` (it needs a model, attention, ...) is dropped and reported
    in ``skipped``. ``keep_worst`` keeps that many largest-gap samples per mixer for a gallery.

    Sample columns: ``mixer, pair, own_id, partner_id, own_class, partner_class, lam, partner_lam,
    lam_label, g_own, g_partner, lam_gaze, defined, gap, disagree, ghost, partner_gaze_shown,
    own_gaze_covered, n_sources, shared_pair``. ``lam_label = lam / (lam + partner_lam)`` equals ``lam``
    whenever the label weights sum to 1 (they need not: SnapMix, TokenMix).
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    first, second = draw_pairs(data, (pairs + 1) // 2, seed)
    frames: list[pd.DataFrame] = []
    failed: dict[str, str] = {}
    worst: dict[str, list[Example]] = {}
    chunks = range(0, first.shape[0], batch_size)
    bar = tqdm(total=len(mixers) * len(chunks), desc="scoring", unit="batch", disable=not progress)
    for name, mixer in mixers.items():
        bar.set_postfix_str(name)
        mixer_frames = []
        mosaics = 0
        for start in chunks:
            a, b = first[start:start + batch_size], second[start:start + batch_size]
            own, partner = torch.cat([a, b]), torch.cat([b, a])
            try:
                result, gaze = _mix_chunk(mixer, data, a, b, _chunk_seed(seed, start), context_provider, device)
            except (MixerInputError, ValueError, RuntimeError) as err:  # it needs what this run cannot give
                failed[name] = f"{type(err).__name__}: {err}"
                mixer_frames = []
                bar.update(len(chunks) - start // batch_size)
                break
            n = own.shape[0]
            k = torch.arange(n // 2)
            positions = 2 * start + torch.cat([2 * k, 2 * k + 1])  # pair k mixed both ways: samples 2k, 2k+1
            if result.images.shape[0] == n:
                chunk = result.select(torch.arange(n))
                frame = _pair_rows(name, chunk, gaze, data, own, partner, positions, ghost_max_gaze, ghost_min_label)
            else:  # a mixer that appends mosaics (SpliceMix): score the appended outputs per source
                chunk = result.select(torch.arange(n, result.images.shape[0]))
                frame = _multi_source_rows(name, chunk, gaze, data, own)
                frame["pair"] += mosaics
                mosaics += len(frame)
            if keep_worst:
                worst[name] = _keep_worst(worst.get(name, []), name, chunk, gaze, frame, data, keep_worst)
            mixer_frames.append(frame)
            bar.update(1)
        frames.extend(mixer_frames)
    bar.close()
    samples = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not samples.empty:
        samples = samples[(samples["pair"] < pairs)].sort_values(["mixer", "pair"], kind="stable")
        samples = samples.reset_index(drop=True)
    examples = [e for name in mixers if name in worst for e in worst[name]]
    return ScoreRun(samples, failed, examples)


def _keep_worst(current: list[Example], name: str, result: MixResult, gaze: Tensor, frame: pd.DataFrame,
                data: ScoringData, k: int) -> list[Example]:
    gaps = torch.tensor(frame["gap"].to_numpy()).nan_to_num(nan=-1.0)
    gaps[gaps < 1e-6] = -1.0  # a sample whose label matches its gaze is not an example of a gap
    top = gaps.topk(min(k, gaps.numel())).indices
    picked = result.select(top)
    maps = picked.source_maps(gaze).sum(dim=1)
    new = [Example(name, frame["own_id"].iloc[i], frame["partner_id"].iloc[i], float(frame["lam_label"].iloc[i]),
                   float(frame["lam_gaze"].iloc[i]), float(gaps[i]),
                   picked.images[j].detach().cpu() if data.images is not None else None, maps[j].detach().cpu())
           for j, i in enumerate(top.tolist()) if gaps[i] >= 0]
    return sorted(current + new, key=lambda e: -e.gap)[:k]


def _pair_rows(name: str, result: MixResult, gaze: Tensor, data: ScoringData, own: Tensor, partner: Tensor,
               positions: Tensor, ghost_max_gaze: float, ghost_min_label: float) -> pd.DataFrame:
    masses = result.replay_sources(gaze).detach().double()
    g_own, g_partner = masses[:, 0], masses[:, 1:].sum(dim=1)
    lam, partner_lam = result.lam.detach().double(), result.partner_lam.detach().double()
    lam_label = lam / (lam + partner_lam).clamp_min(1e-12)
    lam_gaze, defined = gaze_weight(g_own, g_partner)
    shown, covered = pasted_region_shares(g_own, g_partner)
    b = own.shape[0] // 2
    shared = result.index.cpu() == torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    return pd.DataFrame({
        "mixer": name, "pair": positions.numpy(),
        "own_id": [data.ids[i] for i in own.tolist()],
        "partner_id": [data.ids[i] for i in partner.tolist()],
        "own_class": data.labels[own].tolist() if data.labels is not None else -1,
        "partner_class": data.labels[partner].tolist() if data.labels is not None else -1,
        "lam": lam.cpu().numpy(), "partner_lam": partner_lam.cpu().numpy(), "lam_label": lam_label.cpu().numpy(),
        "g_own": g_own.cpu().numpy(), "g_partner": g_partner.cpu().numpy(), "lam_gaze": lam_gaze.cpu().numpy(),
        "defined": defined.cpu().numpy(),
        "gap": label_gaze_gap(lam_label, lam_gaze).cpu().numpy(),
        "disagree": disagreement(lam_label, lam_gaze).cpu().numpy(),
        "ghost": ghost_label(lam, partner_lam, g_own, g_partner, max_gaze=ghost_max_gaze,
                             min_label=ghost_min_label).cpu().numpy(),
        "partner_gaze_shown": shown.cpu().numpy(), "own_gaze_covered": covered.cpu().numpy(),
        "n_sources": result.num_sources, "shared_pair": shared.numpy(),
    })


def _multi_source_rows(name: str, result: MixResult, gaze: Tensor, data: ScoringData, ids: Tensor) -> pd.DataFrame:
    """Rows of appended mosaics: ``own`` is the first tile, ``partner`` the second; gap over all tiles."""
    masses = result.replay_sources(gaze).detach().double()
    weights = torch.stack([s.weight for s in result.sources], dim=1).detach().double()
    gap, defined = source_shares_gap(weights, masses)
    first = result.own_index.cpu()
    second = result.index.cpu()
    lam = weights[:, 0] / weights.sum(1).clamp_min(1e-12)
    lam_gaze = masses[:, 0] / masses.sum(1).clamp_min(1e-12)
    return pd.DataFrame({
        "mixer": name, "pair": np.arange(result.images.shape[0]),
        "own_id": [data.ids[i] for i in ids[first].tolist()],
        "partner_id": [data.ids[i] for i in ids[second].tolist()],
        "own_class": data.labels[ids[first]].tolist() if data.labels is not None else -1,
        "partner_class": data.labels[ids[second]].tolist() if data.labels is not None else -1,
        "lam": lam.cpu().numpy(), "partner_lam": (1 - lam).cpu().numpy(), "lam_label": lam.cpu().numpy(),
        "g_own": masses[:, 0].cpu().numpy(), "g_partner": masses[:, 1:].sum(1).cpu().numpy(),
        "lam_gaze": torch.where(defined, lam_gaze, torch.full_like(lam_gaze, float("nan"))).cpu().numpy(),
        "defined": defined.cpu().numpy(), "gap": gap.cpu().numpy(),
        "disagree": disagreement(lam, lam_gaze).cpu().numpy() & defined.cpu().numpy(),
        "ghost": ((weights > 0) & (masses < 0.05)).any(dim=1).cpu().numpy(),
        "partner_gaze_shown": masses[:, 1:].sum(1).cpu().numpy(), "own_gaze_covered": (1 - masses[:, 0]).cpu().numpy(),
        "n_sources": result.num_sources, "shared_pair": False,
    })


def summarise(samples: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per mixer, sorted by mean gap: the columns of ``scores.csv``.

    ``gap_mean_lo/hi`` and ``gap_median_lo/hi`` are percentile bootstrap 95 % intervals; rates are over
    samples whose ``lam_gaze`` is defined, and ``undefined`` counts the others.
    """
    rows = []
    for name, df in samples.groupby("mixer", sort=False):
        ok = df[df["defined"]]
        gap = ok["gap"].to_numpy()
        lo, hi = bootstrap_interval(gap, "mean", n_boot=n_boot, seed=seed)
        mlo, mhi = bootstrap_interval(gap, "median", n_boot=n_boot, seed=seed)
        rows.append({
            "mixer": name, "n": len(df), "undefined": int((~df["defined"]).sum()),
            "gap_mean": float(np.mean(gap)) if gap.size else float("nan"), "gap_mean_lo": lo, "gap_mean_hi": hi,
            "gap_median": float(np.median(gap)) if gap.size else float("nan"), "gap_median_lo": mlo,
            "gap_median_hi": mhi,
            "gap_p90": float(np.quantile(gap, 0.9)) if gap.size else float("nan"),
            "disagreement_rate": float(ok["disagree"].mean()) if len(ok) else float("nan"),
            "ghost_label_rate": float(ok["ghost"].mean()) if len(ok) else float("nan"),
            "lam_mean": float(df["lam_label"].mean()), "lam_gaze_mean": float(ok["lam_gaze"].mean()) if len(ok) else float("nan"),
            "partner_gaze_shown_mean": float(ok["partner_gaze_shown"].mean()) if len(ok) else float("nan"),
            "own_gaze_covered_mean": float(ok["own_gaze_covered"].mean()) if len(ok) else float("nan"),
            "n_sources": int(df["n_sources"].max()), "shared_pairs": bool(df["shared_pair"].all()),
        })
    return pd.DataFrame(rows).sort_values("gap_mean", na_position="last").reset_index(drop=True)


def mixer_options(mixers: Mapping[str, Mixer]) -> dict[str, str]:
    """Each mixer's options as a JSON string, for provenance columns."""
    return {name: json.dumps({k: (v if isinstance(v, (int, float, str, bool, type(None), list, tuple)) else repr(v))
                              for k, v in m.config().items()}) for name, m in mixers.items()}

