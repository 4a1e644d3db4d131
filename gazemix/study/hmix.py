"""Load the published H-Mix "infer the mixing factor" judgments (Collins et al., UAI 2023) into a study
database, so they can be reported and exported like any study built here."""

from __future__ import annotations

import os
from pathlib import Path

from data_adapters.hmix import read_hmix_inferences
from gazemix.study.db import init_db, transaction
from gazemix.study.store import ItemRecord, StudyInfo, add_items, create_study

__all__ = ["import_hmix"]


def import_hmix(root: str | os.PathLike, db: str | os.PathLike, *, name: str = "hmix-infer",
                images: str | os.PathLike | None = None) -> StudyInfo:
    """Create study ``name`` (mode ``infer``) from the H-Mix folder ``root``: items, annotators, the order
    each participant saw, and responses (one transaction). ``images``: an optional folder holding the
    ``mixed_*.png`` stimuli (not shipped with H-Mix's data); items without a PNG have no image path."""
    table = read_hmix_inferences(root)
    db = init_db(db)
    img_dir = Path(images) if images is not None else None
    if img_dir is not None and not img_dir.is_dir():
        raise FileNotFoundError(f"--images {img_dir} is not a folder")
    recs = []
    for it in table.items.itertuples(index=False):
        png = img_dir / it.key if img_dir is not None and (img_dir / it.key).is_file() else None
        recs.append(ItemRecord(key=it.key, class1=it.class1, class2=it.class2, lam=float(it.lam), mixer=it.mixer,
                               image_path=None if png is None else os.path.relpath(png, db.parent),
                               height=int(it.height), width=int(it.width), source1=it.source1, source2=it.source2,
                               params={"source": "H-Mix (cambridge-mlg/hill-mixup)", "rule": "lam*img1+(1-lam)*img2"},
                               choices=[it.class1, it.class2]))
    study = create_study(db, name, "infer", config={"data": "hmix", "source": str(root), "repeats": 0})
    add_items(db, study, recs)
    with transaction(db) as con:
        item_id = {r["key"]: r["id"] for r in con.execute("SELECT id, key FROM items WHERE study_id = ?", (study.id,))}
        ann_id = {}
        for ext in sorted(table.responses["annotator"].unique()):
            ann_id[ext] = con.execute("INSERT INTO annotators(study_id, external_id) VALUES (?, ?)",
                                      (study.id, ext)).lastrowid
        r = table.responses
        keys = list(zip(r["annotator"].map(ann_id), r["key"].map(item_id), r["repeat"], r["position"]))
        con.executemany("INSERT INTO assignments(annotator_id, position, item_id, repeat, left_is_image1, choice_order)"
                        " VALUES (?, ?, ?, ?, 1, '[]')", [(a, p, i, rep) for a, i, rep, p in keys])
        con.executemany(
            "INSERT INTO responses(annotator_id, item_id, repeat, position, weight1, confidence, slider, "
            "slider_start, left_is_image1, rt_ms, session) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
            [(a, i, rep, p, w, c, s, s0, rt, f"hmix-condition={cond}")
             for (a, i, rep, p), w, c, s, s0, rt, cond in zip(keys, r["weight1"], r["confidence"], r["slider"],
                                                              r["slider_start"], r["rt_ms"], r["condition"])])
    return study
