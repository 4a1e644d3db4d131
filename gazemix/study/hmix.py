"""Load the published H-Mix judgments (Collins et al., UAI 2023) into a study database, so they can be
reported and exported like any study built here: "infer the mixing factor" (sliders) and the categorical
soft labels (endpoints hidden). With the ``mixed_*.png`` stimuli (``images=``), which H-Mix's data do not
ship, the imported study can also be served to new annotators by ``gazemix app``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from PIL import Image

from data_adapters.hmix import CIFAR10_CLASSES, read_hmix_inferences, read_hmix_soft_labels
from gazemix.study import protocol
from gazemix.study.db import StudyInputError, init_db
from gazemix.study.media import StudyMedia
from gazemix.study.store import ItemRecord, StudyInfo, check_study_name, check_study_target, create_study

__all__ = ["import_hmix"]


_RESPONSE_COLUMNS = ("weight1", "confidence", "slider", "slider_start", "left_is_image1", "choice1", "prob1",
                     "choice2", "prob2", "excluded", "rt_ms")


def _stimuli(img_dir: Path, keys: list[str]) -> dict[str, tuple[int, int]]:
    """``(height, width)`` of every stimulus in ``img_dir``; a missing or unreadable one is an error."""
    if not img_dir.is_dir():
        raise StudyInputError(f"--images {img_dir} is not a folder (pass the folder holding the mixed_*.png stimuli)",
                              field="images")
    missing = [k for k in keys if not (img_dir / k).is_file()]
    if missing:
        raise StudyInputError(f"--images {img_dir} lacks {len(missing)} of the {len(keys)} stimuli (e.g. "
                              f"{missing[0]}); pass the folder holding all of them, or leave out --images (the study "
                              "can then be reported but not served)", field="images")
    sizes = {}
    for k in keys:
        try:
            with Image.open(img_dir / k) as im:
                im.verify()
                sizes[k] = (im.height, im.width)
        except (OSError, SyntaxError) as err:
            raise StudyInputError(f"--images {img_dir / k}: not a readable PNG ({err})", field="images") from None
    return sizes


def import_hmix(root: str | os.PathLike, db: str | os.PathLike, *, task: str = "infer", name: str | None = None,
                images: str | os.PathLike | None = None) -> StudyInfo:
    """Create a study from the H-Mix folder ``root``: items, annotators, the order each participant saw,
    and responses, all in one transaction (an existing study is never touched).

    Args:
        task: ``infer`` (``hmix_infer_mixing_factor.csv``, a study in mode ``infer``) or ``softlabel``
            (``hmix_categorical_soft_labels.csv``, mode ``softlabel``, the 10 CIFAR-10 classes offered).
        name: study name (default ``hmix-<task>``).
        images: a folder holding every ``mixed_*.png`` stimulus; they are copied into the study under salted
            names (:mod:`gazemix.study.media`), so it can be served. Without it, items have no image and the
            app refuses to serve the study.
    """
    if task not in ("infer", "softlabel"):
        raise StudyInputError(f"--task must be infer or softlabel, got {task!r}", field="task")
    name = check_study_name(name or f"hmix-{task}")
    db = Path(db)
    check_study_target(db, name)
    table = read_hmix_inferences(root) if task == "infer" else read_hmix_soft_labels(root)
    keys = list(table.items["key"])
    sizes = _stimuli(Path(images), keys) if images is not None else {}
    regular = len(keys)
    per_annotator = protocol.default_items_per_annotator(task, checks=0, repeats=0, available=regular)
    config = {**protocol.study_config(task, title=None, consent=None, questions=None, completion_code=None,
                                      redirect_url=None),
              "title": "Blended CIFAR-10 pictures (H-Mix stimuli)", "data": "hmix", "task": task,
              "source": str(root), "repeats": 0, "items_per_annotator": per_annotator,
              "minutes": protocol.estimated_minutes(task, per_annotator)}
    init_db(db)
    media = StudyMedia(db) if images is not None else None
    try:
        recs = []
        for it in table.items.itertuples(index=False):
            image_path, (h, w) = None, (int(it.height), int(it.width))
            if media is not None:
                dest, image_path = media.path(it.key, ".png")
                dest.write_bytes((Path(images) / it.key).read_bytes())
                h, w = sizes[it.key]
            recs.append(ItemRecord(key=it.key, class1=it.class1, class2=it.class2, lam=float(it.lam), mixer=it.mixer,
                                   image_path=image_path, height=h, width=w, source1=it.source1, source2=it.source2,
                                   params={"source": "H-Mix (cambridge-mlg/hill-mixup)",
                                           "rule": "lam*img1+(1-lam)*img2"},
                                   choices=[it.class1, it.class2] if task == "infer" else list(CIFAR10_CLASSES)))
        r = table.responses.copy()
        if "excluded" in r:
            r["excluded"] = r["excluded"].map(json.dumps)
        cols = [c for c in _RESPONSE_COLUMNS if c in r]

        def add_judgments(con, study_id: int) -> None:
            item_id = {row["key"]: row["id"] for row in con.execute("SELECT id, key FROM items WHERE study_id = ?",
                                                                    (study_id,))}
            ann_id = {ext: con.execute("INSERT INTO annotators(study_id, external_id) VALUES (?, ?)",
                                       (study_id, ext)).lastrowid for ext in sorted(r["annotator"].unique())}
            keys_ = list(zip(r["annotator"].map(ann_id), r["key"].map(item_id), r["repeat"], r["position"]))
            con.executemany("INSERT INTO assignments(annotator_id, position, item_id, repeat, left_is_image1, "
                            "choice_order) VALUES (?, ?, ?, ?, 1, '[]')", [(a, p, i, rep) for a, i, rep, p in keys_])
            values = zip(*(r[c].astype(object).where(r[c].notna(), None) for c in cols))
            con.executemany(
                f"INSERT INTO responses(annotator_id, item_id, repeat, position, session, {', '.join(cols)}) "
                f"VALUES ({', '.join('?' * (5 + len(cols)))})",
                [(a, i, rep, p, f"hmix-condition={cond}", *v)
                 for (a, i, rep, p), cond, v in zip(keys_, r["condition"], values)])
            if media is not None:
                media.move_into_place(con, study_id)

        return create_study(db, name, task, instructions=protocol.INSTRUCTIONS[task], config=config, items=recs,
                            secret=None if media is None else media.secret, before_commit=add_judgments)
    except BaseException:
        if media is not None:
            media.discard()
        raise
