"""Analyse a judgment study: human-perceived weight of image 1 vs the mixer's label weight vs the
gaze-derived weight, agreement between annotators, attention checks, consistency, and click maps vs gaze.

Conventions: every weight is the share of **image 1** (the mixer's own image); a *gap* is
``human - reference`` (positive: people see more of image 1 than the label gives it). The H-Mix summary
(Collins et al., UAI 2023, ``processed_hmix_inferences.json``) uses ``Re-Label Diff = lam - mean(human)``,
the negative of ``gap`` here, and ``Weighted Re-Label = mean(confidence * human)`` (a mean of products,
not a normalised weighted mean); ``per_item.csv`` reports both in H-Mix's own definitions.

Agreement is Krippendorff's alpha for interval data (Krippendorff, "Computing Krippendorff's
Alpha-Reliability", 2011) over first-pass answers, with a percentile bootstrap over items.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from gazemix.study.db import connect, open_existing

__all__ = ["StudyTables", "agreement", "check_results", "click_vs_gaze", "consistency", "krippendorff_alpha_interval",
           "load_tables", "per_item", "per_lambda", "per_mixer", "write_report"]

N_BOOT = 500
INFER_TOLERANCE = 0.25


@dataclass
class StudyTables:
    """A study's rows as pandas tables (``responses`` joined with item and annotator columns)."""

    study: dict[str, Any]
    items: pd.DataFrame
    responses: pd.DataFrame


def load_tables(db: str | os.PathLike, study: str | None = None) -> StudyTables:
    """Read one study (by name; the only one when ``study`` is None) from the database."""
    from gazemix.study.store import get_study

    db = open_existing(db)
    info = get_study(db, study)
    con = connect(db)
    try:
        items = pd.read_sql_query("SELECT * FROM items WHERE study_id = ?", con, params=(info.id,))
        responses = pd.read_sql_query(
            "SELECT r.*, a.external_id AS annotator, i.key, i.mixer, i.lam, i.gaze_lam, i.class1, i.class2, "
            "i.is_check, i.check_answer, i.height, i.width, i.gaze_path FROM responses r "
            "JOIN annotators a ON a.id = r.annotator_id JOIN items i ON i.id = r.item_id "
            "WHERE i.study_id = ? ORDER BY r.id", con, params=(info.id,))
    finally:
        con.close()
    return StudyTables({"id": info.id, "name": info.name, "mode": info.mode, "config": info.config,
                        "db": str(db)}, items, responses)


# ----------------------------------------------------------------------------------------- agreement
def _alpha_parts(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    m = np.array([len(g) for g in groups], dtype=np.float64)
    s1 = np.array([g.sum() for g in groups])
    s2 = np.array([(g * g).sum() for g in groups])
    # sum over ordered pairs i != j of (a_i - a_j)^2 = 2 (m S2 - S1^2), divided by m - 1 (Krippendorff's D_o)
    do = 2.0 * (m * s2 - s1 * s1) / (m - 1.0)
    return m, s1, s2, do


def _alpha_from(m: np.ndarray, s1: np.ndarray, s2: np.ndarray, do: np.ndarray) -> np.ndarray:
    n = m.sum(-1)
    t1, t2 = s1.sum(-1), s2.sum(-1)
    de = 2.0 * (n * t2 - t1 * t1) / (n * (n - 1.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(de > 0, 1.0 - (do.sum(-1) / n) / np.where(de > 0, de, 1.0), np.nan)


def krippendorff_alpha_interval(groups: list[np.ndarray], *, n_boot: int = N_BOOT, seed: int = 0
                                ) -> tuple[float, float, float]:
    """Krippendorff's alpha (interval metric) and a 95 % bootstrap interval over units.

    ``groups``: one array of values per unit (item); units with fewer than 2 values are not pairable and
    are dropped. ``alpha = 1 - D_o / D_e`` with ``D_o = (1/n) sum_u sum_{i != j} (v_ui - v_uj)^2 / (m_u - 1)``
    and ``D_e = sum_{i != j} (v_i - v_j)^2 / (n (n - 1))`` over all ``n`` pairable values. 1 is perfect
    agreement, 0 agreement at chance, negative systematic disagreement. Returns NaNs when undefined.
    """
    groups = [np.asarray(g, dtype=np.float64) for g in groups if len(g) >= 2]
    if len(groups) < 2:
        return float("nan"), float("nan"), float("nan")
    m, s1, s2, do = _alpha_parts(groups)
    alpha = float(_alpha_from(m, s1, s2, do))
    idx = np.random.default_rng(seed).integers(0, len(groups), size=(n_boot, len(groups)))
    boots = _alpha_from(m[idx], s1[idx], s2[idx], do[idx])
    boots = boots[~np.isnan(boots)]
    if boots.size == 0:
        return alpha, float("nan"), float("nan")
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return alpha, float(lo), float(hi)


def agreement(t: StudyTables, *, seed: int = 0) -> pd.DataFrame:
    """Alpha on the weight of image 1 (first-pass answers of regular items), overall and per mixer."""
    r = t.responses[(t.responses["repeat"] == 0) & (t.responses["is_check"] == 0) & t.responses["weight1"].notna()]
    rows = []
    for scope, sub in [("all", r)] + [(m, g) for m, g in r.groupby("mixer")]:
        groups = [g.to_numpy() for _, g in sub.groupby("item_id")["weight1"]]
        pairable = [g for g in groups if len(g) >= 2]
        alpha, lo, hi = krippendorff_alpha_interval(groups, seed=seed)
        rows.append({"scope": scope, "n_items": len(pairable), "n_values": int(sum(len(g) for g in pairable)),
                     "alpha": alpha, "alpha_lo": lo, "alpha_hi": hi})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------- weights
def _regular(t: StudyTables) -> pd.DataFrame:
    r = t.responses
    return r[(r["is_check"] == 0) & r["weight1"].notna()].copy()


def per_item(t: StudyTables) -> pd.DataFrame:
    """One row per item: ``n``, ``human_mean``, ``human_std`` (population), ``confidence_mean``, ``gap``
    (human - lam), and H-Mix's ``relabel_diff`` (lam - human) and ``weighted_relabel`` (mean conf*human)."""
    r = _regular(t)
    r["conf_x_w"] = r["confidence"] * r["weight1"]
    g = r.groupby("item_id")
    out = g.agg(key=("key", "first"), mixer=("mixer", "first"), lam=("lam", "first"), gaze_lam=("gaze_lam", "first"),
                n=("weight1", "size"), human_mean=("weight1", "mean"), human_median=("weight1", "median"),
                human_std=("weight1", lambda x: float(np.std(x))), confidence_mean=("confidence", "mean"),
                weighted_relabel=("conf_x_w", "mean")).reset_index()
    out["gap"] = out["human_mean"] - out["lam"]
    out["relabel_diff"] = out["lam"] - out["human_mean"]
    out["gaze_gap"] = out["human_mean"] - out["gaze_lam"]
    return out


def per_lambda(t: StudyTables) -> pd.DataFrame:
    """One row per label weight ``lam`` (all answers, repeats included, as H-Mix's processed file):
    ``n`` answers, ``n_items``, ``human_mean``, ``human_median``, ``gap_mean`` (mean human - lam),
    ``abs_gap_mean`` and ``confidence_mean``."""
    r = _regular(t)
    r["lam"] = r["lam"].round(6)
    r["gap"] = r["weight1"] - r["lam"]
    r["abs_gap"] = r["gap"].abs()
    return (r.groupby("lam").agg(n=("weight1", "size"), n_items=("item_id", "nunique"),
                                 human_mean=("weight1", "mean"), human_median=("weight1", "median"),
                                 gap_mean=("gap", "mean"), abs_gap_mean=("abs_gap", "mean"),
                                 confidence_mean=("confidence", "mean")).reset_index())


def per_mixer(t: StudyTables) -> pd.DataFrame:
    """Per mixer: human weight vs label weight vs gaze-derived weight (answer level; NaN without gaze)."""
    r = _regular(t)
    rows = []
    for mixer, g in r.groupby("mixer"):
        row = {"mixer": mixer, "n_items": g["item_id"].nunique(), "n": len(g), "human_mean": g["weight1"].mean(),
               "label_mean": g["lam"].mean(), "gaze_mean": g["gaze_lam"].mean()}
        for ref in ("lam", "gaze_lam"):
            name = "label" if ref == "lam" else "gaze"
            d = (g["weight1"] - g[ref]).dropna()
            row[f"mae_{name}"] = d.abs().mean() if len(d) else np.nan
            row[f"bias_{name}"] = d.mean() if len(d) else np.nan
            ok = g[[ref, "weight1"]].dropna()
            row[f"r_{name}"] = ok[ref].corr(ok["weight1"]) if len(ok) > 2 and ok[ref].std() > 0 else np.nan
        row["flagged"] = int((g["flags"].fillna("") != "").sum())
        row["rt_median_ms"] = g["rt_ms"].median()
        rows.append(row)
    return pd.DataFrame(rows)


def consistency(t: StudyTables) -> pd.DataFrame:
    """Repeated trials: per mixer, mean absolute difference between first and repeated answers."""
    r = _regular(t)
    both = r[r["repeat"] == 0].merge(r[r["repeat"] == 1], on=["annotator_id", "item_id"], suffixes=("", "_rep"))
    if both.empty:
        return pd.DataFrame(columns=["mixer", "n_pairs", "mean_abs_diff"])
    both["d"] = (both["weight1"] - both["weight1_rep"]).abs()
    return both.groupby("mixer").agg(n_pairs=("d", "size"), mean_abs_diff=("d", "mean")).reset_index()


# ----------------------------------------------------------------------------------- attention checks
def _passed(row: pd.Series, mode: str) -> bool:
    ans = json.loads(row["check_answer"] or "{}")
    if mode == "infer":
        return abs(float(row["weight1"]) - float(ans["weight1"])) <= float(ans.get("tolerance", INFER_TOLERANCE))
    if mode == "softlabel":
        return row["choice1"] == ans["class"]
    y1, x1, y2, x2 = ans["box"]
    return any(x1 <= x < x2 and y1 <= y < y2 for x, y in json.loads(row["clicks"]))


def check_results(t: StudyTables) -> pd.DataFrame:
    """Every attention-check answer with ``passed`` (infer: within 0.25 of the known weight; soft label:
    the true class first; click: a click inside the object's box)."""
    r = t.responses[t.responses["is_check"] == 1].copy()
    r["passed"] = [bool(_passed(row, t.study["mode"])) for _, row in r.iterrows()]
    return r[["annotator", "key", "repeat", "weight1", "choice1", "clicks", "passed"]]


# ------------------------------------------------------------------------------------- click maps
def click_vs_gaze(t: StudyTables, *, sigma_frac: float = 0.05) -> pd.DataFrame:
    """Per item with clicks and a gaze map, the saliency metrics of :mod:`gazemix.metrics`: how well the
    replayed gaze map predicts the clicks (``nss``, ``auc_judd``), and how the click map (clicks blurred with
    a Gaussian of ``sigma_frac`` x image side) compares with the gaze map (``cc``, ``sim``)."""
    from gazemix.metrics import auc_judd, cc, nss, sim

    r = t.responses[t.responses["clicks"].notna() & t.responses["gaze_path"].notna() & (t.responses["is_check"] == 0)]
    root = Path(t.study["db"]).parent
    rows = []
    for item_id, g in r.groupby("item_id"):
        gaze = np.load(root / g["gaze_path"].iloc[0]).astype(np.float64)
        pts = np.array([p for c in g["clicks"] for p in json.loads(c)], dtype=np.float64)
        h, w = gaze.shape
        xs = np.clip(np.rint(pts[:, 0] * w / g["width"].iloc[0]).astype(int), 0, w - 1)
        ys = np.clip(np.rint(pts[:, 1] * h / g["height"].iloc[0]).astype(int), 0, h - 1)
        counts = np.bincount(ys * w + xs, minlength=h * w).reshape(h, w).astype(np.float64)
        clickmap = gaussian_filter(counts, sigma=sigma_frac * max(h, w))
        rows.append({"item_id": item_id, "key": g["key"].iloc[0], "mixer": g["mixer"].iloc[0], "n_clicks": len(pts),
                     "nss": float(nss(gaze, counts)), "auc_judd": float(auc_judd(gaze, counts)),
                     "cc": float(cc(clickmap, gaze)), "sim": float(sim(clickmap, gaze))})
    return pd.DataFrame(rows, columns=["item_id", "key", "mixer", "n_clicks", "nss", "auc_judd", "cc", "sim"])


# ----------------------------------------------------------------------------------------- report
def _calibration_png(items: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refs = [("lam", "mixer label weight of image 1")]
    if items["gaze_lam"].notna().any():
        refs.append(("gaze_lam", "gaze-derived weight of image 1"))
    fig, axes = plt.subplots(1, len(refs), figsize=(5 * len(refs), 4.5), squeeze=False)
    bins = np.linspace(0, 1, 11)
    for ax, (ref, label) in zip(axes[0], refs):
        for mixer, g in items.dropna(subset=[ref]).groupby("mixer"):
            b = np.clip(np.digitize(g[ref], bins) - 1, 0, 9)
            s = g.groupby(b).agg(x=(ref, "mean"), y=("human_mean", "mean"), n=("human_mean", "size"))
            ax.plot(s["x"], s["y"], marker="o", label=f"{mixer} ({len(g)} items)")
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=label, ylabel="human-perceived weight of image 1 (item mean)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plain(x: Any) -> Any:
    """JSON-safe copy: NaN becomes null, numpy scalars Python numbers."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if np.isnan(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_report(db: str | os.PathLike, out: str | os.PathLike, *, study: str | None = None, seed: int = 0
                 ) -> dict[str, Any]:
    """Write ``per_item.csv``, ``per_lambda.csv``, ``per_mixer.csv``, ``agreement.csv``, ``consistency.csv``,
    ``checks.csv``, ``click_vs_gaze.csv`` (click studies), ``calibration.png`` and ``summary.json`` to ``out``;
    returns the summary."""
    t = load_tables(db, study)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items = per_item(t)
    tables = {"per_item": items, "per_lambda": per_lambda(t), "per_mixer": per_mixer(t), "agreement": agreement(t, seed=seed),
              "consistency": consistency(t), "checks": check_results(t)}
    if t.study["mode"] == "click":
        tables["click_vs_gaze"] = click_vs_gaze(t)
    for name, df in tables.items():
        df.to_csv(out / f"{name}.csv", index=False)
    if len(items):
        _calibration_png(items, out / "calibration.png")
    checks = tables["checks"]
    failed = checks[~checks["passed"]] if len(checks) else checks
    summary = {
        "study": t.study["name"], "mode": t.study["mode"], "n_items": int(len(t.items)),
        "n_annotators": int(t.responses["annotator_id"].nunique()), "n_responses": int(len(t.responses)),
        "attention_checks": {"n": int(len(checks)), "pass_rate": float(checks["passed"].mean()) if len(checks) else None,
                             "failed": [{"annotator": a, "item": k} for a, k in zip(failed["annotator"], failed["key"])]},
        "per_mixer": tables["per_mixer"].to_dict(orient="records"),
        "agreement": tables["agreement"].to_dict(orient="records"),
    }
    if "click_vs_gaze" in tables:
        cg = tables["click_vs_gaze"]
        summary["click_vs_gaze"] = {"n_items": int(len(cg)), **{f"{m}_mean": float(cg[m].mean()) if len(cg) else None
                                                                for m in ("nss", "auc_judd", "cc", "sim")}}
    summary = _plain(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
