"""Label-gaze consistency: how far a mixer's label weight is from the share of human gaze each source keeps.

Every function is pure and batched. Inputs come from :meth:`gazemix.contract.MixResult.replay` applied
to gaze *densities* (each source image's map normalised to total mass 1), so ``g_own`` is the fraction of
the own image's gaze that stays visible in the mixed image and ``g_partner`` the fraction of the
partner's gaze that is shown.

Undefined values (both masses 0) are returned as NaN together with a ``defined`` mask; aggregates count
and report them, never silently fill them.

The TdAttenMix paper (Wang, Gu, Lu, AAAI 2025) introduces "a new metric based on the human gaze" for
image-label inconsistency, but its formula could not be read (only the abstract and the first page of the
paper text were reachable); no formula here is attributed to that paper.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["gaze_weight", "label_gaze_gap", "disagreement", "ghost_label", "pasted_region_shares",
           "source_shares_gap", "bootstrap_interval", "cluster_bootstrap"]


def gaze_weight(g_own: Tensor, g_partner: Tensor) -> tuple[Tensor, Tensor]:
    """Gaze-derived weight ``lam_gaze = g_own / (g_own + g_partner)``, in [0, 1], higher = more own gaze.

    Returns ``(lam_gaze, defined)``; ``lam_gaze`` is NaN where ``g_own + g_partner == 0``.
    """
    total = g_own + g_partner
    defined = total > 0
    lam_gaze = torch.where(defined, g_own / torch.where(defined, total, torch.ones_like(total)),
                           torch.full_like(total, float("nan")))
    return lam_gaze, defined


def label_gaze_gap(lam: Tensor, lam_gaze: Tensor) -> Tensor:
    """Label-gaze gap ``|lam - lam_gaze|`` per sample, in [0, 1], lower = more consistent (NaN stays NaN)."""
    return (lam - lam_gaze).abs()


def disagreement(lam: Tensor, lam_gaze: Tensor, tol: float = 1e-6) -> Tensor:
    """True where the label favours one source and the gaze the other: ``(lam - ½)(lam_gaze - ½) < 0``.

    A weight within ``tol`` of ½ favours neither side and never disagrees: two sources that keep the same gaze
    mass give ``lam_gaze = ½`` only up to the float32 rounding of the map sums (about 1e-7), and that rounding
    must not decide the verdict. NaN ``lam_gaze`` gives False; use the ``defined`` mask of :func:`gaze_weight` to
    exclude those samples from rates.
    """
    decided = ((lam - 0.5).abs() > tol) & ((lam_gaze - 0.5).abs() > tol)
    return decided & ((lam - 0.5) * (lam_gaze - 0.5) < 0)


def ghost_label(lam: Tensor, partner_lam: Tensor, g_own: Tensor, g_partner: Tensor, *,
                max_gaze: float = 0.05, min_label: float = 0.2) -> Tensor:
    """True where a source keeps under ``max_gaze`` of its gaze mass yet gets at least ``min_label`` of the label.

    The "object absent from the image but present in the label" failure TransMix describes. ``g_own`` and
    ``g_partner`` are the kept fractions of each source's (unit-mass) gaze.
    """
    return ((g_own < max_gaze) & (lam >= min_label)) | ((g_partner < max_gaze) & (partner_lam >= min_label))


def pasted_region_shares(g_own: Tensor, g_partner: Tensor) -> tuple[Tensor, Tensor]:
    """Pointing-game decomposition of the gap, for unit-mass gaze maps.

    Returns ``(partner_shown, own_covered)``: the share of the partner's gaze that lands inside its pasted
    region (= ``g_partner``) and the share of the own image's gaze that the paste covers (= ``1 - g_own``).
    """
    return g_partner, 1.0 - g_own


def source_shares_gap(label_weights: Tensor, gaze_masses: Tensor) -> tuple[Tensor, Tensor]:
    """Multi-source gap: total-variation distance between normalised label weights and gaze shares.

    ``label_weights`` and ``gaze_masses`` are ``(B, S)``. Both rows are normalised to sum 1 and the gap is
    ``½ Σ_s |w_s - g_s|`` in [0, 1]; with two sources whose weights sum to 1 it equals ``|lam - lam_gaze|``.
    Returns ``(gap, defined)``; rows with zero label weight or zero gaze are undefined (NaN).
    """
    w_total = label_weights.sum(dim=1, keepdim=True)
    g_total = gaze_masses.sum(dim=1, keepdim=True)
    defined = (w_total[:, 0] > 0) & (g_total[:, 0] > 0)
    w = label_weights / w_total.clamp_min(1e-12)
    g = gaze_masses / g_total.clamp_min(1e-12)
    gap = 0.5 * (w - g).abs().sum(dim=1)
    return torch.where(defined, gap, torch.full_like(gap, float("nan"))), defined


def bootstrap_interval(values: np.ndarray, statistic: str = "mean", *, n_boot: int = 1000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` (``mean`` or ``median``) over non-NaN ``values``.

    ``n_boot`` resamples with replacement, drawn with ``numpy.random.default_rng(seed)``; returns
    ``(lo, hi)`` at the given level, or ``(nan, nan)`` when no value is defined.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    chunk = max(1, 2_000_000 // x.size)  # bound memory: resample in blocks
    reduce = np.mean if statistic == "mean" else np.median
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}")
    for start in range(0, n_boot, chunk):
        n = min(chunk, n_boot - start)
        idx = rng.integers(0, x.size, size=(n, x.size))
        stats[start:start + n] = reduce(x[idx], axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def cluster_bootstrap(values: np.ndarray, clusters: np.ndarray, *, n_boot: int = 1000, level: float = 0.95,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` with a percentile bootstrap interval that resamples whole ``clusters``.

    Samples that share a cluster (scoring: the two directions of one image pair) are not independent, so the
    resampling unit is the cluster: ``n_boot`` draws of as many clusters as there are, with replacement
    (``numpy.random.default_rng(seed)``), each giving the mean over the samples of the drawn clusters. Applied
    to per-sample *differences* on shared samples (mixer A's gap minus mixer B's, or a gap minus the human
    ceiling) this is the paired bootstrap: the variation that both sides share cancels before resampling.
    Assumes clusters are exchangeable and independent; images reused across pairs are treated as independent.
    NaN values are dropped first. Returns ``(mean, lo, hi)``, all NaN when no value is defined.
    """
    x = np.asarray(values, dtype=np.float64)
    c = np.asarray(clusters)
    if x.shape != c.shape:
        raise ValueError(f"values {x.shape} and clusters {c.shape} must have the same shape")
    ok = ~np.isnan(x)
    x, c = x[ok], c[ok]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    _, inverse = np.unique(c, return_inverse=True)
    sums = np.bincount(inverse, weights=x)
    counts = np.bincount(inverse).astype(np.float64)
    rng = np.random.default_rng(seed)
    k = sums.size
    stats = np.empty(n_boot)
    chunk = max(1, 2_000_000 // k)
    for start in range(0, n_boot, chunk):
        n = min(chunk, n_boot - start)
        idx = rng.integers(0, k, size=(n, k))
        stats[start:start + n] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    alpha = (1 - level) / 2
    return float(x.mean()), float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))
