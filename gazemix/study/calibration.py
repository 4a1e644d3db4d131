"""How people perceive a mix: the perceived share of image 1 as a monotone function of the mixer's label weight.

Human-in-the-Loop Mixup (Collins et al., UAI 2023) found that people judge a mixed image differently from the
``lam`` it is labelled with: on H-Mix the mean judgment follows ``lam`` but is pulled in at the ends. This module
fits, per mixer, the curve ``f(lam)`` = mean perceived share of image 1 given the label weight ``lam``, from a
study database (:mod:`gazemix.study`, answers read as :mod:`gazemix.study.analysis` reads them) or from the
published H-Mix judgments (:mod:`data_adapters.hmix`), so that training can label a mixed sample with
``f(lam)`` instead of ``lam`` (``gazemix train --label-source human --calibration FIT.json``).

Estimator: **isotonic regression** (the pool-adjacent-violators algorithm, answers weighted equally) of the
perceived share on ``lam``, evaluated between the fitted ``lam`` values by linear interpolation (as scikit-learn's
``IsotonicRegression.predict``). Chosen over a logistic curve because it assumes nothing but monotonicity: where
the per-``lam`` means already increase (H-Mix) the fit *is* those means, and where they do not, it pools the
neighbours that disagree (their weighted mean). A two-parameter logistic curve in ``logit(lam)`` would also be
monotone, but it forces a symmetric S shape the data need not have and can miss the per-``lam`` means by more than
their noise. Below the smallest and above the largest ``lam`` observed the curve is anchored at ``f(0) = 0`` and
``f(1) = 1``: at ``lam = 0`` (``1``) the picture *is* image 2 (image 1), whatever the mixer; where the data hold
answers at ``lam = 0`` or ``1`` themselves, those are used instead of the anchor.

Bands: pointwise 95 % percentile intervals of the refitted curve over :data:`N_BOOT` bootstrap resamples. The
resampling unit (``unit``) is ``"annotator"`` (whole annotators with all their answers), ``"item"`` (whole
stimuli) or ``"both"`` (default): the *pigeonhole bootstrap* for crossed designs (Owen, "The pigeonhole
bootstrap", Ann. Appl. Stat. 1(2), 2007), which resamples annotators and items independently and weights each
answer by the product of its annotator's and its item's multiplicities. Answers by one person, and answers on one
picture, are not independent; resampling only one of the two understates the spread, the pigeonhole bootstrap is
mildly conservative. The per-``lam`` means shown beside the fit get intervals from the same resamples.

Every answer counts, repeats included (as H-Mix's ``processed_hmix_inferences.json`` does); attention checks and
answers without a weight of image 1 are left out, as in :func:`gazemix.study.analysis.per_lambda`. The label
weight is the item's ``lam``: the own image's label weight normalised by the sum of both (``gazemix study build``).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = ["Answers", "CalibrationError", "FORMAT", "MixerFit", "N_BOOT", "PerceivedShare", "UNITS",
           "answers_from_db", "answers_from_hmix", "calibration_figure", "fit_calibration", "fit_mixer", "pava",
           "write_calibration"]

FORMAT = "gazemix-calibration"
VERSION = 1
N_BOOT = 1000
LEVEL = 0.95
UNITS = ("both", "annotator", "item")
DISCRETE_MAX = 20  # designs with at most this many distinct lam values get one point per lam, others 10 bins
GRID_MAX = 100  # at most this many distinct lam values are the grid itself; more are resampled on a 0.01 grid


class CalibrationError(ValueError):
    """A calibration that cannot be fitted or read; the message names the file (and field) or the input at fault."""


@dataclass
class Answers:
    """Judgments to calibrate from: one row per answer with ``mixer``, ``lam`` (label weight of image 1),
    ``weight1`` (perceived share of image 1, in [0, 1]), ``annotator`` and ``item``; ``source`` says where they
    came from (recorded in the fit)."""

    table: pd.DataFrame
    source: dict[str, Any]


def answers_from_db(db: str | os.PathLike, study: str | None = None) -> Answers:
    """The answers of one study in a study database (attention checks and answers without a weight left out)."""
    from gazemix.study.analysis import load_tables

    t = load_tables(db, study)
    r = t.responses
    r = r[(r["is_check"] == 0) & r["weight1"].notna() & r["lam"].notna()]
    table = pd.DataFrame({"mixer": r["mixer"].astype(str), "lam": r["lam"].astype(float),
                          "weight1": r["weight1"].astype(float), "annotator": r["annotator"].astype(str),
                          "item": r["item_id"].astype(str)})
    return Answers(table.reset_index(drop=True), {"kind": "study", "db": str(db), "study": t.study["name"],
                                                  "title": t.study["title"], "mode": t.study["mode"]})


def answers_from_hmix(root: str | os.PathLike) -> Answers:
    """The H-Mix "infer the mixing factor" answers (perceived weight of image 1 = 1 - slider / 100; see
    :mod:`data_adapters.hmix`), reruns included."""
    from data_adapters.hmix import read_hmix_inferences

    t = read_hmix_inferences(root)
    r = t.responses.merge(t.items[["key", "lam", "mixer"]], on="key", how="left")
    table = pd.DataFrame({"mixer": r["mixer"].astype(str), "lam": r["lam"].astype(float),
                          "weight1": r["weight1"].astype(float), "annotator": r["annotator"].astype(str),
                          "item": r["key"].astype(str)})
    return Answers(table, {"kind": "hmix", "dir": str(root), "title": "H-Mix (Collins et al., UAI 2023)",
                           "mode": "infer"})


def pava(y: Sequence[float], w: Sequence[float]) -> np.ndarray:
    """Weighted least-squares non-decreasing fit to ``y`` (pool-adjacent-violators): adjacent values that
    decrease are replaced by their weighted mean until none do. Weights must be positive."""
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for yi, wi in zip(np.asarray(y, dtype=np.float64), np.asarray(w, dtype=np.float64)):
        means.append(float(yi))
        weights.append(float(wi))
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            m2, w2, s2 = means.pop(), weights.pop(), sizes.pop()
            wt = weights[-1] + w2
            means[-1] = (means[-1] * weights[-1] + m2 * w2) / wt
            weights[-1] = wt
            sizes[-1] += s2
    return np.repeat(np.asarray(means), sizes)


@dataclass
class MixerFit:
    """The fitted curve of one mixer.

    Attributes:
        mixer: the mixer's name.
        lam: the grid ``(G,)``, increasing in [0, 1], anchors included.
        perceived: the fitted perceived share at each grid point (isotonic, interpolated linearly between).
        lo, hi: the pointwise band at each grid point.
        anchors: the anchored ends, e.g. ``[(0, 0), (1, 1)]``.
        points: per ``lam`` (or per bin of ``lam``): ``lam`` (mean), ``n``, ``mean`` perceived share, ``lo``, ``hi``.
        design: ``"discrete"`` (one point per ``lam``) or ``"binned"`` (10 equal-width bins of ``lam``).
        n_answers, n_annotators, n_items: what the fit rests on.
    """

    mixer: str
    lam: np.ndarray
    perceived: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    anchors: list[tuple[float, float]]
    points: pd.DataFrame
    design: str
    n_answers: int
    n_annotators: int
    n_items: int
    extra: dict[str, Any] = field(default_factory=dict)

    def __call__(self, lam: np.ndarray | float) -> np.ndarray:
        """The fitted perceived share at ``lam`` (linear between grid points)."""
        return np.interp(lam, self.lam, self.perceived)

    def band(self, lam: float) -> tuple[float, float]:
        """The band at ``lam`` (linear between grid points)."""
        return float(np.interp(lam, self.lam, self.lo)), float(np.interp(lam, self.lam, self.hi))

    def to_json(self) -> dict[str, Any]:
        pts = self.points
        return {"lam": _floats(self.lam), "perceived": _floats(self.perceived), "lo": _floats(self.lo),
                "hi": _floats(self.hi), "anchors": [list(a) for a in self.anchors], "design": self.design,
                "n_answers": self.n_answers, "n_annotators": self.n_annotators, "n_items": self.n_items,
                "points": {"lam": _floats(pts["lam"]), "n": [int(v) for v in pts["n"]], "mean": _floats(pts["mean"]),
                           "lo": _floats(pts["lo"]), "hi": _floats(pts["hi"])}}


def _floats(values: Any) -> list[float | None]:
    return [None if not math.isfinite(float(v)) else round(float(v), 6) for v in values]


def _multiplicities(rng: np.random.Generator, n: int, resample: bool) -> np.ndarray:
    return rng.multinomial(n, np.full(n, 1.0 / n)).astype(np.float64) if resample else np.ones(n)


def _curve(knots: np.ndarray, means: np.ndarray, weights: np.ndarray, anchors: list[tuple[float, float]],
           grid: np.ndarray) -> np.ndarray:
    ok = weights > 0
    xs = np.concatenate([[a[0] for a in anchors if a[0] == 0.0], knots[ok], [a[0] for a in anchors if a[0] == 1.0]])
    ys = np.concatenate([[a[1] for a in anchors if a[0] == 0.0], pava(means[ok], weights[ok]),
                         [a[1] for a in anchors if a[0] == 1.0]])
    return np.interp(grid, xs, ys)


def fit_mixer(table: pd.DataFrame, *, unit: str = "both", n_boot: int = N_BOOT, seed: int = 0,
              mixer: str | None = None) -> MixerFit:
    """Fit one mixer's curve from its answers (columns as in :class:`Answers`); see the module docstring."""
    if unit not in UNITS:
        raise CalibrationError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if n_boot < 10:
        raise CalibrationError(f"n_boot must be at least 10, got {n_boot}")
    mixer = mixer or str(table["mixer"].iloc[0])
    if len(table) < 2:
        raise CalibrationError(f"{mixer}: {len(table)} answer(s); a calibration needs at least two")
    y = table["weight1"].to_numpy(np.float64)
    lam = table["lam"].to_numpy(np.float64).round(6)
    if not (np.isfinite(y).all() and (y >= 0).all() and (y <= 1).all()):
        raise CalibrationError(f"{mixer}: perceived shares must lie in [0, 1]")
    if not (np.isfinite(lam).all() and (lam >= 0).all() and (lam <= 1).all()):
        raise CalibrationError(f"{mixer}: label weights lam must lie in [0, 1]")
    knots, k_idx = np.unique(lam, return_inverse=True)
    anchors = ([(0.0, 0.0)] if knots[0] > 0 else []) + ([(1.0, 1.0)] if knots[-1] < 1 else [])
    if len(knots) <= GRID_MAX:
        grid = np.unique(np.concatenate([[a[0] for a in anchors], knots]))
    else:
        grid = np.unique(np.concatenate([np.linspace(0.0, 1.0, 101), knots[[0, -1]]]))
    discrete = len(knots) <= DISCRETE_MAX
    if discrete:
        p_idx, n_points = k_idx, len(knots)
    else:
        p_idx, n_points = np.clip((lam * 10).astype(int), 0, 9), 10
    a_codes, a_idx = np.unique(table["annotator"].to_numpy(), return_inverse=True)
    i_codes, i_idx = np.unique(table["item"].to_numpy(), return_inverse=True)

    def summary(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sw = np.bincount(k_idx, w, len(knots))
        sy = np.bincount(k_idx, w * y, len(knots))
        means = np.divide(sy, sw, out=np.full(len(knots), np.nan), where=sw > 0)
        pw = np.bincount(p_idx, w, n_points)
        py = np.bincount(p_idx, w * y, n_points)
        point_means = np.divide(py, pw, out=np.full(n_points, np.nan), where=pw > 0)
        return _curve(knots, means, sw, anchors, grid), point_means

    ones = np.ones(len(table))
    fitted, point_means = summary(ones)
    rng = np.random.default_rng(seed)
    curves = np.empty((n_boot, len(grid)))
    boot_points = np.empty((n_boot, n_points))
    for b in range(n_boot):
        w = (_multiplicities(rng, len(a_codes), unit in ("both", "annotator"))[a_idx]
             * _multiplicities(rng, len(i_codes), unit in ("both", "item"))[i_idx])
        curves[b], boot_points[b] = summary(w)
    q = [(1 - LEVEL) / 2, (1 + LEVEL) / 2]
    lo, hi = np.quantile(curves, q, axis=0)
    counts = np.bincount(p_idx, minlength=n_points)
    keep = counts > 0
    with np.errstate(invalid="ignore"):
        plo, phi = np.nanquantile(boot_points[:, keep], q, axis=0) if keep.any() else (np.array([]), np.array([]))
    point_lam = knots if discrete else np.bincount(p_idx, lam, n_points) / np.maximum(counts, 1)
    points = pd.DataFrame({"lam": point_lam[keep], "n": counts[keep],
                           "mean": point_means[keep], "lo": plo, "hi": phi})
    return MixerFit(mixer, grid, fitted, lo, hi, anchors, points, "discrete" if discrete else "binned", len(table),
                    len(a_codes), len(i_codes))


def fit_calibration(answers: Answers, *, unit: str = "both", n_boot: int = N_BOOT, seed: int = 0,
                    mixers: Sequence[str] | None = None) -> dict[str, MixerFit]:
    """One :class:`MixerFit` per mixer in ``answers`` (or per mixer named in ``mixers``)."""
    t = answers.table
    names = sorted(t["mixer"].unique()) if mixers is None else list(mixers)
    missing = [m for m in names if m not in set(t["mixer"])]
    if missing:
        raise CalibrationError(f"no answers on items of {', '.join(missing)}; the answers cover "
                               f"{', '.join(sorted(t['mixer'].unique())) or 'no mixer'}")
    if not names:
        raise CalibrationError("no usable answers (attention checks and answers without a weight of image 1 are "
                               "left out)")
    return {m: fit_mixer(t[t["mixer"] == m], unit=unit, n_boot=n_boot, seed=seed, mixer=m) for m in names}


def calibration_figure(fits: dict[str, MixerFit], answers: Answers, *, unit: str, title: str | None = None) -> Any:
    """One panel per mixer: every answer (grey, jittered), the per-``lam`` means with their bootstrap intervals, the
    fitted curve with its band (the legend names the resampling unit), and the line ``perceived = lam`` (labels as
    the mixer gives them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(fits)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.4 * rows + 0.6), squeeze=False,
                             layout="constrained")
    rng = np.random.default_rng(0)
    t = answers.table
    unit_text = {"both": "annotators × items", "annotator": "annotators", "item": "items"}[unit]
    for ax, (name, fit) in zip(axes.flat, fits.items()):
        a = t[t["mixer"] == name]
        jitter = rng.uniform(-0.02, 0.02, len(a)) if fit.design == "discrete" else 0.0
        alpha = float(np.clip(100 / max(len(a), 1), 0.04, 0.6))
        ax.scatter(a["lam"] + jitter, a["weight1"], s=6, color="0.45", alpha=alpha, lw=0, label="answers",
                   rasterized=True)
        ax.fill_between(fit.lam, fit.lo, fit.hi, color="C0", alpha=0.25, lw=0,
                        label=f"{LEVEL:.0%} band ({unit_text})")
        ax.plot(fit.lam, fit.perceived, color="C0", lw=2, label="isotonic fit")
        p = fit.points
        ax.errorbar(p["lam"], p["mean"], yerr=np.vstack([p["mean"] - p["lo"], p["hi"] - p["mean"]]), fmt="o",
                    color="black", ms=4, capsize=3, lw=1,
                    label="mean per λ" if fit.design == "discrete" else "mean per bin of λ")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perceived = λ")
        ax.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03), xlabel="mixer's label weight of image 1 (λ)",
               ylabel="perceived share of image 1")
        ax.set_title(f"{name}: {fit.n_answers:,} answers, {fit.n_annotators} annotators", fontsize=10)
        legend = ax.legend(fontsize=7, loc="upper left", framealpha=0.85)
        legend.legend_handles[0].set_alpha(0.6)  # the answers' marker, visible in the legend
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(title or f"Perceived share against λ\n{answers.source.get('title', '')}", fontsize=11)
    return fig


def write_calibration(fits: dict[str, MixerFit], answers: Answers, out: str | os.PathLike, *, unit: str,
                      n_boot: int, seed: int) -> Path:
    """Write ``calibration.json`` (the fit), ``calibration.png`` and ``points.csv`` (per mixer and ``lam``: the
    answers' mean with its interval beside the fitted value) into the new folder ``out``, whole or not at all
    (an existing non-empty ``out`` is refused). Returns the JSON's path."""
    import matplotlib.pyplot as plt

    from gazemix.outputs import OutputError, staged_folder

    record = {"format": FORMAT, "version": VERSION,
              "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "source": answers.source,
              "method": "isotonic",
              "method_detail": "pool-adjacent-violators fit of the perceived share of image 1 on lam, answers "
                               "weighted equally, linear between grid points; anchored at (0, 0) and (1, 1) beyond "
                               "the observed lam",
              "band": {"level": LEVEL, "kind": "pointwise percentile bootstrap", "unit": unit, "n_boot": n_boot,
                       "seed": seed},
              "mixers": {name: fit.to_json() for name, fit in fits.items()}}
    rows = []
    for name, fit in fits.items():
        for p in fit.points.itertuples(index=False):
            rows.append({"mixer": name, "lam": p.lam, "n": p.n, "mean": p.mean, "mean_lo": p.lo, "mean_hi": p.hi,
                         "fitted": float(fit(p.lam))})
    fig = calibration_figure(fits, answers, unit=unit)
    try:
        with staged_folder(out) as tmp:
            (tmp / "calibration.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
            pd.DataFrame(rows).to_csv(tmp / "points.csv", index=False)
            fig.savefig(tmp / "calibration.png", dpi=110)
    except OutputError as err:
        raise CalibrationError(f"--out {err}: pass a new or empty folder") from None
    finally:
        plt.close(fig)
    return Path(out) / "calibration.json"


class PerceivedShare:
    """One mixer's fitted curve read from a ``calibration.json``: ``share(lam)`` for a tensor of label weights.

    Args:
        path: the file :func:`write_calibration` wrote.
        mixer: whose curve to use.
    """

    def __init__(self, path: str | os.PathLike, mixer: str) -> None:
        self.path, self.mixer = Path(path), mixer
        record = self._read()
        curves = record.get("mixers")
        if not isinstance(curves, dict) or not curves:
            raise CalibrationError(f"{self.path}: field 'mixers' holds no fitted curve")
        if mixer not in curves:
            raise CalibrationError(f"{self.path} has no curve for {mixer!r} (it has {', '.join(sorted(curves))})")
        curve = curves[mixer]
        try:
            lam = np.asarray(curve["lam"], dtype=np.float64)
            share = np.asarray(curve["perceived"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise CalibrationError(f"{self.path}: mixers.{mixer} needs number lists 'lam' and 'perceived'") from None
        if lam.ndim != 1 or lam.shape != share.shape or len(lam) < 2:
            raise CalibrationError(f"{self.path}: mixers.{mixer}: 'lam' and 'perceived' must be lists of the same "
                                   f"length (at least 2)")
        if not (np.isfinite(lam).all() and np.isfinite(share).all()):
            raise CalibrationError(f"{self.path}: mixers.{mixer}: 'lam' and 'perceived' must be finite numbers")
        if lam[0] != 0 or lam[-1] != 1 or (np.diff(lam) <= 0).any():
            raise CalibrationError(f"{self.path}: mixers.{mixer}.lam must increase from 0 to 1")
        if (share < 0).any() or (share > 1).any() or (np.diff(share) < 0).any():
            raise CalibrationError(f"{self.path}: mixers.{mixer}.perceived must be non-decreasing within [0, 1]")
        self.lam, self.share = lam, share
        self.method = record.get("method")

    def _read(self) -> dict[str, Any]:
        if not self.path.is_file():
            raise CalibrationError(f"{self.path}: no such file (write one with `gazemix humans calibrate`)")
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise CalibrationError(f"{self.path}: not a UTF-8 JSON file") from None
        except json.JSONDecodeError as err:
            raise CalibrationError(f"{self.path}, line {err.lineno}: malformed JSON ({err.msg})") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise CalibrationError(f"{self.path}: not a gazemix calibration (field 'format' is not {FORMAT!r}); "
                                   "write one with `gazemix humans calibrate`")
        return record

    def __call__(self, lam: Any) -> Any:
        """The perceived share at ``lam`` (a tensor or array; linear between grid points, clamped to [0, 1])."""
        import torch

        if not isinstance(lam, torch.Tensor):
            return np.interp(np.clip(lam, 0, 1), self.lam, self.share)
        xs = torch.as_tensor(self.lam, dtype=torch.float64, device=lam.device)
        ys = torch.as_tensor(self.share, dtype=torch.float64, device=lam.device)
        x = lam.detach().double().clamp(0, 1)
        j = torch.searchsorted(xs, x, right=True).clamp(1, len(xs) - 1)
        x0, x1, y0, y1 = xs[j - 1], xs[j], ys[j - 1], ys[j]
        return (y0 + (y1 - y0) * (x - x0) / (x1 - x0)).to(lam.dtype)

    def __repr__(self) -> str:
        return f"PerceivedShare({str(self.path)!r}, mixer={self.mixer!r})"
