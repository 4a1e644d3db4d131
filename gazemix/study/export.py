"""Export a study to CSV: ``items.csv``, ``annotators.csv`` (with progress, consent and comprehension times and
the URL parameters they arrived with), ``responses.csv`` (one row per answer, with the annotator's id, the
item's key, mixer and weights; all weights relative to image 1) and ``events.csv`` (visits, consent,
practice answers, comprehension attempts). Text cells that a spreadsheet would run as a formula are
neutralised (:func:`gazemix.study.output.neutralise_formulas`) and every text cell is quoted (a bare carriage
return cannot split a row); the files are written whole or not at all.
The study's secret (the salt of its stimulus names) is never exported."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd

from gazemix.study.analysis import load_tables
from gazemix.study.db import connect
from gazemix.study.output import neutralise_formulas, output_folder

__all__ = ["export_csv"]

RESPONSE_COLUMNS = ["id", "annotator", "key", "mixer", "repeat", "position", "lam", "gaze_lam", "weight1",
                    "confidence", "slider", "slider_start", "slider_touched", "confidence_touched", "left_is_image1",
                    "choice1", "prob1", "choice2", "prob2", "clicks", "flags", "rt_ms", "session", "created_at",
                    "is_check"]


def export_csv(db: str | os.PathLike, out: str | os.PathLike, *, study: str | None = None) -> list[Path]:
    """Write the study's tables as CSV files into the folder ``out``; returns their final paths."""
    t = load_tables(db, study)
    con = connect(t.study["db"])
    try:
        annotators = pd.read_sql_query(
            "SELECT a.id, a.external_id, a.created_at, a.consented_at, a.qualified_at, a.url_params, "
            "(SELECT COUNT(*) FROM assignments s WHERE s.annotator_id = a.id) AS assigned, "
            "(SELECT COUNT(*) FROM responses r WHERE r.annotator_id = a.id) AS answered "
            "FROM annotators a WHERE a.study_id = ? ORDER BY a.id", con, params=(t.study["id"],))
        events = pd.read_sql_query(
            "SELECT e.id, a.external_id AS annotator, e.kind, e.detail, e.session, e.created_at FROM events e "
            "JOIN annotators a ON a.id = e.annotator_id WHERE a.study_id = ? ORDER BY e.id", con,
            params=(t.study["id"],))
    finally:
        con.close()
    tables = {"items": t.items, "annotators": annotators, "responses": t.responses[RESPONSE_COLUMNS],
              "events": events}
    with output_folder(out, "humans export") as tmp:
        for name, df in tables.items():
            neutralise_formulas(df).to_csv(tmp / f"{name}.csv", index=False, quoting=csv.QUOTE_NONNUMERIC)
    return [Path(out) / f"{name}.csv" for name in tables]
