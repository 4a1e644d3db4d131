"""Can a cheap proxy (mouse tracking) stand in for eye tracking? Measured per image and per mixer ranking.

Input: :class:`PairedGaze`, the eye fixations and the proxy's points (e.g. OSIE's lab mouse tracking) on the
same images, each point with its observer. Everything is rendered with :func:`gazemix.gaze.render_gaze_maps`
at one size and blur, and compared with :mod:`gazemix.metrics.saliency` (prediction first, human reference
second) and :mod:`gazemix.scoring`.

**Per image** (:func:`measure_images`). Predictions are gaze maps, references the eye data:

- ``proxy``: the proxy map of *all* proxy observers against *all* eye observers (NSS and AUC against the
  eye fixation counts, CC against the eye map). ``proxy_shuffled``: the same with the proxy map of another
  image (a seeded cyclic shift of the images): what the centre bias alone gives.
- Split-half, repeated for ``splits`` seeded splits and averaged per image: the eye observers are split at
  random into half A (``n // 2``) and half B (the rest). ``eye_half``: A's map against B's fixations and
  map, the eye data's own agreement with itself (held-out observers; with half the observers it is a
  lower bound on the agreement of the full set). ``proxy_matched``: the map of ``|A|`` proxy observers drawn
  at random (all of them if there are fewer), against the **same** half B: the proxy at a matched observer
  count, so ``proxy_matched - eye_half`` is a paired, like-for-like difference per image. ``eye_half_shuffled``:
  another image's half-A map against this image's half B (the centre-bias reference for both).

NSS is :func:`~gazemix.metrics.saliency.nss`, AUC the exact all-pixel ROC area
:func:`~gazemix.metrics.saliency.auc_uniform` (pysaliency's / the Tübingen "AUC"), CC
:func:`~gazemix.metrics.saliency.cc` against the reference half's map. Fixation counts are taken at the render
size (:func:`gazemix.gaze.count_maps`). ``normalised`` in :func:`summarise_images` is
``(mean proxy_matched - mean eye_half_shuffled) / (mean eye_half - mean eye_half_shuffled)``: 0 = no better than
another image's eye map, 1 = as good as the other half of the eye observers.

**Per mixer** (:func:`measure_mixers`). Every mixer is scored with :func:`gazemix.scoring.score_mixers` on
the same seeded pairs once per gaze variant: ``eye`` and ``proxy`` (all observers), and, for the split-half
reference, ``eye_a``, ``eye_b`` and ``proxy_matched`` of the first split. A mixer that does not look at gaze
makes the same mixes under every variant (same seed, same pairs; checked: its label weights must agree);
a mixer that chooses its mix from gaze (``"gaze"`` in its ``needs``) mixes differently under each, so it is
reported but kept out of the rank correlations. A mixer whose gaze weight ``lam_gaze`` is the same under all
variants on every sample (a pixel blend such as Mixup: every source keeps the share of every map it is blended
with) is *gaze-insensitive*: its gap carries no information about the gaze, so rankings are reported over the
gaze-sensitive mixers (``set="sensitive"``) and over all that share mixes (``set="all"``).

Mixers are ordered by mean gap (equal to 6 decimals = tied, average ranks); Spearman's rho and Kendall's tau-b
(:mod:`scipy.stats`) compare the orders under two variants. The ``all`` set includes the gaze-insensitive
mixers, which agree under any two variants by construction, so ``sensitive`` is the informative one.

Intervals for the per-mixer differences and the rank correlations are percentile bootstrap 95 % intervals from
an **image-cluster bootstrap**: images are resampled with replacement and each mixed sample is weighted by how
often its own image was drawn, so the samples of one image move together (the partner image is not resampled
separately). The per-variant gap columns come from :func:`gazemix.scoring.summarise` (its
sample bootstrap).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from data_adapters.base import Fixations, GazeSample
from data_adapters.osie import distinct_points
from gazemix.contract import Mixer
from gazemix.gaze import count_maps, render_gaze_maps
from gazemix.metrics.consistency import bootstrap_interval
from gazemix.metrics.saliency import auc_uniform, cc, nss
from gazemix.scoring import ScoringData, score_mixers, summarise

__all__ = ["IMAGE_PREDICTORS", "METRICS", "VARIANTS", "ImageAgreement", "MixerAgreement", "PairedGaze",
           "measure_images", "measure_mixers", "pair_samples", "plot_proxy", "summarise_images"]

METRICS = ("nss", "cc", "auc")
IMAGE_PREDICTORS = ("proxy", "proxy_shuffled", "eye_half", "proxy_matched", "eye_half_shuffled")
VARIANTS = ("eye", "proxy", "eye_a", "eye_b", "proxy_matched")
_COMPARISONS = (("eye", "proxy"), ("eye_a", "eye_b"), ("proxy_matched", "eye_b"))
_TIE_DECIMALS = 6  # mean gaps equal to 6 decimals are ties (float noise must not order gaze-insensitive mixers)


def _select(fix: Fixations, observers: np.ndarray) -> Fixations:
    keep = np.isin(fix.observer, observers)
    return Fixations(fix.x[keep], fix.y[keep], fix.duration_ms[keep], fix.observer[keep])


@dataclass
class PairedGaze:
    """Eye fixations and proxy points (mouse tracking, clicks) on the same images, observer-resolved.

    Attributes:
        ids: image ids. sizes: ``(height, width)`` of each original image.
        eye, proxy: one :class:`~data_adapters.base.Fixations` per image, original-image pixels, with observers.
        image_paths: image files (needed only for mixers that look at pixels), or ``None``.
        distinct_proxy: render each distinct proxy pixel of a set of observers once (OSIE's mouse maps mark
            every sampled pixel once); otherwise every proxy point counts.
        name: the data set, for reports.
    """

    ids: list[str]
    sizes: list[tuple[int, int]]
    eye: list[Fixations]
    proxy: list[Fixations]
    image_paths: list[str] | None = None
    distinct_proxy: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        n = len(self.ids)
        if not (len(self.sizes) == len(self.eye) == len(self.proxy) == n):
            raise ValueError(f"ids, sizes, eye and proxy must have one entry per image, got {n}, {len(self.sizes)}, "
                             f"{len(self.eye)}, {len(self.proxy)}")
        if self.image_paths is not None and len(self.image_paths) != n:
            raise ValueError(f"image_paths has {len(self.image_paths)} entries for {n} images")
        if n < 2:
            raise ValueError(f"the proxy comparison needs at least 2 images with eye and proxy gaze, got {n}")
        for k, (e, p) in enumerate(zip(self.eye, self.proxy)):
            if np.unique(e.observer).size < 2:
                raise ValueError(f"image {self.ids[k]} has {np.unique(e.observer).size} eye observer(s): a split-half "
                                 f"needs at least 2")
            if len(p) == 0:
                raise ValueError(f"image {self.ids[k]} has no proxy points")

    def __len__(self) -> int:
        return len(self.ids)


def pair_samples(eye: Iterable[GazeSample], proxy: Iterable[GazeSample], *, name: str = "",
                 distinct_proxy: bool = True) -> tuple[PairedGaze, str]:
    """Match two adapters' samples by ``image_id``; returns the pairs and a line saying what was dropped.

    An image is kept when both sources have it, the sizes agree, it has at least 2 eye observers (for the
    split-half) and at least one proxy point.
    """
    eye_by_id = {s.image_id: s for s in eye if s.fixations is not None}
    proxy_by_id = {s.image_id: s for s in proxy if s.fixations is not None}
    ids, sizes, e_fix, p_fix, paths = [], [], [], [], []
    dropped = {"no proxy": 0, "no eye": 0, "size mismatch": 0, "< 2 eye observers or no proxy point": 0}
    for image_id, es in eye_by_id.items():
        ps = proxy_by_id.get(image_id)
        if ps is None:
            dropped["no proxy"] += 1
            continue
        if tuple(es.size) != tuple(ps.size):
            dropped["size mismatch"] += 1
            continue
        if np.unique(es.fixations.observer).size < 2 or len(ps.fixations) == 0:
            dropped["< 2 eye observers or no proxy point"] += 1
            continue
        ids.append(image_id)
        sizes.append(tuple(es.size))
        e_fix.append(es.fixations)
        p_fix.append(ps.fixations)
        paths.append(es.image_path or ps.image_path)
    dropped["no eye"] = sum(1 for k in proxy_by_id if k not in eye_by_id)
    image_paths = paths if all(p and Path(p).is_file() for p in paths) else None
    note = f"{len(ids)} images with both; dropped: " + ", ".join(f"{v} {k}" for k, v in dropped.items())
    return PairedGaze(ids, sizes, e_fix, p_fix, image_paths, distinct_proxy, name), note


# ------------------------------------------------------------------------------------------- per image
@dataclass
class _Split:
    half_a: list[np.ndarray]
    half_b: list[np.ndarray]
    matched: list[np.ndarray]


def _draw_split(data: PairedGaze, rng: np.random.Generator) -> _Split:
    half_a, half_b, matched = [], [], []
    for e, p in zip(data.eye, data.proxy):
        obs = rng.permutation(np.unique(e.observer))
        k = len(obs) // 2
        half_a.append(np.sort(obs[:k]))
        half_b.append(np.sort(obs[k:]))
        pobs = np.unique(p.observer)
        matched.append(np.sort(rng.choice(pobs, size=min(k, len(pobs)), replace=False)))
    return _Split(half_a, half_b, matched)


def _shift(n: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded cyclic shift of ``n`` images: image ``i`` gets the map of image ``(i + s) % n``, never itself."""
    return (np.arange(n) + int(rng.integers(1, n))) % n


@dataclass
class ImageAgreement:
    """Per-image agreement (one row per image) and the maps the mixer comparison reuses.

    Attributes:
        table: columns ``image_id``, observer and point counts, and ``<predictor>_<metric>`` for every
            predictor of :data:`IMAGE_PREDICTORS` and metric of :data:`METRICS`.
        maps: ``(N, 1, H, W)`` densities for every variant of :data:`VARIANTS` (the halves from split 0).
    """

    table: pd.DataFrame
    maps: dict[str, Tensor]


def measure_images(data: PairedGaze, *, size: int = 224, sigma_px: float | None = 24.0, splits: int = 1,
                   seed: int = 0, chunk: int = 64, progress: bool = True) -> ImageAgreement:
    """Per image: the proxy map against the eye data, beside the eye data's split-half agreement.

    See the module docstring for the estimators. ``sigma_px`` is the blur in original-image pixels (OSIE's
    release blurs with 24 px; ``None`` = gazemix's default, 5 % of the long side). Maps are rendered
    ``chunk`` images at a time to bound memory. Deterministic for a given ``seed``.
    """
    from tqdm.auto import tqdm

    if splits < 1:
        raise ValueError(f"splits must be at least 1, got {splits}")
    n = len(data)
    hw = (size, size)
    rng = np.random.default_rng(seed)
    drawn = [_draw_split(data, rng) for _ in range(splits)]
    shifts = [_shift(n, rng) for _ in range(splits + 1)]
    bar = tqdm(total=n * (1 + splits), desc="per-image agreement", unit="img", disable=not progress)

    def proxy_fix(k: int, observers: np.ndarray | None = None) -> Fixations:
        fix = data.proxy[k] if observers is None else _select(data.proxy[k], observers)
        return distinct_points(fix) if data.distinct_proxy else fix

    def render(fixations: Callable[[int], Fixations], advance: bool = False) -> Tensor:
        out = torch.empty((n, 1) + hw)
        for start in range(0, n, chunk):
            idx = range(start, min(start + chunk, n))
            out[start:start + chunk] = render_gaze_maps([fixations(i) for i in idx], [data.sizes[i] for i in idx],
                                                        hw, sigma_px=sigma_px, on_empty="error").maps
            if advance:
                bar.update(len(idx))
        return out

    def score(into: str, pred: Tensor, ref_map: Tensor, ref_counts: Tensor, weight: float = 1.0) -> None:
        for start in range(0, n, chunk):  # the metrics work in float64: a chunk at a time bounds memory
            p, r, c = pred[start:start + chunk, 0], ref_map[start:start + chunk, 0], ref_counts[start:start + chunk]
            for m, v in (("nss", nss(p, c)), ("cc", cc(p, r)), ("auc", auc_uniform(p, c))):
                values[f"{into}_{m}"][start:start + chunk] += weight * v.numpy()

    values = {f"{p}_{m}": np.zeros(n) for p in IMAGE_PREDICTORS for m in METRICS}
    maps = {"eye": render(lambda i: data.eye[i]), "proxy": render(proxy_fix, advance=True)}
    eye_counts = count_maps(data.eye, data.sizes, hw)
    score("proxy", maps["proxy"], maps["eye"], eye_counts)
    score("proxy_shuffled", maps["proxy"][shifts[-1]], maps["eye"], eye_counts)
    for s, split in enumerate(drawn):
        half_a = render(lambda i: _select(data.eye[i], split.half_a[i]))
        half_b_fix = [_select(data.eye[i], split.half_b[i]) for i in range(n)]
        half_b = render(lambda i: half_b_fix[i])
        matched = render(lambda i: proxy_fix(i, split.matched[i]), advance=True)
        b_counts = count_maps(half_b_fix, data.sizes, hw)
        score("eye_half", half_a, half_b, b_counts, 1.0 / splits)
        score("proxy_matched", matched, half_b, b_counts, 1.0 / splits)
        score("eye_half_shuffled", half_a[shifts[s]], half_b, b_counts, 1.0 / splits)
        if s == 0:
            maps.update(eye_a=half_a, eye_b=half_b, proxy_matched=matched)
    bar.close()
    table = pd.DataFrame({
        "image_id": data.ids,
        "n_eye_observers": [np.unique(e.observer).size for e in data.eye],
        "n_proxy_observers": [np.unique(p.observer).size for p in data.proxy],
        "n_eye_fixations": [len(e) for e in data.eye],
        "n_proxy_points": [len(proxy_fix(k)) for k in range(n)],
        "n_half_a": [len(a) for a in drawn[0].half_a], "n_half_b": [len(b) for b in drawn[0].half_b],
        "n_proxy_matched": [len(p) for p in drawn[0].matched],
        **values,
    })
    return ImageAgreement(table, maps)


def summarise_images(table: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (predictor, metric): median and mean over images with bootstrap 95 % intervals.

    Extra rows ``proxy_matched - eye_half`` (the paired per-image difference; ``share_ge`` = share of images
    where the proxy is at least as good) and ``normalised`` (see the module docstring; its interval from an
    image bootstrap of the three means).
    """
    rows = []
    for metric in METRICS:
        for pred in IMAGE_PREDICTORS:
            v = table[f"{pred}_{metric}"].to_numpy(dtype=float)
            rows.append(_describe(pred, metric, v, n_boot, seed))
        diff = (table[f"proxy_matched_{metric}"] - table[f"eye_half_{metric}"]).to_numpy(dtype=float)
        row = _describe("proxy_matched - eye_half", metric, diff, n_boot, seed)
        row["share_ge"] = float(np.mean(diff[~np.isnan(diff)] >= 0))
        rows.append(row)
        cols = [table[f"{p}_{metric}"].to_numpy(dtype=float) for p in ("proxy_matched", "eye_half_shuffled", "eye_half")]
        ok = ~np.isnan(np.stack(cols)).any(axis=0)
        pm, sh, eh = (c[ok] for c in cols)
        ratio = lambda i: (pm[i].mean() - sh[i].mean()) / (eh[i].mean() - sh[i].mean())
        rng = np.random.default_rng(seed)
        boots = np.array([ratio(rng.integers(0, ok.sum(), ok.sum())) for _ in range(n_boot)])
        lo, hi = np.nanquantile(boots, [0.025, 0.975]) if ok.any() else (np.nan, np.nan)
        est = float(ratio(np.arange(ok.sum()))) if ok.any() else float("nan")
        rows.append({"predictor": "normalised", "metric": metric, "n": int(ok.sum()), "median": np.nan,
                     "median_lo": np.nan, "median_hi": np.nan, "mean": est, "mean_lo": float(lo), "mean_hi": float(hi)})
    return pd.DataFrame(rows)


def _describe(pred: str, metric: str, v: np.ndarray, n_boot: int, seed: int) -> dict:
    ok = v[~np.isnan(v)]
    mlo, mhi = bootstrap_interval(ok, "median", n_boot=n_boot, seed=seed)
    lo, hi = bootstrap_interval(ok, "mean", n_boot=n_boot, seed=seed)
    return {"predictor": pred, "metric": metric, "n": int(ok.size),
            "median": float(np.median(ok)) if ok.size else np.nan, "median_lo": mlo, "median_hi": mhi,
            "mean": float(np.mean(ok)) if ok.size else np.nan, "mean_lo": lo, "mean_hi": hi}


# ------------------------------------------------------------------------------------------- per mixer
@dataclass
class MixerAgreement:
    """The mixer comparison.

    Attributes:
        samples: one row per (mixer, pair) with ``lam_label``, ``own_id`` and, per variant ``v``,
            ``lam_gaze_<v>`` and ``gap_<v>``.
        per_mixer: one row per mixer: gaze-driven / shared-mixes / gaze-sensitive flags, the per-variant gap
            from :func:`~gazemix.scoring.summarise` (``gap_mean_<v>``, ``_lo``, ``_hi``), the paired difference
            ``gap_diff`` = mean gap under proxy − under eye with its image-bootstrap interval, the mean
            ``|lam_gaze|`` disagreement of each comparison (``dlam_<a>_vs_<b>``), and ranks under eye and proxy.
        ranking: one row per (comparison, mixer set) with Spearman and Kendall and their intervals.
        skipped: mixers that could not run, with why.
    """

    samples: pd.DataFrame
    per_mixer: pd.DataFrame
    ranking: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)


def measure_mixers(maps: Mapping[str, Tensor], ids: Sequence[str], mixers: Mapping[str, Mixer], *,
                   images: Tensor | None = None, pairs: int = 500, seed: int = 0, batch_size: int = 64,
                   n_boot: int = 1000, progress: bool = True) -> MixerAgreement:
    """Score ``mixers`` on the same pairs under every gaze variant in ``maps`` and compare the results.

    ``maps`` holds ``(N, 1, H, W)`` densities for the variants of :data:`VARIANTS` (as
    :class:`ImageAgreement` gives them); ``images`` the matching ``(N, 3, H, W)`` pixels for mixers that look
    at them. See the module docstring for the flags and the bootstrap.
    """
    from tqdm.auto import tqdm

    missing = [v for v in VARIANTS if v not in maps]
    if missing:
        raise ValueError(f"maps lacks the gaze variants {missing}")
    if not mixers:
        raise ValueError("no mixer to compare")
    frames, skipped = {}, {}
    for k, variant in enumerate(VARIANTS):
        if progress:
            tqdm.write(f"scoring {len(mixers)} mixers on {variant} gaze ({k + 1}/{len(VARIANTS)})", file=sys.stderr)
        data = ScoringData(gaze=maps[variant], ids=list(ids), images=images, name=variant)
        run = score_mixers(mixers, data, pairs=pairs, seed=seed, batch_size=batch_size, progress=progress)
        skipped.update(run.skipped)
        frames[variant] = run.samples
    if all(f.empty for f in frames.values()):
        raise ValueError("no mixer could run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    keys = ["mixer", "pair"]
    merged = frames["eye"][keys + ["own_id", "partner_id", "lam_label"]].copy()
    summaries = {}
    for v in VARIANTS:
        f = frames[v][frames[v]["mixer"].isin(merged["mixer"].unique())]
        part = f[keys + ["lam_label", "lam_gaze", "gap"]].rename(
            columns={"lam_label": f"lam_label_{v}", "lam_gaze": f"lam_gaze_{v}", "gap": f"gap_{v}"})
        merged = merged.merge(part, on=keys, how="inner")
        summaries[v] = summarise(f, n_boot=n_boot, seed=seed).set_index("mixer")
    names = [m for m in mixers if m in set(merged["mixer"])]
    gaze_driven = {m: "gaze" in tuple(mixers[m].needs) for m in names}
    shared, sensitive = {}, {}
    for m, df in merged.groupby("mixer", sort=False):
        labels = df[[f"lam_label_{v}" for v in VARIANTS]].to_numpy(dtype=float)
        shared[m] = bool(np.nanmax(np.abs(labels - labels[:, :1]), initial=0.0) < 1e-6)
        lg = df[[f"lam_gaze_{v}" for v in VARIANTS]].to_numpy(dtype=float)
        sensitive[m] = bool(np.nanmax(np.abs(lg - lg[:, :1]), initial=0.0) > 1e-6)
    samples = merged.drop(columns=[f"lam_label_{v}" for v in VARIANTS]).reset_index(drop=True)

    ids_index = {k: i for i, k in enumerate(ids)}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(n_boot, len(ids)))
    counts = np.stack([np.bincount(d, minlength=len(ids)) for d in draws]).astype(np.float64)  # (B, N)

    def boot_means(df: pd.DataFrame, values: np.ndarray) -> tuple[float, np.ndarray]:
        own = df["own_id"].map(ids_index).to_numpy()
        ok = ~np.isnan(values)
        w = counts[:, own[ok]]
        return float(values[ok].mean()) if ok.any() else np.nan, (w @ values[ok]) / np.maximum(w.sum(1), 1e-12)

    means: dict[str, dict[str, tuple[float, np.ndarray]]] = {v: {} for v in VARIANTS}
    rows = []
    for m in names:
        df = samples[samples["mixer"] == m]
        for v in VARIANTS:
            means[v][m] = boot_means(df, df[f"gap_{v}"].to_numpy(dtype=float))
        diff_est, diff_boot = boot_means(df, (df["gap_proxy"] - df["gap_eye"]).to_numpy(dtype=float))
        row = {"mixer": m, "n": len(df), "gaze_driven": gaze_driven[m], "shared_mixes": shared[m],
               "gaze_sensitive": sensitive[m]}
        for v in VARIANTS:
            s = summaries[v].loc[m]
            row.update({f"gap_mean_{v}": s["gap_mean"], f"gap_mean_{v}_lo": s["gap_mean_lo"],
                        f"gap_mean_{v}_hi": s["gap_mean_hi"]})
        row.update({"gap_diff": diff_est, "gap_diff_lo": float(np.nanquantile(diff_boot, 0.025)),
                    "gap_diff_hi": float(np.nanquantile(diff_boot, 0.975))})
        for a, b in _COMPARISONS:
            est, boot = boot_means(df, (df[f"lam_gaze_{a}"] - df[f"lam_gaze_{b}"]).abs().to_numpy(dtype=float))
            row.update({f"dlam_{a}_vs_{b}": est, f"dlam_{a}_vs_{b}_lo": float(np.nanquantile(boot, 0.025)),
                        f"dlam_{a}_vs_{b}_hi": float(np.nanquantile(boot, 0.975))})
        rows.append(row)
    per_mixer = pd.DataFrame(rows)
    ranked = per_mixer["shared_mixes"] & ~per_mixer["gaze_driven"]
    for v in ("eye", "proxy"):
        per_mixer[f"rank_{v}"] = per_mixer[f"gap_mean_{v}"].where(ranked).round(_TIE_DECIMALS).rank(method="average")
    per_mixer = per_mixer.sort_values("gap_mean_eye", kind="stable").reset_index(drop=True)

    sets = {"sensitive": [m for m in names if shared[m] and not gaze_driven[m] and sensitive[m]],
            "all": [m for m in names if shared[m] and not gaze_driven[m]]}
    ranking = []
    for set_name, members in sets.items():
        for a, b in _COMPARISONS:
            ranking.append({"comparison": f"{a} vs {b}", "set": set_name, "n_mixers": len(members),
                            "mixers": ",".join(members), **_rank_correlations(members, means[a], means[b])})
    return MixerAgreement(samples, per_mixer, pd.DataFrame(ranking), skipped)


def _rank_correlations(members: list[str], a: Mapping[str, tuple[float, np.ndarray]],
                       b: Mapping[str, tuple[float, np.ndarray]]) -> dict[str, float]:
    """Spearman and Kendall of the mixers' mean gaps under two variants, point estimate and bootstrap interval."""
    from scipy.stats import kendalltau, spearmanr

    out = {}
    for name, fn in (("spearman", spearmanr), ("kendall", kendalltau)):
        if len(members) < 3:
            out.update({name: np.nan, f"{name}_lo": np.nan, f"{name}_hi": np.nan})
            continue
        x, y = (np.round([v[m][0] for m in members], _TIE_DECIMALS) for v in (a, b))
        xb, yb = (np.round(np.stack([v[m][1] for m in members], axis=1), _TIE_DECIMALS) for v in (a, b))
        est = float(fn(x, y)[0]) if np.ptp(x) > 0 and np.ptp(y) > 0 else np.nan
        boot = np.array([fn(xi, yi)[0] if np.ptp(xi) > 0 and np.ptp(yi) > 0 else np.nan for xi, yi in zip(xb, yb)])
        lo, hi = (np.nanquantile(boot, [0.025, 0.975]) if np.isfinite(boot).any() else (np.nan, np.nan))
        out.update({name: est, f"{name}_lo": float(lo), f"{name}_hi": float(hi)})
    return out


# ------------------------------------------------------------------------------------------------ plot
_LABELS = {"proxy": "proxy (all) vs eye (all)", "proxy_shuffled": "other image's proxy vs eye (all)",
           "eye_half": "eye half A vs eye half B", "proxy_matched": "proxy (|A| observers) vs eye half B",
           "eye_half_shuffled": "other image's eye half A vs half B"}


def plot_proxy(table: pd.DataFrame, per_mixer: pd.DataFrame, ranking: pd.DataFrame, path: str | Path, *,
               proxy_name: str = "mouse", title: str = "") -> Path:
    """Per-image NSS / CC / AUC distributions per predictor; each mixer's mean gap under eye vs proxy gaze."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(16, 10))
    grid = fig.add_gridspec(2, 3, height_ratios=[1, 1.1])
    order = ["eye_half", "proxy_matched", "eye_half_shuffled", "proxy", "proxy_shuffled"]
    labels = [_LABELS[p].replace("proxy", proxy_name) for p in order]
    colors = ["#55A868", "#4C72B0", "#BBBBBB", "#8172B2", "#DDDDDD"]
    chance = {"nss": 0.0, "cc": 0.0, "auc": 0.5}
    for col, metric in enumerate(METRICS):
        ax = fig.add_subplot(grid[0, col])
        data = [table[f"{p}_{metric}"].dropna().to_numpy() for p in order]
        box = ax.boxplot(data, orientation="horizontal", patch_artist=True, showfliers=False, widths=0.6)
        for patch, c in zip(box["boxes"], colors):
            patch.set_facecolor(c)
        ax.set_yticks(range(1, len(order) + 1), labels if col == 0 else [""] * len(order), fontsize=8)
        ax.invert_yaxis()
        ax.axvline(chance[metric], color="black", lw=0.8, ls=":")
        ax.set_xlabel(f"{metric.upper()} per image (quartiles, whiskers 1.5 IQR; dotted: chance)", fontsize=8)
        ax.set_title(f"{metric.upper()} over {len(table)} images")

    df = per_mixer[~per_mixer["gaze_driven"] & per_mixer["shared_mixes"]].sort_values("gap_mean_eye")
    ax = fig.add_subplot(grid[1, 0])
    for sensitive, marker, face in ((True, "o", "#C44E52"), (False, "s", "white")):
        d = df[df["gaze_sensitive"] == sensitive]
        if d.empty:
            continue
        ax.errorbar(d["gap_mean_eye"], d["gap_mean_proxy"],
                    xerr=[d["gap_mean_eye"] - d["gap_mean_eye_lo"], d["gap_mean_eye_hi"] - d["gap_mean_eye"]],
                    yerr=[d["gap_mean_proxy"] - d["gap_mean_proxy_lo"], d["gap_mean_proxy_hi"] - d["gap_mean_proxy"]],
                    fmt=marker, mfc=face, mec="#C44E52", ecolor="#999999", capsize=2, ms=6,
                    label="gaze-sensitive" if sensitive else "gaze-insensitive (pixel blend)")
    top = float(np.nanmax(df[["gap_mean_eye_hi", "gap_mean_proxy_hi"]].to_numpy(), initial=0.05)) * 1.08
    ax.plot([0, top], [0, top], color="black", lw=0.8)
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="mean label-gaze gap, eye gaze",
           ylabel=f"mean label-gaze gap, {proxy_name} gaze", title="Each mixer on the same mixes (diagonal = same gap)")
    ax.legend(fontsize=8, loc="upper left")

    ax = fig.add_subplot(grid[1, 1:])
    y = np.arange(len(df))
    for key, color, shift, name in (("eye", "#55A868", -0.15, "eye"), ("proxy", "#8172B2", 0.15, proxy_name)):
        mean = df[f"gap_mean_{key}"].to_numpy()
        err = [mean - df[f"gap_mean_{key}_lo"].to_numpy(), df[f"gap_mean_{key}_hi"].to_numpy() - mean]
        ax.errorbar(mean, y + shift, xerr=err, fmt="o", color=color, capsize=2, ms=5, label=f"{name} gaze")
    ax.set_yticks(y, [m + ("" if s else "  (gaze-insensitive)") for m, s in zip(df["mixer"], df["gaze_sensitive"])],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("mean label-gaze gap (95 % bootstrap interval); mixers sorted by the eye gap")
    text = []
    for r in ranking[ranking["set"] == "sensitive"].itertuples():
        text.append(f"{r.comparison.replace('proxy', proxy_name)}: Spearman {r.spearman:.2f} "
                    f"[{r.spearman_lo:.2f}, {r.spearman_hi:.2f}], Kendall {r.kendall:.2f} "
                    f"[{r.kendall_lo:.2f}, {r.kendall_hi:.2f}]")
    ax.set_title(f"Mixer order over the {int(df['gaze_sensitive'].sum())} gaze-sensitive mixers", fontsize=10)
    ax.text(0.99, 0.98, "\n".join(text), transform=ax.transAxes, ha="right", va="top", fontsize=8,
            bbox={"facecolor": "white", "edgecolor": "#CCCCCC"})
    ax.legend(fontsize=8, loc="center right")
    fig.suptitle(title or f"Can {proxy_name} tracking stand in for eye tracking?")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
