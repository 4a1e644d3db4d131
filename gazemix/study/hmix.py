"""Load the published H-Mix judgments (Collins et al., UAI 2023) into a study database, so they can be
reported and exported like any study built here: "infer the mixing factor" (sliders) and the categorical
soft labels (endpoints hidden)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from data_adapters.hmix import CIFAR10_CLASSES, read_hmix_inferences, read_hmix_soft_labels
from gazemix.study.db import init_db, transaction
from gazemix.study.store import ItemRecord, StudyInfo, add_items, create_study

__all__ = ["import_hmix"]


_RESPONSE_COLUMNS = ("weight1", "confidence", "slider", "slider_start", "left_is_image1", "choice1", "prob1",
                     "choice2", "prob2", "excluded", "rt_ms")


def import_hmix(root: str | os.PathLike, db: str | os.PathLike, *, task: str = "infer", name: str | None = None,
                images: str | os.PathLike | None = None) -> StudyInfo:
    """Create a study from the H-Mix folder ``root``: items, annotators, the order each participant saw,
    and responses (one transaction).

    Args:
        task: ``infer`` (``hmix_infer_mixing_factor.csv``, a study in mode ``infer``) or ``softlabel``
            (``hmix_categorical_soft_labels.csv``, mode ``softlabel``, the 10 CIFAR-10 classes offered).
        name: study name (default ``hmix-<task>``).
        images: an optional folder holding the ``mixed_*.png`` stimuli (not shipped with H-Mix's data);
            items without a PNG have no image path.
    """
    if task not in ("infer", "softlabel"):
        raise ValueError(f"--task must be infer or softlabel, got {task!r}")
    table = read_hmix_inferences(root) if task == "infer" else read_hmix_soft_labels(root)
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
                               choices=[it.class1, it.class2] if task == "infer" else list(CIFAR10_CLASSES)))
    study = create_study(db, name or f"hmix-{task}", task,
                         config={"data": "hmix", "task": task, "source": str(root), "repeats": 0})
    add_items(db, study, recs)
    r = table.responses.copy()
    if "excluded" in r:
        r["excluded"] = r["excluded"].map(json.dumps)
    cols = [c for c in _RESPONSE_COLUMNS if c in r]
    with transaction(db) as con:
        item_id = {row["key"]: row["id"] for row in con.execute("SELECT id, key FROM items WHERE study_id = ?",
                                                                (study.id,))}
        ann_id = {ext: con.execute("INSERT INTO annotators(study_id, external_id) VALUES (?, ?)",
                                   (study.id, ext)).lastrowid for ext in sorted(r["annotator"].unique())}
        keys = list(zip(r["annotator"].map(ann_id), r["key"].map(item_id), r["repeat"], r["position"]))
        con.executemany("INSERT INTO assignments(annotator_id, position, item_id, repeat, left_is_image1, choice_order)"
                        " VALUES (?, ?, ?, ?, 1, '[]')", [(a, p, i, rep) for a, i, rep, p in keys])
        values = zip(*(r[c].astype(object).where(r[c].notna(), None) for c in cols))
        con.executemany(
            f"INSERT INTO responses(annotator_id, item_id, repeat, position, session, {', '.join(cols)}) "
            f"VALUES ({', '.join('?' * (5 + len(cols)))})",
            [(a, i, rep, p, f"hmix-condition={cond}", *v) for (a, i, rep, p), cond, v in zip(keys, r["condition"], values)])
    return study
