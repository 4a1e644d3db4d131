"""Analyse a judgment study: human-perceived weight of image 1 vs the mixer's label weight vs the
gaze-derived weight, agreement between annotators, attention checks, consistency, and click maps vs gaze.

Conventions: every weight is the share of **image 1** (the mixer's own image); a *gap* is
``human - reference`` (positive: people see more of image 1 than the label gives it). The H-Mix summary
(Collins et al., UAI 2023, ``processed_hmix_inferences.json``) uses ``Re-Label Diff = lam - mean(human)``,
the negative of ``gap`` here, and ``Weighted Re-Label = mean(confidence * human)`` (a mean of products,
not a normalised weighted mean); ``per_item.csv`` reports both in H-Mix's own definitions.

Agreement is Krippendorff's alpha for interval data (Krippendorff, "Computing Krippendorff's
Alpha-Reliability", 2011) over first-pass answers, with a percentile bootstrap over items. Intervals of
per-mixer biases and the calibration bands are percentile bootstraps over *items* (answers on one item are
not independent), 95 %, :data:`N_BOOT` resamples with the report's seed.

In click studies the human weight of image 1 is the share of image 1 in the mixed picture at the pixels
people clicked (the mixer's per-pixel mask ``MixResult.mask``, stored at build time), averaged over an
answer's clicks: for region mixers (CutMix, ...) it says which source people found decisive; for blend
mixers (Mixup) it equals the blend weight everywhere and carries no information about people.
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
from gazemix.study.output import output_folder

__all__ = ["StudyTables", "agreement", "check_results", "click_vs_gaze", "consistency", "dropped_answers",
           "krippendorff_alpha_interval", "load_tables", "per_item", "per_lambda", "per_mixer", "summary_table",
           "write_report"]

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
            "i.is_check, i.check_answer, i.height, i.width, i.gaze_path, i.share_path FROM responses r "
            "JOIN annotators a ON a.id = r.annotator_id JOIN items i ON i.id = r.item_id "
            "WHERE i.study_id = ? ORDER BY r.id", con, params=(info.id,))
    finally:
        con.close()
    t = StudyTables({"id": info.id, "name": info.name, "title": info.title, "mode": info.mode,
                     "config": info.config, "db": str(db)}, items, responses)
    if info.mode == "click":
        _click_weights(t)
    return t


def _pixel(v: np.ndarray, n_out: int, n_in: int) -> np.ndarray:
    """Continuous pixel coordinates (centres at integers) of an ``n_in`` image → pixel indices of ``n_out``."""
    return np.clip(np.rint((v + 0.5) * n_out / n_in - 0.5).astype(int), 0, n_out - 1)


def _click_weights(t: StudyTables) -> None:
    """Fill ``weight1`` of click answers: the mean share of image 1 at the clicked pixels (see module docstring)."""
    r = t.responses
    root = Path(t.study["db"]).parent
    ok = r["clicks"].notna() & r["share_path"].notna()
    weights = pd.Series(np.nan, index=r.index)
    for path, g in r[ok].groupby("share_path"):
        share = np.load(root / path).astype(np.float64)
        h, w = share.shape
        for idx, row in g.iterrows():
            pts = np.asarray(json.loads(row["clicks"]), dtype=np.float64).reshape(-1, 2)
            weights[idx] = float(share[_pixel(pts[:, 1], h, row["height"]), _pixel(pts[:, 0], w, row["width"])].mean())
    r["weight1"] = weights.where(ok, r["weight1"])


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


def _why_no_alpha(groups: list[np.ndarray], t: StudyTables) -> str:
    pairable = [g for g in groups if len(g) >= 2]
    if not groups:
        return "no answers with a weight of image 1 yet"
    if not pairable:
        per = t.study["config"].get("items_per_annotator")
        return (f"no item was answered by two annotators (each of the {len(groups)} answered items has one answer); "
                "agreement needs items seen by at least two people" + (f": with {per} items per annotator of "
                                                                     f"{len(t.items)}, recruit more annotators" if per
                                                                     else ""))
    if len(pairable) < 2:
        return "only one item was answered by two annotators; alpha needs at least two such items"
    values = np.concatenate(pairable)
    if np.allclose(values, values[0]):
        return "every answer has the same value, so there is no variation to agree on (alpha is undefined)"
    return ""


def agreement(t: StudyTables, *, seed: int = 0) -> pd.DataFrame:
    """Alpha on the weight of image 1 (first-pass answers of regular items), overall and per mixer; ``reason``
    says why alpha is missing when it cannot be computed."""
    r = t.responses[(t.responses["repeat"] == 0) & (t.responses["is_check"] == 0) & t.responses["weight1"].notna()]
    rows = []
    for scope, sub in [("all", r)] + [(m, g) for m, g in r.groupby("mixer")]:
        groups = [g.to_numpy() for _, g in sub.groupby("item_id")["weight1"]]
        pairable = [g for g in groups if len(g) >= 2]
        alpha, lo, hi = krippendorff_alpha_interval(groups, seed=seed)
        reason = _why_no_alpha(groups, t) if np.isnan(alpha) else ""
        rows.append({"scope": scope, "n_items": len(pairable), "n_values": int(sum(len(g) for g in pairable)),
                     "alpha": alpha, "alpha_lo": lo, "alpha_hi": hi, "reason": reason})
    return pd.DataFrame(rows, columns=["scope", "n_items", "n_values", "alpha", "alpha_lo", "alpha_hi", "reason"])


def dropped_answers(t: StudyTables) -> dict[str, int]:
    """How many answers the weight tables leave out, by reason (zero counts omitted)."""
    r = t.responses
    flags = r["flags"].fillna("")
    missing = flags.str.contains("stimulus_missing")
    reasons = {
        "attention check (scored in checks.csv instead)": int((r["is_check"] == 1).sum()),
        "picture missing on the server (skipped by the app)": int((missing & (r["is_check"] == 0)).sum()),
    }
    rest = r[(r["is_check"] == 0) & ~missing & r["weight1"].isna()]
    if t.study["mode"] == "softlabel":
        reasons["soft label names neither source class (weight of image 1 undefined)"] = len(rest)
    elif t.study["mode"] == "click":
        reasons["click item without a stored share map (built before share maps)"] = len(rest)
    else:
        reasons["no weight of image 1 stored"] = len(rest)
    return {k: v for k, v in reasons.items() if v}


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


def _item_bootstrap(d: pd.Series, items: pd.Series, seed: int) -> tuple[float, float]:
    """95 % percentile interval of the mean of ``d`` when whole items are resampled."""
    if d.empty or items.nunique() < 2:
        return np.nan, np.nan
    sums = d.groupby(items).sum().to_numpy()
    counts = d.groupby(items).size().to_numpy()
    idx = np.random.default_rng(seed).integers(0, len(sums), size=(N_BOOT, len(sums)))
    boots = sums[idx].sum(1) / counts[idx].sum(1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return float(lo), float(hi)


PER_MIXER_COLUMNS = {
    "mixer": "the mixer that made the items",
    "n_items": "items with at least one usable answer",
    "n": "answers used (first passes and repeats; attention checks and dropped answers left out)",
    "human_mean": "mean human weight of image 1 (slider, soft-label share, or clicked share of image 1)",
    "label_mean": "mean label weight the mixer gives image 1 (lam)",
    "gaze_mean": "mean gaze-derived weight of image 1: share of the replayed gaze mass it keeps (empty without gaze)",
    "mae_label": "mean |human - label| over answers",
    "bias_label": "mean (human - label): positive when people see more of image 1 than the label gives it",
    "bias_label_lo": "lower end of the 95 % item-bootstrap interval of bias_label",
    "bias_label_hi": "upper end of that interval",
    "r_label": "Pearson correlation of human and label weights over answers",
    "mae_gaze": "mean |human - gaze| over answers",
    "bias_gaze": "mean (human - gaze)",
    "bias_gaze_lo": "lower end of the 95 % item-bootstrap interval of bias_gaze",
    "bias_gaze_hi": "upper end of that interval",
    "r_gaze": "Pearson correlation of human and gaze weights",
    "flagged": "answers with a quality flag (e.g. confidence slider untouched), kept",
    "rt_median_ms": "median response time in milliseconds",
    "nss_mean": "click studies: mean NSS of the gaze map at the clicks (0 = chance; higher: clicks where gaze was)",
    "auc_judd_mean": "click studies: mean AUC-Judd of the gaze map for the clicks (0.5 = chance, 1 = perfect)",
}


def per_mixer(t: StudyTables, *, seed: int = 0, clicks: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per mixer: human weight vs label weight vs gaze-derived weight (answer level; NaN without gaze), with
    item-bootstrap intervals of the biases; click studies add the click metrics of :func:`click_vs_gaze`.
    Columns are described in :data:`PER_MIXER_COLUMNS`."""
    r = _regular(t)
    rows = []
    for mixer, g in r.groupby("mixer"):
        row = {"mixer": mixer, "n_items": g["item_id"].nunique(), "n": len(g), "human_mean": g["weight1"].mean(),
               "label_mean": g["lam"].mean(), "gaze_mean": g["gaze_lam"].mean()}
        for ref in ("lam", "gaze_lam"):
            name = "label" if ref == "lam" else "gaze"
            ok = g[[ref, "weight1", "item_id"]].dropna()
            d = ok["weight1"] - ok[ref]
            row[f"mae_{name}"] = d.abs().mean() if len(d) else np.nan
            row[f"bias_{name}"] = d.mean() if len(d) else np.nan
            row[f"bias_{name}_lo"], row[f"bias_{name}_hi"] = _item_bootstrap(d, ok["item_id"], seed)
            row[f"r_{name}"] = ok[ref].corr(ok["weight1"]) if len(ok) > 2 and ok[ref].std() > 0 else np.nan
        row["flagged"] = int((g["flags"].fillna("") != "").sum())
        row["rt_median_ms"] = g["rt_ms"].median()
        if clicks is not None:
            c = clicks[clicks["mixer"] == mixer]
            row["nss_mean"] = c["nss"].mean() if len(c) else np.nan
            row["auc_judd_mean"] = c["auc_judd"].mean() if len(c) else np.nan
        rows.append(row)
    cols = [c for c in PER_MIXER_COLUMNS if clicks is not None or c not in ("nss_mean", "auc_judd_mean")]
    return pd.DataFrame(rows, columns=cols)


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
    return any(x1 - 0.5 <= x < x2 - 0.5 and y1 - 0.5 <= y < y2 - 0.5 for x, y in json.loads(row["clicks"]))


def check_results(t: StudyTables) -> pd.DataFrame:
    """Every attention-check answer with ``passed`` (infer: within 0.25 of the known weight; soft label:
    the true class first; click: a click inside the object's box)."""
    r = t.responses[(t.responses["is_check"] == 1) & ~t.responses["flags"].fillna("").str.contains("stimulus_missing")]
    r = r.copy()
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
        xs = _pixel(pts[:, 0], w, g["width"].iloc[0])
        ys = _pixel(pts[:, 1], h, g["height"].iloc[0])
        counts = np.bincount(ys * w + xs, minlength=h * w).reshape(h, w).astype(np.float64)
        clickmap = gaussian_filter(counts, sigma=sigma_frac * max(h, w))
        rows.append({"item_id": item_id, "key": g["key"].iloc[0], "mixer": g["mixer"].iloc[0], "n_clicks": len(pts),
                     "nss": float(nss(gaze, counts)), "auc_judd": float(auc_judd(gaze, counts)),
                     "cc": float(cc(clickmap, gaze)), "sim": float(sim(clickmap, gaze))})
    return pd.DataFrame(rows, columns=["item_id", "key", "mixer", "n_clicks", "nss", "auc_judd", "cc", "sim"])


# ----------------------------------------------------------------------------------------- report
def _calibration_png(items: pd.DataFrame, path: Path, *, title: str, seed: int) -> None:
    """Human weight (item means) against each reference, per mixer, in 10 bins of the reference, with 95 %
    bootstrap bands over the items of each bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refs = [("lam", "mixer label weight of image 1")]
    if items["gaze_lam"].notna().any():
        refs.append(("gaze_lam", "gaze-derived weight of image 1"))
    fig, axes = plt.subplots(1, len(refs), figsize=(5.2 * len(refs), 5), squeeze=False)
    bins = np.linspace(0, 1, 11)
    rng = np.random.default_rng(seed)
    for ax, (ref, label) in zip(axes[0], refs):
        for k, (mixer, g) in enumerate(items.dropna(subset=[ref, "human_mean"]).groupby("mixer")):
            b = np.clip(np.digitize(g[ref], bins) - 1, 0, 9)
            xs, ys, lo, hi = [], [], [], []
            for _, part in g.groupby(b):
                y = part["human_mean"].to_numpy()
                xs.append(part[ref].mean())
                ys.append(y.mean())
                boots = y[rng.integers(0, len(y), size=(N_BOOT, len(y)))].mean(1) if len(y) > 1 else np.array([np.nan])
                lo.append(np.nanquantile(boots, 0.025) if len(y) > 1 else np.nan)
                hi.append(np.nanquantile(boots, 0.975) if len(y) > 1 else np.nan)
            colour = f"C{k}"
            ax.plot(xs, ys, marker="o", color=colour, label=f"{mixer} ({len(g)} items)")
            ax.fill_between(xs, lo, hi, color=colour, alpha=0.2, lw=0)
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="human = reference")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=label, ylabel="human-perceived weight of image 1 (item mean)")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.text(0.5, 0.005, "bands: 95 % bootstrap over the items of each bin (a bin of one item has none)",
             ha="center", fontsize=7, color="0.4")
    fig.tight_layout(rect=(0, 0.02, 1, 0.95))
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


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def summary_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The per-mixer table shown in the terminal and in ``summary.md``: headers and rows."""
    click = summary["mode"] == "click"
    headers = ["mixer", "items", "n", "human", "label", "gaze", "|h-label|", "bias [95% CI]", "|h-gaze|"]
    headers += ["NSS", "AUC"] if click else []
    rows = []
    for m in summary["per_mixer"]:
        ci = f"{_fmt(m['bias_label'], '+.3f')} [{_fmt(m['bias_label_lo'], '+.3f')}, {_fmt(m['bias_label_hi'], '+.3f')}]"
        row = [m["mixer"], str(m["n_items"]), str(m["n"]), _fmt(m["human_mean"]), _fmt(m["label_mean"]),
               _fmt(m["gaze_mean"]), _fmt(m["mae_label"]), ci, _fmt(m["mae_gaze"])]
        row += [_fmt(m.get("nss_mean")), _fmt(m.get("auc_judd_mean"))] if click else []
        rows.append(row)
    return headers, rows


def _markdown(summary: dict[str, Any]) -> str:
    s = summary
    headers, rows = summary_table(summary)
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731 - |h-label| must not split a markdown cell
    table = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)] + [
        "| " + " | ".join(map(cell, r)) + " |" for r in rows]
    checks = s["attention_checks"]
    lines = [f"# {s['title']} — human judgments", "",
             f"- study `{s['study']}` ({s['mode']} mode): {s['n_responses']} answers from {s['n_annotators']} "
             f"annotators on {s['n_items']} items",
             "- every weight is the share of **image 1** (the mixer's own image) in [0, 1]", "",
             "## Per mixer", "", *table, "",
             "| column | meaning |", "|---|---|"]
    click = s["mode"] == "click"
    names = {"items": "n_items", "human": "human_mean", "label": "label_mean", "gaze": "gaze_mean",
             "|h-label|": "mae_label", "bias [95% CI]": "bias_label", "|h-gaze|": "mae_gaze", "NSS": "nss_mean",
             "AUC": "auc_judd_mean"}
    for col in ["mixer", "items", "n", "human", "label", "gaze", "|h-label|", "bias [95% CI]", "|h-gaze|"] + (
            ["NSS", "AUC"] if click else []):
        meaning = PER_MIXER_COLUMNS[names.get(col, col)]
        if col == "bias [95% CI]":
            meaning += "; in brackets its 95 % item-bootstrap interval (an interval containing 0: within noise)"
        lines.append(f"| {cell(col)} | {cell(meaning)} |")
    lines += ["", "`per_mixer.csv` has every column above plus the gaze-side intervals, correlations, flags and "
              "response times.", "", "## Answers left out", ""]
    lines += [f"- {k}: {v}" for k, v in s["dropped"].items()] or ["- none"]
    lines += ["", "## Agreement (Krippendorff's alpha, interval, first passes)", ""]
    for a in s["agreement"]:
        if a["alpha"] is None:
            lines.append(f"- {a['scope']}: not computed — {a['reason']}")
        else:
            lines.append(f"- {a['scope']}: alpha {a['alpha']:.3f} [{_fmt(a['alpha_lo'])}, {_fmt(a['alpha_hi'])}] "
                         f"on {a['n_items']} items seen by two or more annotators")
    lines += ["", "## Attention checks", ""]
    lines.append(f"- {checks['n']} answers, pass rate {_fmt(checks['pass_rate'], '.2f')}, {len(checks['failed'])} "
                 "failed" if checks["n"] else "- none answered")
    if "click_vs_gaze" in s:
        cg = s["click_vs_gaze"]
        lines += ["", "## Clicks vs gaze", "",
                  f"- {cg['n_items']} items: NSS {_fmt(cg['nss_mean'])}, AUC-Judd {_fmt(cg['auc_judd_mean'])}, "
                  f"CC {_fmt(cg['cc_mean'])}, SIM {_fmt(cg['sim_mean'])} (means over items; `click_vs_gaze.csv`)"]
    if s.get("has_calibration"):
        lines += ["", "![calibration](calibration.png)"]
    return "\n".join(lines) + "\n"


def write_report(db: str | os.PathLike, out: str | os.PathLike, *, study: str | None = None, seed: int = 0
                 ) -> dict[str, Any]:
    """Write ``per_item.csv``, ``per_lambda.csv``, ``per_mixer.csv``, ``agreement.csv``, ``consistency.csv``,
    ``checks.csv``, ``click_vs_gaze.csv`` (click studies), ``calibration.png``, ``summary.md`` and
    ``summary.json`` to ``out`` — all of them or none (see :func:`gazemix.study.output.output_folder`);
    returns the summary."""
    t = load_tables(db, study)
    items = per_item(t)
    clicks = click_vs_gaze(t) if t.study["mode"] == "click" else None
    tables = {"per_item": items, "per_lambda": per_lambda(t), "per_mixer": per_mixer(t, seed=seed, clicks=clicks),
              "agreement": agreement(t, seed=seed), "consistency": consistency(t), "checks": check_results(t)}
    if clicks is not None:
        tables["click_vs_gaze"] = clicks
    checks = tables["checks"]
    failed = checks[~checks["passed"]] if len(checks) else checks
    n_ann = int(t.responses["annotator_id"].nunique())
    summary = {
        "study": t.study["name"], "title": t.study["title"], "mode": t.study["mode"], "n_items": int(len(t.items)),
        "n_annotators": n_ann, "n_responses": int(len(t.responses)),
        "attention_checks": {
            "n": int(len(checks)), "pass_rate": float(checks["passed"].mean()) if len(checks) else None,
            "failed": [{"annotator": a, "item": k} for a, k in zip(failed["annotator"], failed["key"])]},
        "dropped": dropped_answers(t),
        "per_mixer": tables["per_mixer"].to_dict(orient="records"),
        "agreement": tables["agreement"].to_dict(orient="records"),
        "has_calibration": bool(len(items)),
    }
    if clicks is not None:
        summary["click_vs_gaze"] = {"n_items": int(len(clicks)), **{
            f"{m}_mean": float(clicks[m].mean()) if len(clicks) else None for m in ("nss", "auc_judd", "cc", "sim")}}
    summary = _plain(summary)
    with output_folder(out, "humans report") as tmp:
        for name, df in tables.items():
            df.to_csv(tmp / f"{name}.csv", index=False)
        if len(items):
            _calibration_png(items, tmp / "calibration.png", seed=seed,
                             title=f"{t.study['title']}: human vs reference weight of image 1\n{n_ann} annotators, "
                                   f"{int(items['n'].sum())} answers on {len(items)} items ({t.study['mode']} mode)")
        (tmp / "summary.md").write_text(_markdown(summary), encoding="utf-8")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
