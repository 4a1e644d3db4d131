"""Saliency metrics: compare a predicted map with human fixations or a human gaze map.

Definitions follow the MIT/Tübingen saliency benchmark (Bylinskii, Judd, Oliva, Torralba, Durand, "What do
different evaluation metrics tell us about saliency models?", TPAMI 2019; MATLAB code ``cvzoya/saliency``)
and pysaliency (Kümmerer, Wallis, Bethge, "Saliency Benchmarking Made Easy", ECCV 2018;
``matthias-k/pysaliency`` ``metrics.py``). Where the two differ the docstring says which one is followed.

Every function is pure and batched: maps are ``(B, H, W)`` (or one ``(H, W)`` map, giving a 0-d result),
the result is ``(B,)`` float64 on the input's device, one value per image. Argument order is always
``(prediction, reference)``; the reference is human data: ``fixations``, a ``(B, H, W)`` map of fixation
*counts* per pixel (:func:`gazemix.gaze.count_maps` builds it; duplicates count, as in pysaliency), or a
human gaze ``reference`` map. Sizes must match: resize the prediction to the gaze map's size first (the
Tübingen benchmark refuses other sizes, because the resampling changes KLD noticeably).

**Degenerate inputs (one policy).** A NaN or infinite value raises :class:`ValueError`. A constant map
carries no spatial information: NSS = 0, CC = 0, every AUC = 0.5 (exact ties), as pysaliency. A map with
zero total mass (or all-zero after min-max scaling) is read as uniform by the density metrics (KLD, SIM,
IG), as pysaliency's ``convert_saliency_map_to_density``; negative values are shifted up by the minimum
first. A row with no fixation (or, for sAUC, no negative) has no value: NaN.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["MATLAB_EPS", "auc_borji", "auc_judd", "auc_shuffled", "auc_uniform", "cc", "info_gain", "kld", "nss", "sim"]

MATLAB_EPS = 2.2204e-16  # the epsilon of the MIT benchmark code (MATLAB ``eps``)


# ------------------------------------------------------------------------------------------- helpers
def _as_maps(x: Tensor | np.ndarray, name: str) -> tuple[Tensor, bool]:
    """``x`` as a float64 ``(B, H, W)`` tensor and whether it was a single ``(H, W)`` map."""
    t = torch.as_tensor(x)
    if t.ndim not in (2, 3):
        raise ValueError(f"{name} must be a (B, H, W) batch of maps or one (H, W) map, got shape {tuple(t.shape)}")
    t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values: drop those maps (e.g. GazeMaps.valid) first")
    return (t.unsqueeze(0), True) if t.ndim == 2 else (t, False)


def _pair(pred: Tensor | np.ndarray, ref: Tensor | np.ndarray, ref_name: str) -> tuple[Tensor, Tensor, bool]:
    s, single = _as_maps(pred, "saliency")
    r, _ = _as_maps(ref, ref_name)
    r = r.to(s.device)
    if r.shape != s.shape:
        raise ValueError(f"saliency has shape {tuple(s.shape)} but {ref_name} has {tuple(r.shape)}: resize the "
                         f"prediction to the gaze map's size first (e.g. torch.nn.functional.interpolate)")
    if ref_name == "fixations" and (r < 0).any():
        raise ValueError("fixations must be non-negative counts per pixel (see gazemix.gaze.count_maps)")
    return s.flatten(1), r.flatten(1), single


def _out(x: Tensor, single: bool) -> Tensor:
    return x[0] if single else x


def _density(m: Tensor, minmax: bool = False) -> Tensor:
    """Rows of ``(B, P)`` as probability distributions: shift negatives (or min-max scale), divide by the sum."""
    if minmax:
        lo, hi = m.amin(1, keepdim=True), m.amax(1, keepdim=True)
        m = torch.where(hi > lo, (m - lo) / (hi - lo).clamp_min(torch.finfo(m.dtype).tiny), torch.zeros_like(m))
    else:
        m = m - m.amin(1, keepdim=True).clamp_max(0)
    total = m.sum(1, keepdim=True)
    return torch.where(total > 0, m / total.clamp_min(torch.finfo(m.dtype).tiny), torch.full_like(m, 1.0 / m.shape[1]))


def _fixation_mean(values: Tensor, counts: Tensor) -> Tensor:
    n = counts.sum(1)
    return torch.where(n > 0, (values * counts).sum(1) / n.clamp_min(1), torch.full_like(n, float("nan")))


def _weighted_auc(s: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """Exact ROC area (Mann-Whitney): ``P(s_pos > s_neg) + ½ P(tie)`` with per-pixel weights ``pos``, ``neg``."""
    vals, order = torch.sort(s, dim=1)
    cum = torch.cat([torch.zeros_like(neg[:, :1]), neg.gather(1, order).cumsum(1)], dim=1)
    below = cum.gather(1, torch.searchsorted(vals, s, right=False))
    upto = cum.gather(1, torch.searchsorted(vals, s, right=True))
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    area = (pos * (below + 0.5 * (upto - below))).sum(1) / (n_pos * n_neg).clamp_min(torch.finfo(s.dtype).tiny)
    return torch.where((n_pos > 0) & (n_neg > 0), area, torch.full_like(area, float("nan")))


def _trapz(fp: Tensor, tp: Tensor) -> Tensor:
    return ((fp[..., 1:] - fp[..., :-1]) * (tp[..., 1:] + tp[..., :-1]) / 2).sum(-1)


# --------------------------------------------------------------------------------- fixation metrics
def nss(saliency: Tensor | np.ndarray, fixations: Tensor | np.ndarray) -> Tensor:
    """Normalized Scanpath Saliency: the mean z-scored saliency at the fixations (Peters et al., 2005).

    ``NSS = Σ_p c_p (S_p - mean S) / std S / Σ_p c_p`` with ``c`` the fixation counts (every fixation counts,
    as pysaliency; the MIT code collapses duplicates) and the population std (numpy's; MATLAB uses N - 1).
    Range unbounded; 0 = chance, higher is better. A constant map gives 0.
    """
    s, c, single = _pair(saliency, fixations, "fixations")
    std = s.std(1, unbiased=False, keepdim=True)
    z = torch.where(std > 0, (s - s.mean(1, keepdim=True)) / std.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))
    return _out(_fixation_mean(z, c), single)


def auc_uniform(saliency: Tensor | np.ndarray, fixations: Tensor | np.ndarray) -> Tensor:
    """Exact AUC with every pixel as a negative (pysaliency ``AUC``, ``nonfixations='uniform'``; the Tübingen "AUC").

    The Mann-Whitney statistic: for each fixation, the fraction of pixels (fixated ones included) with lower
    saliency plus half the fraction tied, averaged over fixations (counts as weights). Range [0, 1];
    0.5 = chance, higher is better; invariant to any strictly increasing transform of the map.
    """
    s, c, single = _pair(saliency, fixations, "fixations")
    return _out(_weighted_auc(s, c, torch.ones_like(s)), single)


def auc_judd(saliency: Tensor | np.ndarray, fixations: Tensor | np.ndarray, *, jitter: float = 0.0,
             generator: torch.Generator | None = None) -> Tensor:
    """AUC-Judd (Judd et al., ICCV 2009), as pysaliency's ``AUC_Judd`` computes it.

    Positives are the fixations (counts as weights), negatives the pixels *no* fixation fell on. The ROC
    is traced only at thresholds equal to the saliency at fixated pixels: at threshold ``t``,
    ``TP = #{fixations with S >= t} / N`` and ``FP = #{unfixated pixels with S >= t} / #unfixated``; the
    curve from (0, 0) to (1, 1) is integrated with the trapezoid rule. Without duplicate fixations or tied
    values this equals the MIT ``AUC_Judd.m``. Range [0, 1]; 0.5 = chance, higher is better.

    Args:
        jitter: add ``U(0, jitter)`` noise to break ties, drawn from ``generator`` (the MIT code uses 1e-7;
            default 0 = deterministic, pysaliency's ``jitter=False``).
    """
    s, c, single = _pair(saliency, fixations, "fixations")
    if jitter:
        s = s + jitter * torch.rand(s.shape, generator=generator, dtype=s.dtype).to(s.device)
    fixated = c > 0
    n = fixated.sum(1)
    k_max = max(int(n.max()), 1)
    thresholds = torch.topk(torch.where(fixated, s, torch.full_like(s, -math.inf)), k_max, dim=1).values
    vals, order = torch.sort(s, dim=1)
    at = torch.searchsorted(vals, thresholds.contiguous(), right=False)  # pixels below each threshold

    def rate_at_or_above(weight: Tensor) -> Tensor:
        cum = torch.cat([torch.zeros_like(weight[:, :1]), weight.gather(1, order).cumsum(1)], dim=1)
        total = cum[:, -1:]
        return (total - cum.gather(1, at)) / total.clamp_min(torch.finfo(s.dtype).tiny)

    real = torch.arange(k_max, device=s.device) < n.unsqueeze(1)
    tp = torch.where(real, rate_at_or_above(c), torch.ones_like(thresholds))
    fp = torch.where(real, rate_at_or_above((~fixated).to(s.dtype)), torch.ones_like(thresholds))
    zero, one = torch.zeros_like(tp[:, :1]), torch.ones_like(tp[:, :1])
    area = _trapz(torch.cat([zero, fp, one], 1), torch.cat([zero, tp, one], 1))
    return _out(torch.where(n > 0, area, torch.full_like(area, float("nan"))), single)


def auc_borji(saliency: Tensor | np.ndarray, fixations: Tensor | np.ndarray, *, n_splits: int = 100,
              step: float = 0.1, min_fixated: int = 1, generator: torch.Generator | None = None) -> Tensor:
    """AUC-Borji (Borji et al., 2013; MIT ``AUC_Borji.m``), stochastic: seed ``generator`` to repeat it.

    The map is min-max scaled to [0, 1]. Positives: the saliency at the N fixated pixels (binary map);
    negatives: N pixels drawn uniformly with replacement from the whole image, ``n_splits`` times.
    Thresholds ``0, step, 2 step, …``; TP and FP are the fractions of positives and negatives at or above
    each; the trapezoid area is averaged over splits. Range [0, 1]; 0.5 = chance, higher is better.

    A row with fewer than ``min_fixated`` fixated pixels is NaN. Default 1: one fixated pixel still gives the
    area of its ROC against its sampled negatives (a valid, if noisy, value). The MIT code returns NaN for at most
    one fixated pixel (``sum(fixationMap(:)>0)<=1``): pass ``min_fixated=2`` for its rule.
    """
    if not isinstance(n_splits, int) or n_splits < 1:
        raise ValueError(f"n_splits must be a positive integer, got {n_splits!r}")
    if not isinstance(min_fixated, int) or isinstance(min_fixated, bool) or min_fixated < 1:
        raise ValueError(f"min_fixated must be a positive integer, got {min_fixated!r}")
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step!r}")
    s, c, single = _pair(saliency, fixations, "fixations")
    lo, hi = s.amin(1, keepdim=True), s.amax(1, keepdim=True)
    s = torch.where(hi > lo, (s - lo) / (hi - lo).clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))
    fixated = c > 0
    n = fixated.sum(1).to(s.dtype)
    b, p = s.shape
    k_max = max(int(n.max()), 1)
    t = torch.arange(0, int(math.floor(1.0 / step + 1e-9)) + 1, device=s.device, dtype=s.dtype) * step  # (T,)
    pos = torch.where(fixated, s, torch.full_like(s, -1.0))  # -1 is below every threshold
    tp = (pos.unsqueeze(-1) >= t).sum(1) / n.clamp_min(1).unsqueeze(1)  # (B, T)
    draws = torch.randint(p, (b, n_splits, k_max), generator=generator).to(s.device)
    neg = s.gather(1, draws.view(b, -1)).view(b, n_splits, k_max)
    real = torch.arange(k_max, device=s.device) < n.view(b, 1, 1)
    neg = torch.where(real, neg, torch.full_like(neg, -1.0))
    fp = (neg.unsqueeze(-1) >= t).sum(2) / n.clamp_min(1).view(b, 1, 1)  # (B, splits, T)
    tp = tp.unsqueeze(1).expand_as(fp)
    zero, one = torch.zeros_like(fp[..., :1]), torch.ones_like(fp[..., :1])
    # thresholds from high to low, as the ROC is traced from (0, 0) to (1, 1)
    area = _trapz(torch.cat([zero, fp.flip(-1), one], -1), torch.cat([zero, tp.flip(-1), one], -1)).mean(1)
    return _out(torch.where(n >= min_fixated, area, torch.full_like(area, float("nan"))), single)


def auc_shuffled(saliency: Tensor | np.ndarray, fixations: Tensor | np.ndarray,
                 other_fixations: Tensor | np.ndarray | None = None) -> Tensor:
    """Shuffled AUC (sAUC; Zhang et al., JoV 2008): negatives are *other images'* fixations, so a pure
    centre bias scores about 0.5.

    Exact ROC area, as pysaliency and the Tübingen benchmark compute it (not the MIT code's 100 random
    splits of 10 other images): positives are this image's fixations, negatives the fixations of the other
    images mapped to this image's pixel grid, both weighted by their counts.

    Args:
        other_fixations: ``(B, H, W)`` counts of the negatives for each image. Default: the fixations of
            every *other* image of the batch (all maps share one size, so no rescaling is needed).
    """
    s, c, single = _pair(saliency, fixations, "fixations")
    if other_fixations is None:
        if c.shape[0] < 2:
            raise ValueError("auc_shuffled needs other images' fixations: pass a batch of several images or "
                             "other_fixations=")
        other = c.sum(0, keepdim=True) - c
    else:
        _, other, _ = _pair(saliency, other_fixations, "fixations")
    return _out(_weighted_auc(s, c, other), single)


def info_gain(saliency: Tensor | np.ndarray, fixations: Tensor | np.ndarray,
              baseline: Tensor | np.ndarray | None = None, *, minmax: bool = False, eps: float = MATLAB_EPS) -> Tensor:
    """Information gain over a baseline, in bits per fixation (Kümmerer, Wallis, Bethge, PNAS 2015).

    ``IG = Σ_p c_p [log2(s̃_p + eps) - log2(b̃_p + eps)] / Σ_p c_p`` where ``s̃``, ``b̃`` are the prediction and
    the baseline as per-pixel probabilities (sum 1). 0 = no better than the baseline, higher is better.

    Args:
        baseline: a centre-bias or other reference map (default uniform, pysaliency's default baseline).
        minmax: min-max scale both maps before normalising, as the MIT ``InfoGain.m``; the default reads
            the prediction as a density directly, as pysaliency/Tübingen do for probabilistic models.
    """
    s, c, single = _pair(saliency, fixations, "fixations")
    if baseline is None:
        bl = torch.full_like(s, 1.0 / s.shape[1])
    else:
        _, bl, _ = _pair(saliency, baseline, "baseline")
        bl = _density(bl, minmax)
    gain = torch.log2(_density(s, minmax) + eps) - torch.log2(bl + eps)
    return _out(_fixation_mean(gain, c), single)


# -------------------------------------------------------------------------------------- map metrics
def cc(saliency: Tensor | np.ndarray, reference: Tensor | np.ndarray) -> Tensor:
    """Pearson linear correlation coefficient between two maps over all pixels.

    Range [-1, 1]; 1 = identical up to a positive affine transform, 0 = unrelated; symmetric. Either map
    constant gives 0 (pysaliency returns 0 only when the first is; MATLAB ``corr2`` gives NaN).
    """
    s, r, single = _pair(saliency, reference, "reference")
    s = s - s.mean(1, keepdim=True)
    r = r - r.mean(1, keepdim=True)
    denom = torch.sqrt((s * s).sum(1) * (r * r).sum(1))
    return _out(torch.where(denom > 0, (s * r).sum(1) / denom.clamp_min(torch.finfo(s.dtype).tiny),
                            torch.zeros_like(denom)), single)


def kld(saliency: Tensor | np.ndarray, reference: Tensor | np.ndarray, *, eps: float = MATLAB_EPS) -> Tensor:
    """Image-based KL divergence ``KL(G̃ ‖ S̃)`` of the prediction from the human map, MIT form.

    ``KLD = Σ_p g̃_p log(eps + g̃_p / (s̃_p + eps))`` (natural log) with ``g̃ = reference / Σ reference`` and
    ``s̃ = saliency / Σ saliency``: the MIT ``KLdiv.m`` and the Tübingen benchmark (pysaliency ``MIT_KLDiv``).
    The *reference* (human gaze) is the second argument and the distribution the expectation is over.
    Range [0, ∞); 0 = identical, lower is better. Invariant to positive scaling, not to adding a constant.
    """
    s, r, single = _pair(saliency, reference, "reference")
    g = _density(r)
    return _out((g * torch.log(eps + g / (_density(s) + eps))).sum(1), single)


def sim(saliency: Tensor | np.ndarray, reference: Tensor | np.ndarray, *, minmax: bool = False) -> Tensor:
    """Similarity (histogram intersection): ``SIM = Σ_p min(s̃_p, g̃_p)`` of the two maps as distributions.

    Range [0, 1]; 1 = identical distributions, 0 = disjoint supports; symmetric. By default each map is
    only shifted (if negative) and divided by its sum, as pysaliency and the Tübingen benchmark;
    ``minmax=True`` min-max scales first, as the MIT ``similarity.m`` (differs when a map has a floor).
    """
    s, r, single = _pair(saliency, reference, "reference")
    return _out(torch.minimum(_density(s, minmax), _density(r, minmax)).sum(1), single)
