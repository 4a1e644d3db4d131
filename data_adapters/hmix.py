"""H-Mix: human judgments of mixup images (Collins et al., "Human-in-the-Loop Mixup", UAI 2023;
repository cambridge-mlg/hill-mixup, folder ``h_mix/``).

Reads the "infer the mixing factor" task (``hmix_infer_mixing_factor.csv``) into the table form the
judgment app stores (:mod:`gazemix.study`): one item per stimulus and one response per trial, every weight
relative to **image 1**. A stimulus ``mixed_{lam}_{Class1}_{id1}_{Class2}_{id2}.png`` is
``lam * img1 + (1 - lam) * img2`` of CIFAR-10 test images. The HILL slider ran from "100 % label1" (0) to
"100 % label2" (100), so the perceived weight of image 1 is ``1 - mixingcoeff / 100``; this is the
direction of the published ``processed_hmix_inferences.json`` ("Predicted Mixing Factor"), which
:func:`read_processed` loads for cross-checks. Label 1 was always on the left, sliders started at 50,
and moving them was not required, so the touched flags are unknown (NULL).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from data_adapters.base import AdapterError

__all__ = ["CIFAR10_CLASSES", "INFER_CSV", "PROCESSED_JSON", "SOFT_CSV", "HMixTable", "parse_stimulus",
           "read_hmix_inferences", "read_hmix_soft_labels", "read_processed"]

INFER_CSV = "hmix_infer_mixing_factor.csv"
SOFT_CSV = "hmix_categorical_soft_labels.csv"
CIFAR10_CLASSES = ("Airplane", "Automobile", "Bird", "Cat", "Deer", "Dog", "Frog", "Horse", "Ship", "Truck")
PROCESSED_JSON = "processed_hmix_inferences.json"
CIFAR10_SIZE = 32
_STIM = re.compile(r"^mixed_(?P<lam>[0-9.]+)_(?P<c1>[A-Za-z]+)_(?P<id1>\d+)_(?P<c2>[A-Za-z]+)_(?P<id2>\d+)\.png$")
_SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_COLUMNS = ("subject", "filename", "task", "responses", "mixtureCoeff", "label1", "label2", "rt", "trial_index")
_SOFT_COLUMNS = ("subject", "filename", "task", "response", "mixtureCoeff", "label1", "label2", "rt", "trial_index")


@dataclass
class HMixTable:
    """Judgments in the study tables' form.

    Attributes:
        items: one row per stimulus: ``key`` (file name), ``class1``, ``class2``, ``lam`` (weight of image 1),
            ``source1``/``source2`` (``cifar10-test:<id>``), ``mixer`` (``mixup``), ``height``, ``width``.
        responses: one row per trial: ``annotator``, ``key``, ``repeat`` (1 for HILL's reruns), ``position``
            (order in the session), ``weight1`` (perceived weight of image 1), ``confidence`` (0..1),
            ``slider`` (raw 0..100), ``slider_start`` (50), ``left_is_image1`` (1), ``rt_ms``, ``condition``
            (soft labels: ``choice1``, ``prob1``, ``choice2``, ``prob2``, ``excluded`` instead of the sliders).
        skipped: rows that are not trials (consent, instructions), skipped and counted.
    """

    items: pd.DataFrame
    responses: pd.DataFrame
    skipped: int = 0


def parse_stimulus(name: str) -> dict[str, Any]:
    """``mixed_0.5_Dog_2205_Frog_6908.png`` → ``{lam: 0.5, class1: 'Dog', id1: 2205, class2: 'Frog', id2: 6908}``."""
    m = _STIM.match(name)
    if not m:
        raise ValueError(f"not an H-Mix stimulus name (mixed_<lam>_<Class1>_<id1>_<Class2>_<id2>.png): {name!r}")
    return {"lam": float(m["lam"]), "class1": m["c1"], "id1": int(m["id1"]), "class2": m["c2"], "id2": int(m["id2"])}


def _number(path: Path, line: int, fieldname: str, value: str, lo: float, hi: float) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise AdapterError(path, f"expected a number in [{lo:g}, {hi:g}], got {value!r}", line=line,
                           field=fieldname) from None
    if not math.isfinite(x) or not lo <= x <= hi:
        raise AdapterError(path, f"expected a number in [{lo:g}, {hi:g}], got {value!r}", line=line, field=fieldname)
    return x


def _csv_rows(path: Path, columns: tuple[str, ...], where: str = "") -> Iterator[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of an H-Mix CSV file, after checking that it exists and has ``columns``."""
    if not path.is_file():
        raise AdapterError(path, f"missing: point to the H-Mix folder {where}holding {path.name}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise AdapterError(path, f"missing column(s) {', '.join(missing)}", line=1)
        for row in reader:
            yield reader.line_num, row


def read_hmix_inferences(root: str | os.PathLike) -> HMixTable:
    """Read ``hmix_infer_mixing_factor.csv`` from the H-Mix folder ``root``.

    Raises :class:`AdapterError` naming the file, line and field of a missing column, malformed
    ``responses`` JSON, a value out of range, a participant id that is not 1-64 letters, digits or
    ``_ . @ -`` (so nothing like ``=HYPERLINK(..)`` or markup enters a study), or a stimulus name that
    disagrees with its row.
    """
    path = Path(root) / INFER_CSV
    rows, items = [], {}
    for line, row in _csv_rows(path, _COLUMNS, "(cambridge-mlg/hill-mixup h_mix/) "):
        name = row["filename"]
        item = _stimulus(path, line, row)
        try:
            resp = json.loads(row["responses"])
            mc, conf = resp["mixingcoeff"], resp["confidence"]
        except (json.JSONDecodeError, TypeError, KeyError):
            raise AdapterError(path, 'expected JSON {"mixingcoeff": 0..100, "confidence": 0..100}, got '
                               f"{row['responses'][:60]!r}", line=line, field="responses") from None
        mc = _number(path, line, "responses.mixingcoeff", mc, 0, 100)
        conf = _number(path, line, "responses.confidence", conf, 0, 100)
        if row["task"] not in ("rate_mixture", "rerun_rate_mixture"):
            raise AdapterError(path, f"unknown task {row['task']!r} (rate_mixture or rerun_rate_mixture)",
                               line=line, field="task")
        items.setdefault(name, item)
        rows.append({"annotator": row["subject"], "key": name, "repeat": int(row["task"] == "rerun_rate_mixture"),
                     "trial_index": int(_number(path, line, "trial_index", row["trial_index"], 0, 1e9)),
                     "weight1": 1.0 - mc / 100.0, "confidence": conf / 100.0, "slider": mc,
                     "slider_start": 50.0, "left_is_image1": 1,
                     "rt_ms": _number(path, line, "rt", row["rt"], 0, 1e9) if row["rt"] else None,
                     "condition": row.get("condition") or None})
    return _table(path, items, rows)


def _table(path: Path, items: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> HMixTable:
    if not rows:
        raise AdapterError(path, "no judgments (the file has a header only)")
    responses = pd.DataFrame(rows)
    dup = responses.duplicated(["annotator", "key", "repeat"])
    if dup.any():
        first = responses[dup].iloc[0]
        raise AdapterError(path, f"participant {first['annotator']} judged {first['key']} twice in the same pass")
    responses["position"] = responses.groupby("annotator")["trial_index"].rank(method="first").astype(int) - 1
    return HMixTable(pd.DataFrame(list(items.values())), responses.drop(columns="trial_index"))


def _stimulus(path: Path, line: int, row: dict[str, str]) -> dict[str, Any]:
    """The item of a trial row; its ``mixtureCoeff``, ``label1``, ``label2`` must agree with the file name."""
    name = row["filename"]
    try:
        stim = parse_stimulus(name)
    except ValueError as err:
        raise AdapterError(path, str(err), line=line, field="filename") from None
    lam = _number(path, line, "mixtureCoeff", row["mixtureCoeff"], 0, 1)
    if abs(lam - stim["lam"]) > 1e-9 or (row["label1"], row["label2"]) != (stim["class1"], stim["class2"]):
        raise AdapterError(path, f"mixtureCoeff/label1/label2 ({lam}, {row['label1']}, {row['label2']}) "
                           f"disagree with the file name {name!r}", line=line, field="filename")
    if not _SUBJECT.match(row["subject"] or ""):
        raise AdapterError(path, "participant id must be 1-64 letters, digits or _ . @ - (starting with a letter or "
                           f"digit), got {(row['subject'] or '')[:40]!r}", line=line, field="subject")
    return {"key": name, "class1": stim["class1"], "class2": stim["class2"], "lam": lam,
            "source1": f"cifar10-test:{stim['id1']}", "source2": f"cifar10-test:{stim['id2']}", "mixer": "mixup",
            "height": CIFAR10_SIZE, "width": CIFAR10_SIZE}


def read_hmix_soft_labels(root: str | os.PathLike) -> HMixTable:
    """Read the raw categorical soft-label answers ``hmix_categorical_soft_labels.csv`` (endpoints hidden).

    Each trial's ``response`` JSON holds ``classSelect`` (``mostProb<Class>``) with ``prob`` (0..100),
    ``classSelect2`` (``secondProb<Class>`` or ``secondProbNo``) with ``prob2``, and ``improbClassSelect<Class>``
    for every class marked "definitely not". Responses get ``choice1``, ``prob1``, ``choice2``, ``prob2``
    (0..1), ``excluded`` (class list) and ``weight1 = p(class1) / (p(class1) + p(class2))`` (None when
    neither source class was named). Non-trial rows (consent, instructions) are skipped and counted in
    ``HMixTable.skipped``; the CIFAR-10S relabelling of the published JSON is not recomputed.
    """
    path = Path(root) / SOFT_CSV
    rows, items, skipped = [], {}, 0
    for line, row in _csv_rows(path, _SOFT_COLUMNS):
        if not row["filename"]:
            skipped += 1
            continue
        item = _stimulus(path, line, row)
        items.setdefault(item["key"], item)
        try:
            resp = json.loads(row["response"])
            c1 = resp["classSelect"].removeprefix("mostProb")
            c2 = resp.get("classSelect2", "secondProbNo").removeprefix("secondProb")
        except (json.JSONDecodeError, TypeError, KeyError, AttributeError):
            raise AdapterError(path, 'expected JSON {"classSelect": "mostProb<Class>", "prob": ..., ...}, got '
                               f"{row['response'][:60]!r}", line=line, field="response") from None
        for name, cls in (("classSelect", c1), ("classSelect2", c2)):
            if cls not in CIFAR10_CLASSES and not (name == "classSelect2" and cls == "No"):
                raise AdapterError(path, f"unknown class {cls!r} (CIFAR-10: {', '.join(CIFAR10_CLASSES)})",
                                   line=line, field=f"response.{name}")
        p1 = _number(path, line, "response.prob", resp.get("prob"), 0, 100) / 100.0
        c2 = None if c2 == "No" else c2
        p2 = _number(path, line, "response.prob2", resp.get("prob2"), 0, 100) / 100.0 if c2 else 0.0
        if row["task"] not in ("spec_conf", "rerun_spec_conf"):
            raise AdapterError(path, f"unknown task {row['task']!r} (spec_conf or rerun_spec_conf)",
                               line=line, field="task")
        probs = {c1: p1, **({c2: p2} if c2 else {})}
        m1, m2 = probs.get(item["class1"], 0.0), probs.get(item["class2"], 0.0)
        rows.append({"annotator": row["subject"], "key": item["key"], "repeat": int(row["task"] == "rerun_spec_conf"),
                     "trial_index": int(_number(path, line, "trial_index", row["trial_index"], 0, 1e9)),
                     "choice1": c1, "prob1": p1, "choice2": c2, "prob2": p2,
                     "excluded": sorted(k.removeprefix("improbClassSelect") for k in resp
                                        if k.startswith("improbClassSelect")),
                     "weight1": m1 / (m1 + m2) if m1 + m2 > 0 else None,
                     "rt_ms": _number(path, line, "rt", row["rt"], 0, 1e9) if row["rt"] else None,
                     "condition": row.get("condition") or None})
    table = _table(path, items, rows)
    table.skipped = skipped
    return table


def read_processed(root: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The published per-stimulus summary ``processed_hmix_inferences.json`` (key = stimulus file name)."""
    path = Path(root) / PROCESSED_JSON
    if not path.is_file():
        raise AdapterError(path, "missing: point to the H-Mix folder holding it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise AdapterError(path, f"malformed JSON ({err.msg})", line=err.lineno) from None
    if not isinstance(data, dict):
        raise AdapterError(path, "expected a JSON object keyed by stimulus file name")
    return data
