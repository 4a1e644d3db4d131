"""Score mixers against human gaze: for many pairs, how far each mixer's label is from the gaze each source keeps.

Every mixer is run on the **same pairs** (the partner of each sample is fixed by the caller through the
contract's ``index=``), with per-sample parameters where a mixer offers them (``mode="elem"``) so the
samples are independent draws. For each mixed sample the mix is replayed on the two source images' gaze
densities (unit mass each): ``g_own`` is the share of the own image's gaze still visible, ``g_partner`` the
share of the partner's gaze shown, and ``lam_gaze = g_own / (g_own + g_partner)`` is compared with the
mixer's label weight: ``gap = |lam - lam_gaze|``. Multi-source mixers (SpliceMix) are scored per mosaic with
the total-variation gap between normalised label weights and gaze shares
(:func:`gazemix.metrics.consistency.source_shares_gap`).

Estimator design:

* **Held-out observers.** Each image's observers are split into a *guide* half, the only gaze a mixer is ever
  given (``gaze=`` in its call), and an *evaluation* half, the only gaze ``lam_gaze`` is computed from
  (:mod:`gazemix.observers`). A mixer that reads gaze (GazeMix, TdAttenMix with ``gaze_weight``, saliency
  mixers with ``saliency_source="gaze"``) is therefore never graded on the gaze that guided it, and every
  mixer is graded on the same evaluation gaze. Without observer ids the two roles share one set of maps and
  gaze-reading mixers are marked ``circular``.
* **Human ceiling.** For every mixed sample the same mix is also replayed on the guide half:
  ``ceiling = |lam_gaze(guide) - lam_gaze(evaluation)|`` is how far one half of the observers is from the other
  half on exactly that mix. No label can be expected to agree with held-out observers better than other
  observers do, so its mean is the floor a mixer's gap is read against and ``excess_gap = gap - ceiling`` the
  headline. This is the split-half (inter-observer) baseline of saliency benchmarks (Judd, Durand &
  Torralba, MIT-CSAIL-TR-2012-001; Kümmerer, Wallis & Bethge, PNAS 2015). Each half holds about half of the
  observers, so the ceiling describes half-size groups: it is larger than the disagreement between two
  full-size groups would be (an upper estimate of the irreducible gap).
* **Paired differences.** Because every mixer runs on the same samples, ``gap(mixer) - gap(baseline)`` is
  computed per sample and averaged; its 95 % interval comes from a paired cluster bootstrap
  (:func:`~gazemix.metrics.consistency.cluster_bootstrap`) whose unit is the image pair (a pair is mixed both
  ways, so its two samples are not independent). A difference whose interval contains 0 is reported as
  ``within noise``. Means of gap, ceiling and excess gap use the same cluster bootstrap.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gazemix.contract import Mixer, MixerInputError, MixResult
from gazemix.metrics.consistency import (bootstrap_interval, cluster_bootstrap, disagreement, gaze_weight,
                                         ghost_label, label_gaze_gap, pasted_region_shares, source_shares_gap)
from gazemix.registry import create_mixer, list_mixers, mixer_class

__all__ = ["Example", "ModelContext", "ScoreRun", "ScoringData", "build_mixers", "choose_model", "draw_pairs",
           "merge_runs", "mixer_options", "score_mixers", "scored_names", "skip_reason", "summarise"]

ContextProvider = Callable[[Tensor, Tensor], Mapping[str, Any]]


@dataclass
class ModelContext:
    """A model that serves mixers which read one: what kind it is and the context it provides per batch.

    Attributes:
        kind: ``"cnn"`` (feature maps, CAMs, input gradients) or ``"vit"`` (attention, input gradients).
        provide: ``(images, targets) -> {"model": ..., "logits": ..., "attention": ...}`` for one batch.
        keys: the context keys ``provide`` returns.
        description: what the model is, for reports (name, accuracy, checkpoint).
    """

    kind: str
    provide: ContextProvider
    keys: tuple[str, ...] = ("model", "logits")
    description: str = ""


def choose_model(mixer: Mixer, models: Mapping[str, ModelContext]) -> ModelContext | None:
    """The model that serves ``mixer``: its ``model_kind``'s, a CNN before a ViT for ``"any"``; ``None`` if none."""
    kind = mixer.model_kind
    if kind is None:
        return None
    if kind == "any":
        return models.get("cnn") or models.get("vit")
    return models.get(kind)


@dataclass
class ScoringData:
    """What scoring needs: unit-mass gaze maps, and when available labels and images (all registered).

    Attributes:
        gaze: ``(N, 1, H, W)`` evaluation densities, each summing to 1: every gaze weight is computed from these.
        ids: the data set's image ids.
        labels: ``(N,)`` class indices, or ``None``.
        images: ``(N, 3, H, W)`` float in [0, 1], or ``None`` (mixers whose mix reads no pixels only).
        class_names: names of the classes, when known.
        name: the data set's name, for reports.
        meta: anything worth recording (source files, rendering report, synthetic flag).
        guide_gaze: ``(N, 1, H, W)`` densities of *other* observers, the only gaze mixers are given; ``None``
            when the data have no observer ids (mixers then get ``gaze`` itself: circular for gaze readers).
        split: how the observers were split (method, seed, observers per half).
    """

    gaze: Tensor
    ids: list[str]
    labels: Tensor | None = None
    images: Tensor | None = None
    class_names: list[str] | None = None
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    guide_gaze: Tensor | None = None
    split: dict[str, Any] = field(default_factory=lambda: {"method": "none", "reason": "not given"})

    def __post_init__(self) -> None:
        n = self.gaze.shape[0]
        if self.gaze.ndim != 4 or self.gaze.shape[1] != 1:
            raise ValueError(f"gaze must be (N, 1, H, W) maps, got {tuple(self.gaze.shape)}")
        if n < 2:
            raise ValueError(f"scoring needs at least 2 images with gaze, got {n}")
        for name, maps in (("gaze", self.gaze), ("guide_gaze", self.guide_gaze)):
            if maps is not None and not _all_finite(maps):
                raise ValueError(f"{name} maps contain NaN/inf: drop invalid maps (GazeMaps.valid) before scoring")
        if self.guide_gaze is not None and self.guide_gaze.shape != self.gaze.shape:
            raise ValueError(f"guide_gaze {tuple(self.guide_gaze.shape)} must match gaze {tuple(self.gaze.shape)}")
        if len(self.ids) != n:
            raise ValueError(f"{len(self.ids)} ids for {n} gaze maps")
        if self.labels is not None and self.labels.shape != (n,):
            raise ValueError(f"labels must be ({n},), got {tuple(self.labels.shape)}")
        if self.images is not None and (self.images.shape[0] != n or self.images.shape[-2:] != self.gaze.shape[-2:]):
            raise ValueError(f"images {tuple(self.images.shape)} do not match gaze {tuple(self.gaze.shape)}")

    @property
    def held_out(self) -> bool:
        """True when mixers are given other observers' gaze than the one they are scored against."""
        return self.guide_gaze is not None

    @property
    def guide(self) -> Tensor:
        """The gaze mixers are given: the guide half, or the evaluation gaze itself without a split."""
        return self.gaze if self.guide_gaze is None else self.guide_gaze

    @property
    def num_classes(self) -> int | None:
        if self.labels is None:
            return None
        return len(self.class_names) if self.class_names else int(self.labels.max()) + 1


def _all_finite(maps: Tensor) -> bool:
    """True when no map holds a NaN or inf: a NaN or inf anywhere makes its map's sum non-finite, so one read of
    every map decides (float32 sums are many times faster than float64 ones on the CPU); a sum that is
    non-finite only by overflow is checked pixel by pixel."""
    suspect = ~torch.isfinite(maps.sum(dim=(1, 2, 3)))
    return not bool(suspect.any()) or bool(torch.isfinite(maps[suspect]).all())


def draw_pairs(data: ScoringData, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` (own, partner) index pairs, partner always another image — of another class when labels exist.

    Drawn once from ``seed`` and shared by every mixer.
    """
    if n < 1:
        raise ValueError(f"the number of pairs must be at least 1, got {n}")
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


_KIND_TEXT = {"cnn": "a CNN", "vit": "a ViT", "any": "a classifier"}


def skip_reason(mixer: Mixer, *, has_images: bool, models: Mapping[str, ModelContext]) -> str | None:
    """Why ``mixer`` (a built instance) cannot be scored on this data with these models, or ``None`` if it can."""
    model = choose_model(mixer, models)
    if mixer.model_kind is not None and model is None:
        return f"needs {_KIND_TEXT[mixer.model_kind]} model (none was given)"
    available = {"gaze", "index"} | set(model.keys if model is not None else ())
    missing = [k for k in mixer.needs if k not in available]
    if missing:
        return f"needs {', '.join(missing)}, which this run cannot provide"
    if mixer.relabels_after_forward and model is None:
        return "relabels from a model's forward on the mixed batch (no model was given)"
    if not mixer.content_independent and not has_images:
        return "its mix reads image pixels, and this data set has gaze without images"
    return None


def scored_names(names: Sequence[str] | str, *, image_saliency_variants: bool = True) -> list[str]:
    """The rows a ``names`` request scores; ``"all"``: every registered mixer plus its saliency variants.

    A row ``NAME@SOURCE`` is mixer ``NAME`` with ``saliency_source=SOURCE``. ``"all"`` adds, for every
    saliency-guided mixer, its human-gaze variant (``@gaze``: scored on held-out observers like GazeMix) and, with
    ``image_saliency_variants`` (for runs without a model), the bottom-up image-saliency variant
    (``@fine_grained``, OpenCV) of each mixer whose default source reads a model, so that every method has a row.
    """
    if not isinstance(names, str):
        return list(names)
    if names != "all":
        return [n.strip() for n in names.split(",") if n.strip()]
    rows = []
    for info in list_mixers():
        rows.append(info.name)
        sources = getattr(mixer_class(info.name), "saliency_sources", ())
        if "gaze" in sources:
            rows.append(f"{info.name}@gaze")
        if image_saliency_variants and info.model_kind is not None and "fine_grained" in sources:
            rows.append(f"{info.name}@fine_grained")
    return rows


def build_mixers(names: Sequence[str] | str, *, num_classes: int | None, seed: int, has_images: bool,
                 models: Mapping[str, ModelContext] | None = None,
                 mixer_opts: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[dict[str, Mixer], dict[str, str]]:
    """Create the named mixers for scoring (see :func:`scored_names`) and say which are skipped.

    Each mixer is built first (with ``mode="elem"`` where it has a per-sample mode, and its ``mixer_opts``), and
    its capabilities are read from the built instance (:func:`skip_reason`): options can change what a mixer
    needs. ``mixer_opts`` maps a row name (``cutmix``, ``puzzlemix@gaze``) to options (e.g. ``{"automix":
    {"checkpoint": "run/mixer.pt"}}``); an option the mixer rejects raises ``ValueError`` naming the mixer and
    the option.
    """
    rows = scored_names(names)
    if not rows:
        raise ValueError("no mixer named: give 'all' or comma-separated mixer names")
    mixer_opts = mixer_opts or {}
    parsed = []
    for row in rows:
        base, _, source = row.partition("@")
        cls = mixer_class(base)
        parsed.append((f"{cls.name}@{source}" if source else cls.name, cls, source))
    unknown = set(mixer_opts) - {name for name, _, _ in parsed}
    if unknown:
        raise ValueError(f"options were given for mixers that are not scored: {', '.join(sorted(unknown))}")
    mixers, skipped = {}, {}
    for name, cls, source in parsed:
        options: dict[str, Any] = {"seed": seed}
        if num_classes is not None:
            options["num_classes"] = num_classes
        if "elem" in cls.modes:
            options["mode"] = "elem"
        if source:
            options["saliency_source"] = source
        user = dict(mixer_opts.get(name, {}))
        try:
            mixer = create_mixer(cls.name, **{**options, **user})
        except (TypeError, ValueError) as err:
            given = ", ".join(f"{k}={v!r}" for k, v in (({"saliency_source": source} if source else {}) | user).items())
            raise ValueError(f"{name} cannot be built with {given or 'no options'}: {err}") from None
        reason = skip_reason(mixer, has_images=has_images, models=models or {})
        if reason is None:
            mixers[name] = mixer
        else:
            skipped[name] = reason
    return mixers, skipped


def _chunk_seed(seed: int, start: int) -> int:
    return seed * 100_003 + start


class _Chunk:
    """One chunk of pairs, gathered once and shared by every mixer: ``own + partner`` mixed both ways.

    The evaluation and the guide maps are also kept side by side as the channels of one batch, so a mix is
    replayed on both in one pass. Model contexts (one clean-batch forward per model) are made on first use and
    then reused by every mixer of the chunk.
    """

    def __init__(self, data: ScoringData, a: Tensor, b: Tensor, device: torch.device) -> None:
        n = a.shape[0]
        self.own, self.partner = torch.cat([a, b]), torch.cat([b, a])
        self.gaze = data.gaze[self.own].to(device)
        self.guide = self.gaze if data.guide_gaze is None else data.guide_gaze[self.own].to(device)
        self.maps = self.gaze if data.guide_gaze is None else torch.cat([self.gaze, self.guide], dim=1)
        self.totals = self.maps.sum(dim=(2, 3))
        if data.images is not None:
            self.images = data.images[self.own].to(device)
        else:  # mixers that read no pixels only look at the shape: a batch with no channels mixes no pixels
            self.images = torch.zeros(2 * n, 0, *data.gaze.shape[-2:], device=device)
        if data.labels is not None:
            self.targets = data.labels[self.own].to(device)
        else:  # no labels: every source its own class, so label weights stay separable
            self.targets = torch.eye(2 * n, device=device)
        self.index = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(device)
        self._contexts: dict[int, Mapping[str, Any]] = {}

    def model_context(self, model: ModelContext) -> Mapping[str, Any]:
        if id(model) not in self._contexts:
            self._contexts[id(model)] = model.provide(self.images, self.targets)
        return self._contexts[id(model)]

    def replay(self, result: MixResult) -> tuple[Tensor, Tensor | None]:
        """Masses ``(B', S)`` of every source on the evaluation maps and on the guide maps (``None`` without a
        split), float64."""
        masses = result.replay_masses(self.maps, self.totals).detach().double()
        return masses[..., 0], masses[..., 1] if masses.shape[-1] > 1 else None


def _mix(mixer: Mixer, chunk: _Chunk, seed: int, model: ModelContext | None) -> MixResult:
    """Mix the chunk's batch with its fixed partners, guided by the guide gaze (and the model's context)."""
    context: dict[str, Any] = {"index": chunk.index, "gaze": chunk.guide}
    if model is not None:
        context.update(chunk.model_context(model))
    result = mixer(chunk.images, chunk.targets, generator=torch.Generator().manual_seed(seed), **context)
    if mixer.relabels_after_forward and model is not None:
        context.update(model.provide(result.images, chunk.targets))
        result = mixer.relabel(result, **context)
    return result


@dataclass
class Example:
    """One mixed sample to look at: the mixed image (if pixels exist) and the replayed gaze of each side."""

    mixer: str
    own_id: str
    partner_id: str
    lam: float
    lam_gaze: float
    gap: float
    image: Tensor | None
    own_gaze: Tensor
    partner_gaze: Tensor


@dataclass
class ScoreRun:
    """One row per mixed sample, the mixers that could not run, and the worst-gap examples.

    Attributes:
        samples: one row per mixed sample (see :func:`score_mixers`).
        skipped: mixers that cannot run on this data (a missing model, no pixels, ...), with the reason.
        errors: mixers that failed with an unexpected exception (a bug, never a skip), with the traceback.
        examples: the largest-gap samples of each mixer.
        seconds: wall time each mixer took.
        circular: mixers that read gaze while no held-out observers exist (graded on their own guide).
    """

    samples: pd.DataFrame
    skipped: dict[str, str]
    examples: list[Example]
    errors: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    circular: list[str] = field(default_factory=list)


def score_mixers(mixers: Mapping[str, Mixer], data: ScoringData, *, pairs: int = 1000, seed: int = 0,
                 batch_size: int = 64, ghost_max_gaze: float = 0.05, ghost_min_label: float = 0.2,
                 keep_worst: int = 0, models: Mapping[str, ModelContext] | None = None,
                 device: torch.device | str = "cpu", progress: bool = True,
                 shard: tuple[int, int] = (0, 1)) -> ScoreRun:
    """Replay every mixer on the same ``pairs`` mixed samples and measure the label-gaze gap of each.

    ``ceil(pairs / 2)`` image pairs are drawn once (:func:`draw_pairs`) and each is mixed both ways (A on B
    and B on A), so every mixer sees the same ordered pairs. Mixers are given the guide gaze and scored on
    the evaluation gaze (see the module docstring). A mixer that raises
    :class:`~gazemix.contract.MixerInputError` (it needs what this run cannot give) is reported in ``skipped``;
    any other exception is a failure, reported in ``errors`` with its traceback. ``keep_worst`` keeps that
    many largest-gap samples per mixer for a gallery. ``models`` serve the mixers that read a model
    (:func:`choose_model`). ``shard=(rank, world)`` scores every ``world``-th chunk of pairs starting at
    ``rank``; :func:`merge_runs` of all shards equals the unsharded run (every chunk is seeded by its position).

    Sample columns: ``mixer, pair, own_id, partner_id, own_class, partner_class, lam, partner_lam,
    lam_label, g_own, g_partner, lam_gaze, defined, gap, lam_gaze_guide, ceiling, disagree, ghost,
    partner_gaze_shown, own_gaze_covered, n_sources, shared_pair``. ``lam_label = lam / (lam + partner_lam)``
    equals ``lam`` whenever the label weights sum to 1 (they need not: SnapMix, TokenMix). ``ceiling`` is NaN
    without held-out observers.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    models = models or {}
    first, second = draw_pairs(data, (pairs + 1) // 2, seed)
    chosen = {name: choose_model(mixer, models) for name, mixer in mixers.items()}
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in mixers}
    seconds = dict.fromkeys(mixers, 0.0)
    skipped: dict[str, str] = {}
    errors: dict[str, str] = {}
    worst: dict[str, list[Example]] = {}
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
    chunks = range(rank * batch_size, first.shape[0], world * batch_size)
    bar = tqdm(total=len(mixers) * len(chunks), desc="scoring", unit="batch", disable=not progress)
    for start in chunks:
        chunk = _Chunk(data, first[start:start + batch_size], second[start:start + batch_size], device)
        n = chunk.own.shape[0]
        k = torch.arange(n // 2)
        positions = 2 * start + torch.cat([2 * k, 2 * k + 1])  # pair k mixed both ways: samples 2k, 2k+1
        for name, mixer in mixers.items():
            bar.update(1)
            if name in skipped or name in errors:
                continue
            bar.set_postfix_str(name)
            t0 = time.perf_counter()
            try:
                result = _mix(mixer, chunk, _chunk_seed(seed, start), chosen[name])
            except MixerInputError as err:  # it needs what this run cannot give
                skipped[name] = str(err)
                continue
            except Exception as err:  # noqa: BLE001 - a failing mixer is reported, the others still run
                errors[name] = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-4)}"
                continue
            if result.images.shape[0] == n:
                result = result.select(torch.arange(n))
                frame = _pair_rows(name, result, chunk, data, positions, ghost_max_gaze, ghost_min_label)
            else:  # a mixer that appends mosaics (SpliceMix): score the appended outputs per source
                result = result.select(torch.arange(n, result.images.shape[0]))
                frame = _multi_source_rows(name, result, chunk, data)
                frame["pair"] += 2 * start  # numbered by the chunk's position, as pair samples are
            if keep_worst:
                worst[name] = _keep_worst(worst.get(name, []), name, result, chunk.gaze, frame, data, keep_worst)
            frames[name].append(frame)
            seconds[name] += time.perf_counter() - t0
    bar.close()
    done = [name for name in mixers if name not in skipped and name not in errors]
    kept = [f for name in done for f in frames[name]]
    samples = _order(pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(), pairs)
    examples = [e for name in done if name in worst for e in worst[name]]
    circular = [name for name in done if mixers[name].reads_gaze and not data.held_out]
    return ScoreRun(samples, skipped, examples, errors, {name: seconds[name] for name in done}, circular)


def _order(samples: pd.DataFrame, pairs: int) -> pd.DataFrame:
    if samples.empty:
        return samples
    samples = samples[(samples["pair"] < pairs)].sort_values(["mixer", "pair"], kind="stable")
    return samples.reset_index(drop=True)


def merge_runs(runs: Sequence[ScoreRun], *, pairs: int, keep_worst: int = 0) -> ScoreRun:
    """One run from the shards of :func:`score_mixers` (``shard=``): the rows of every shard, in one order.

    A mixer skipped or failed on any shard is skipped or failed in the merged run (its rows are dropped);
    ``seconds`` are the largest shard's (the wall time of a parallel run).
    """
    skipped = {k: v for run in runs for k, v in run.skipped.items()}
    errors = {k: v for run in runs for k, v in run.errors.items()}
    frames = [run.samples for run in runs if not run.samples.empty]
    samples = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not samples.empty:
        samples = samples[~samples["mixer"].isin(set(skipped) | set(errors))]
    names = list(dict.fromkeys(k for run in runs for k in run.seconds if k not in skipped and k not in errors))
    seconds = {k: max(run.seconds.get(k, 0.0) for run in runs) for k in names}
    examples = []
    for name in names:
        mine = sorted((e for run in runs for e in run.examples if e.mixer == name), key=lambda e: -e.gap)
        examples += mine[:keep_worst]
    circular = [k for k in names if any(k in run.circular for run in runs)]
    return ScoreRun(_order(samples, pairs), skipped, examples, errors, seconds, circular)


def _keep_worst(current: list[Example], name: str, result: MixResult, gaze: Tensor, frame: pd.DataFrame,
                data: ScoringData, k: int) -> list[Example]:
    gaps = torch.tensor(frame["gap"].to_numpy()).nan_to_num(nan=-1.0)
    gaps[gaps < 1e-6] = -1.0  # a sample whose label matches its gaze is not an example of a gap
    top = gaps.topk(min(k, gaps.numel())).indices
    picked = result.select(top)
    maps = picked.source_maps(gaze)
    new = [Example(name, frame["own_id"].iloc[i], frame["partner_id"].iloc[i], float(frame["lam_label"].iloc[i]),
                   float(frame["lam_gaze"].iloc[i]), float(gaps[i]),
                   picked.images[j].detach().cpu() if data.images is not None else None,
                   maps[j, 0].detach().cpu(), maps[j, 1:].sum(dim=0).detach().cpu())
           for j, i in enumerate(top.tolist()) if gaps[i] >= 0]
    return sorted(current + new, key=lambda e: -e.gap)[:k]


def _pair_rows(name: str, result: MixResult, chunk: _Chunk, data: ScoringData, positions: Tensor,
               ghost_max_gaze: float, ghost_min_label: float) -> pd.DataFrame:
    own, partner = chunk.own, chunk.partner
    masses, guide = chunk.replay(result)
    g_own, g_partner = masses[:, 0], masses[:, 1:].sum(dim=1)
    lam, partner_lam = result.lam.detach().double(), result.partner_lam.detach().double()
    lam_label = lam / (lam + partner_lam).clamp_min(1e-12)
    lam_gaze, defined = gaze_weight(g_own, g_partner)
    if guide is not None:
        lam_guide, _ = gaze_weight(guide[:, 0], guide[:, 1:].sum(dim=1))
        ceiling = label_gaze_gap(lam_guide, lam_gaze)
    else:
        lam_guide = ceiling = torch.full_like(lam_gaze, float("nan"))
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
        "lam_gaze_guide": lam_guide.cpu().numpy(), "ceiling": ceiling.cpu().numpy(),
        "disagree": disagreement(lam_label, lam_gaze).cpu().numpy(),
        "ghost": ghost_label(lam, partner_lam, g_own, g_partner, max_gaze=ghost_max_gaze,
                             min_label=ghost_min_label).cpu().numpy(),
        "partner_gaze_shown": shown.cpu().numpy(), "own_gaze_covered": covered.cpu().numpy(),
        "n_sources": result.num_sources, "shared_pair": shared.numpy(),
    })


def _multi_source_rows(name: str, result: MixResult, chunk: _Chunk, data: ScoringData) -> pd.DataFrame:
    """Rows of appended mosaics: ``own`` is the first tile, ``partner`` the second; gap over all tiles."""
    ids = chunk.own
    masses, guide = chunk.replay(result)
    weights = torch.stack([s.weight for s in result.sources], dim=1).detach().double()
    gap, defined = source_shares_gap(weights, masses)
    if guide is not None:
        ceiling, _ = source_shares_gap(guide, masses)
    else:
        ceiling = torch.full_like(gap, float("nan"))
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
        "lam_gaze_guide": np.nan, "ceiling": ceiling.cpu().numpy(),
        "disagree": disagreement(lam, lam_gaze).cpu().numpy() & defined.cpu().numpy(),
        "ghost": ((weights > 0) & (masses < 0.05)).any(dim=1).cpu().numpy(),
        "partner_gaze_shown": masses[:, 1:].sum(1).cpu().numpy(), "own_gaze_covered": (1 - masses[:, 0]).cpu().numpy(),
        "n_sources": result.num_sources, "shared_pair": False,
    })


def _verdict(lo: float, hi: float) -> str:
    if np.isnan(lo) or np.isnan(hi):
        return "not paired"
    if hi < 0:
        return "better"
    if lo > 0:
        return "worse"
    return "within noise"


def _mean_row(prefix: str, values: np.ndarray, clusters: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    mean, lo, hi = cluster_bootstrap(values, clusters, n_boot=n_boot, seed=seed)
    return {prefix: mean, f"{prefix}_lo": lo, f"{prefix}_hi": hi}


def summarise(samples: pd.DataFrame, *, baseline: str | None = "cutmix", circular: Sequence[str] = (),
              n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per mixer, sorted by mean gap: the columns of ``scores.csv``.

    ``gap_mean``, ``ceiling_mean`` and ``excess_gap`` (``gap - ceiling`` per sample, then averaged) carry
    ``_lo``/``_hi`` 95 % intervals from a cluster bootstrap over image pairs; ``gap_median_lo/hi`` is a
    sample-level percentile bootstrap. ``diff_vs_baseline`` is the mean per-sample ``gap(mixer) -
    gap(baseline)`` over the samples both scored with a defined gaze weight (``n_paired``), with a paired
    cluster-bootstrap interval and a ``verdict``: ``better`` / ``worse`` when the interval excludes 0,
    ``within noise`` when it does not, ``not paired`` for mixers that do not run on the shared pairs
    (SpliceMix's mosaics) or when no baseline was scored. Rates are over samples whose ``lam_gaze`` is
    defined, and ``undefined`` counts the others. ``circular`` names mixers graded on the gaze that guided them.
    """
    base = None
    if baseline is not None and baseline in set(samples["mixer"]):
        b = samples[(samples["mixer"] == baseline) & samples["defined"] & samples["shared_pair"]]
        base = b.set_index("pair")["gap"]
    rows = []
    for name, df in samples.groupby("mixer", sort=False):
        ok = df[df["defined"]]
        gap = ok["gap"].to_numpy()
        clusters = ok["pair"].to_numpy() // 2 if bool(df["shared_pair"].all()) else ok["pair"].to_numpy()
        mlo, mhi = bootstrap_interval(gap, "median", n_boot=n_boot, seed=seed)
        row = {"mixer": name, "n": len(df), "undefined": int((~df["defined"]).sum()), "circular": name in circular}
        row.update(_mean_row("gap_mean", gap, clusters, n_boot, seed))
        row.update({"gap_median": float(np.median(gap)) if gap.size else float("nan"), "gap_median_lo": mlo,
                    "gap_median_hi": mhi, "gap_p90": float(np.quantile(gap, 0.9)) if gap.size else float("nan")})
        ceiling = ok["ceiling"].to_numpy(dtype=np.float64)
        row.update(_mean_row("ceiling_mean", ceiling, clusters, n_boot, seed))
        row.update(_mean_row("excess_gap", gap - ceiling, clusters, n_boot, seed))
        paired = ok[ok["shared_pair"]].set_index("pair")["gap"] if base is not None else pd.Series(dtype=float)
        common = paired.index.intersection(base.index) if base is not None else paired.index[:0]
        if len(common) and name != baseline:
            diff = (paired.loc[common] - base.loc[common]).to_numpy()
            d = _mean_row("diff_vs_baseline", diff, np.asarray(common) // 2, n_boot, seed)
            verdict = _verdict(d["diff_vs_baseline_lo"], d["diff_vs_baseline_hi"])
        else:
            d = {"diff_vs_baseline": 0.0 if name == baseline else float("nan"),
                 "diff_vs_baseline_lo": float("nan"), "diff_vs_baseline_hi": float("nan")}
            verdict = "baseline" if name == baseline else "not paired"
        row.update(d)
        row.update({"verdict": verdict, "n_paired": int(len(common)) if name != baseline else int(len(ok)),
                    "disagreement_rate": float(ok["disagree"].mean()) if len(ok) else float("nan"),
                    "ghost_label_rate": float(ok["ghost"].mean()) if len(ok) else float("nan"),
                    "lam_mean": float(df["lam_label"].mean()),
                    "lam_gaze_mean": float(ok["lam_gaze"].mean()) if len(ok) else float("nan"),
                    "partner_gaze_shown_mean": float(ok["partner_gaze_shown"].mean()) if len(ok) else float("nan"),
                    "own_gaze_covered_mean": float(ok["own_gaze_covered"].mean()) if len(ok) else float("nan"),
                    "n_sources": int(df["n_sources"].max()), "shared_pairs": bool(df["shared_pair"].all())})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("gap_mean", na_position="last").reset_index(drop=True)


def mixer_options(mixers: Mapping[str, Mixer]) -> dict[str, str]:
    """Each mixer's options as a JSON string, for provenance columns."""
    return {name: json.dumps({k: (v if isinstance(v, (int, float, str, bool, type(None), list, tuple)) else repr(v))
                              for k, v in m.config().items()}) for name, m in mixers.items()}
