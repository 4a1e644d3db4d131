"""Export a study to CSV: ``items.csv``, ``annotators.csv`` (with progress) and ``responses.csv`` (one row
per answer, with the annotator's id, the item's key, mixer and weights; all weights relative to image 1)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from gazemix.study.analysis import load_tables
from gazemix.study.db import connect

__all__ = ["export_csv"]


def export_csv(db: str | os.PathLike, out: str | os.PathLike, *, study: str | None = None) -> list[Path]:
    """Write the study's tables as CSV files into ``out``; returns their paths."""
    t = load_tables(db, study)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    con = connect(t.study["db"])
    try:
        annotators = pd.read_sql_query(
            "SELECT a.id, a.external_id, a.created_at, (SELECT COUNT(*) FROM assignments s WHERE s.annotator_id = a.id) "
            "AS assigned, (SELECT COUNT(*) FROM responses r WHERE r.annotator_id = a.id) AS answered "
            "FROM annotators a WHERE a.study_id = ? ORDER BY a.id", con, params=(t.study["id"],))
    finally:
        con.close()
    cols = ["id", "annotator", "key", "mixer", "repeat", "position", "lam", "gaze_lam", "weight1", "confidence",
            "slider", "slider_start", "slider_touched", "confidence_touched", "left_is_image1", "choice1", "prob1",
            "choice2", "prob2", "clicks", "flags", "rt_ms", "session", "created_at", "is_check"]
    paths = []
    for name, df in (("items", t.items), ("annotators", annotators), ("responses", t.responses[cols])):
        paths.append(out / f"{name}.csv")
        df.to_csv(paths[-1], index=False)
    return paths
