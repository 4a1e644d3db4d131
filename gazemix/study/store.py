"""Studies, items, annotators, assignments and validated responses on top of :mod:`gazemix.study.db`.

The protocol follows the HILL MixE suite of Collins et al., "Human-in-the-Loop Mixup" (UAI 2023): every
weight is stored relative to a fixed *image 1* (the mixer's own image, whose label weight is ``lam``),
whichever class the screen showed on the left; the side is randomised per assignment and recorded.
Unlike HILL (whose sliders could be left at their start), the mixing slider must be moved; an untouched
confidence slider is accepted but flagged. Two items are repeated at the end of each annotator's order
(HILL's consistency reruns), and attention checks (unmixed images with a known answer) are mixed in.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from gazemix.study.db import StudyInputError, connect, transaction

__all__ = ["MODES", "Answer", "Assignment", "ItemRecord", "Progress", "StudyInfo", "add_items", "check_annotator_id",
           "create_study", "get_study", "next_assignment", "progress", "start_annotator", "submit_answer"]

MODES = ("infer", "softlabel", "click")
SLIDER_START = 50.0
MAX_TEXT = 200
MAX_CLICKS = 20
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


@dataclass(frozen=True)
class StudyInfo:
    id: int
    name: str
    mode: str
    instructions: str
    config: dict[str, Any]


@dataclass
class ItemRecord:
    """One stimulus: a mixed image (or an unmixed attention check) with its provenance.

    ``lam`` is the label weight of image 1 (the mixer's own image); ``gaze_lam`` the share of image 1 in the
    replayed gaze mass, ``g_own / (g_own + g_partner)``, when gaze exists. Paths are relative to the
    database's folder.
    """

    key: str
    class1: str
    class2: str
    lam: float
    mixer: str
    image_path: str | None = None
    gaze_path: str | None = None
    height: int | None = None
    width: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    source1: str | None = None
    source2: str | None = None
    gaze_lam: float | None = None
    choices: list[str] = field(default_factory=list)
    is_check: bool = False
    check_answer: dict[str, Any] | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Assignment:
    """The item an annotator sees at ``position`` and how it is shown."""

    annotator_id: int
    position: int
    repeat: int
    left_is_image1: bool
    choice_order: list[str]
    item: dict[str, Any]

    @property
    def left_class(self) -> str:
        return self.item["class1"] if self.left_is_image1 else self.item["class2"]

    @property
    def right_class(self) -> str:
        return self.item["class2"] if self.left_is_image1 else self.item["class1"]


@dataclass(frozen=True)
class Progress:
    done: int
    total: int

    def __str__(self) -> str:
        return f"{self.done} / {self.total}"


@dataclass
class Answer:
    """What the screen sends for one item; only the fields of the study's mode are used.

    Attributes:
        slider: mixing slider, 0..100, 0 = "100 % the class on the left", 100 = "100 % the class on the right".
        confidence: 0..100.
        slider_touched, confidence_touched: whether the person moved the slider (input/release events).
        choice1, prob1, choice2, prob2: most likely class and its probability (0..100), second most likely
            (``None`` for none).
        clicks: ``[(x, y), ...]`` in image pixels (x right, y down).
    """

    slider: float | None = None
    confidence: float | None = None
    slider_touched: bool = False
    confidence_touched: bool = False
    choice1: str | None = None
    prob1: float | None = None
    choice2: str | None = None
    prob2: float | None = None
    clicks: Sequence[Sequence[float]] = ()


# --------------------------------------------------------------------------------------------- studies
def create_study(db: str | os.PathLike, name: str, mode: str, *, instructions: str = "",
                 config: dict[str, Any] | None = None) -> StudyInfo:
    """Create a study; ``mode`` is ``infer`` (slider + confidence), ``softlabel`` or ``click``."""
    if mode not in MODES:
        raise StudyInputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not name or len(name) > MAX_TEXT:
        raise StudyInputError(f"study name must be 1..{MAX_TEXT} characters, got {len(name)}")
    try:
        with transaction(db) as con:
            cur = con.execute("INSERT INTO studies(name, mode, instructions, config) VALUES (?, ?, ?, ?)",
                              (name, mode, instructions, json.dumps(config or {})))
    except sqlite3.IntegrityError as err:
        raise StudyInputError(f"a study named {name!r} already exists in {db}; pass another --name") from err
    return StudyInfo(int(cur.lastrowid), name, mode, instructions, dict(config or {}))


def get_study(db: str | os.PathLike, name: str | None = None) -> StudyInfo:
    """The study called ``name``, or the only study in the database when ``name`` is None."""
    con = connect(db)
    try:
        rows = con.execute("SELECT * FROM studies ORDER BY id").fetchall()
    finally:
        con.close()
    names = [r["name"] for r in rows]
    if not rows:
        raise StudyInputError(f"{db} holds no study yet; build one with `gazemix study build`")
    if name is None:
        if len(rows) > 1:
            raise StudyInputError(f"{db} holds several studies ({', '.join(names)}); pass --study NAME")
        row = rows[0]
    else:
        match = [r for r in rows if r["name"] == name]
        if not match:
            raise StudyInputError(f"no study {name!r} in {db}; studies: {', '.join(names)}")
        row = match[0]
    return StudyInfo(row["id"], row["name"], row["mode"], row["instructions"], json.loads(row["config"]))


def add_items(db: str | os.PathLike, study: StudyInfo, items: Iterable[ItemRecord]) -> int:
    """Insert items in one transaction; returns how many were added (a repeated key is an error)."""
    rows = [(study.id, it.key, it.image_path, it.gaze_path, it.height, it.width, it.mixer, json.dumps(it.params),
             it.source1, it.source2, it.class1, it.class2, float(it.lam),
             None if it.gaze_lam is None else float(it.gaze_lam), json.dumps(list(it.choices)), int(it.is_check),
             None if it.check_answer is None else json.dumps(it.check_answer), it.seed) for it in items]
    try:
        with transaction(db) as con:
            con.executemany("INSERT INTO items(study_id, key, image_path, gaze_path, height, width, mixer, params, "
                            "source1, source2, class1, class2, lam, gaze_lam, choices, is_check, check_answer, seed) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    except sqlite3.IntegrityError as err:
        raise StudyInputError(f"could not add items to study {study.name!r}: {err} (item keys must be unique "
                              f"and weights in [0, 1])") from err
    return len(rows)


# ------------------------------------------------------------------------------------------ annotators
def check_annotator_id(value: Any) -> str:
    """An annotator id: 1-64 characters of letters, digits, ``_ . @ -``, starting with a letter or digit."""
    if not isinstance(value, str):
        raise StudyInputError(f"annotator id must be text, got {type(value).__name__}")
    value = value.strip()
    if len(value) > 64:
        raise StudyInputError(f"annotator id is {len(value)} characters long; use at most 64")
    if not _ID_RE.match(value):
        raise StudyInputError("annotator id may only contain letters, digits and _ . @ - (starting with a letter "
                              f"or digit), got {value[:40]!r}")
    return value


def _annotator_rng(study: StudyInfo, external_id: str) -> np.random.Generator:
    return np.random.default_rng([int(study.config.get("seed", 0)), zlib.crc32(external_id.encode())])


def start_annotator(db: str | os.PathLike, study: StudyInfo, external_id: str) -> int:
    """The annotator's id, creating the annotator and their randomised assignment on first sight.

    Assignment (one transaction, so concurrent first logins cannot double-assign): the
    ``items_per_annotator`` least-assigned regular items (all by default), every attention check, in a
    random order; then ``repeats`` of the regular items again at the end; each with a random left/right side.
    """
    external_id = check_annotator_id(external_id)
    with transaction(db) as con:
        row = con.execute("SELECT id FROM annotators WHERE study_id = ? AND external_id = ?",
                          (study.id, external_id)).fetchone()
        if row:
            return int(row["id"])
        ann = int(con.execute("INSERT INTO annotators(study_id, external_id) VALUES (?, ?)",
                              (study.id, external_id)).lastrowid)
        items = con.execute(
            "SELECT i.id, i.is_check, i.choices, COUNT(a.item_id) AS n FROM items i "
            "LEFT JOIN assignments a ON a.item_id = i.id AND a.repeat = 0 WHERE i.study_id = ? "
            "GROUP BY i.id ORDER BY i.id", (study.id,)).fetchall()
        if not items:
            raise StudyInputError(f"study {study.name!r} has no items")
        rng = _annotator_rng(study, external_id)
        regular = [r for r in items if not r["is_check"]]
        checks = [r for r in items if r["is_check"]]
        k = int(study.config.get("items_per_annotator") or len(regular))
        tiebreak = rng.random(len(regular))
        regular = [regular[i] for i in sorted(range(len(regular)), key=lambda i: (regular[i]["n"], tiebreak[i]))[:k]]
        order = [regular[i] for i in rng.permutation(len(regular))] + checks
        order = [order[i] for i in rng.permutation(len(order))]
        n_rep = min(int(study.config.get("repeats", 2)), len(regular))
        reps = [regular[i] for i in rng.choice(len(regular), size=n_rep, replace=False)] if n_rep else []
        rows = []
        for pos, (r, rep) in enumerate([(r, 0) for r in order] + [(r, 1) for r in reps]):
            choices = json.loads(r["choices"])
            shown = [choices[j] for j in rng.permutation(len(choices))]
            rows.append((ann, pos, r["id"], rep, int(rng.random() < 0.5), json.dumps(shown)))
        con.executemany("INSERT INTO assignments(annotator_id, position, item_id, repeat, left_is_image1, "
                        "choice_order) VALUES (?, ?, ?, ?, ?, ?)", rows)
    return ann


def _assignment(con: sqlite3.Connection, row: sqlite3.Row) -> Assignment:
    item = dict(con.execute("SELECT * FROM items WHERE id = ?", (row["item_id"],)).fetchone())
    return Assignment(row["annotator_id"], row["position"], row["repeat"], bool(row["left_is_image1"]),
                      json.loads(row["choice_order"]), item)


def next_assignment(db: str | os.PathLike, annotator_id: int) -> Assignment | None:
    """The first assignment (by position) the annotator has not answered yet, or None when done."""
    con = connect(db)
    try:
        row = con.execute(
            "SELECT a.* FROM assignments a LEFT JOIN responses r ON r.annotator_id = a.annotator_id "
            "AND r.item_id = a.item_id AND r.repeat = a.repeat WHERE a.annotator_id = ? AND r.id IS NULL "
            "ORDER BY a.position LIMIT 1", (annotator_id,)).fetchone()
        return _assignment(con, row) if row else None
    finally:
        con.close()


def progress(db: str | os.PathLike, annotator_id: int) -> Progress:
    """How many of the annotator's assignments are answered."""
    con = connect(db)
    try:
        total = con.execute("SELECT COUNT(*) FROM assignments WHERE annotator_id = ?", (annotator_id,)).fetchone()[0]
        done = con.execute("SELECT COUNT(*) FROM responses WHERE annotator_id = ?", (annotator_id,)).fetchone()[0]
    finally:
        con.close()
    return Progress(int(done), int(total))


# ------------------------------------------------------------------------------------------- validation
def _number(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise StudyInputError(f"{name} must be a number in [{lo:g}, {hi:g}], got {str(value)[:40]!r}") from None
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise StudyInputError(f"{name} must be in [{lo:g}, {hi:g}], got {value!r}")
    return value


def _choice(name: str, value: Any, allowed: Sequence[str], *, optional: bool = False) -> str | None:
    if optional and (value is None or value == "" or value == "None"):
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT or value not in allowed:
        shown = str(value)[:40] if value is not None else None
        raise StudyInputError(f"{name} must be one of {', '.join(allowed)}{' or None' if optional else ''}, "
                              f"got {shown!r}")
    return value


def validate_answer(mode: str, answer: Answer, asg: Assignment) -> dict[str, Any]:
    """Check ``answer`` against the study's mode and the item; returns the response columns to store."""
    item, flags = asg.item, []
    out: dict[str, Any] = {"left_is_image1": int(asg.left_is_image1)}
    if mode == "infer":
        slider = _number("slider", answer.slider, 0, 100)
        touched = bool(answer.slider_touched) or slider != SLIDER_START
        if not touched:
            raise StudyInputError("slider: move the mixing slider to give your answer (it starts at 50; you may "
                                  "move it away and back)")
        conf = _number("confidence", answer.confidence, 0, 100)
        conf_touched = bool(answer.confidence_touched) or conf != SLIDER_START
        if not conf_touched:
            flags.append("confidence_untouched")
        right_share = slider / 100.0
        out.update(slider=slider, slider_start=SLIDER_START, slider_touched=1, confidence=conf / 100.0,
                   confidence_touched=int(conf_touched),
                   weight1=1.0 - right_share if asg.left_is_image1 else right_share)
    elif mode == "softlabel":
        allowed = asg.choice_order or [item["class1"], item["class2"]]
        c1 = _choice("choice1 (most likely class)", answer.choice1, allowed)
        p1 = _number("prob1", answer.prob1, 0, 100)
        c2 = _choice("choice2 (second most likely class)", answer.choice2, allowed, optional=True)
        p2 = 0.0 if c2 is None else _number("prob2", answer.prob2, 0, 100)
        if c2 == c1:
            raise StudyInputError("choice2 must differ from choice1 (pick another class or None)")
        if p2 > p1:
            raise StudyInputError(f"prob2 ({p2:g}) must not exceed prob1 ({p1:g}): the first class is the most likely")
        if p1 + p2 > 100:
            raise StudyInputError(f"prob1 + prob2 = {p1 + p2:g} exceeds 100")
        probs = {c1: p1, **({c2: p2} if c2 else {})}
        m1, m2 = probs.get(item["class1"], 0.0), probs.get(item["class2"], 0.0)
        out.update(choice1=c1, prob1=p1 / 100.0, choice2=c2, prob2=p2 / 100.0,
                   weight1=m1 / (m1 + m2) if m1 + m2 > 0 else None)
    elif mode == "click":
        clicks = answer.clicks
        if not isinstance(clicks, (list, tuple)) or not 1 <= len(clicks) <= MAX_CLICKS:
            raise StudyInputError(f"clicks: click on the image 1..{MAX_CLICKS} times (got "
                                  f"{len(clicks) if isinstance(clicks, (list, tuple)) else type(clicks).__name__})")
        h, w = item["height"], item["width"]
        if h is None or w is None:
            raise StudyInputError(f"item {item['key']!r} has no image size, so it cannot take clicks")
        pts = []
        for k, pt in enumerate(clicks):
            if not isinstance(pt, (list, tuple)) or len(pt) != 2:
                raise StudyInputError(f"clicks[{k}] must be an [x, y] pair, got {str(pt)[:40]!r}")
            pts.append([_number(f"clicks[{k}].x", pt[0], 0, w - 1), _number(f"clicks[{k}].y", pt[1], 0, h - 1)])
        out.update(clicks=json.dumps(pts))
    else:
        raise StudyInputError(f"unknown study mode {mode!r}")
    out["flags"] = ",".join(flags)
    return out


def submit_answer(db: str | os.PathLike, study: StudyInfo, annotator_id: int, position: int, item_id: int,
                  answer: Answer, *, rt_ms: float | None = None, session: str | None = None) -> bool:
    """Validate and store one answer in one transaction; returns False when it was a duplicate (kept once).

    The item must be the one assigned to this annotator at ``position``; anything else (an unknown item,
    another annotator's item, a stale position) is rejected with a message saying which.
    """
    if isinstance(position, bool) or not isinstance(position, int) or isinstance(item_id, bool) \
            or not isinstance(item_id, int):
        raise StudyInputError(f"position and item id must be integers, got {position!r} and {item_id!r}")
    if session is not None and (not isinstance(session, str) or len(session) > MAX_TEXT):
        raise StudyInputError(f"session must be text of at most {MAX_TEXT} characters")
    if rt_ms is not None:
        rt_ms = _number("rt_ms", rt_ms, 0, 7 * 24 * 3600 * 1000)
    with transaction(db) as con:
        ann = con.execute("SELECT study_id FROM annotators WHERE id = ?", (annotator_id,)).fetchone()
        if ann is None or ann["study_id"] != study.id:
            raise StudyInputError(f"unknown annotator {annotator_id!r} in study {study.name!r}: start a session first")
        row = con.execute("SELECT * FROM assignments WHERE annotator_id = ? AND position = ?",
                          (annotator_id, position)).fetchone()
        if row is None or row["item_id"] != item_id:
            exists = con.execute("SELECT study_id FROM items WHERE id = ?", (item_id,)).fetchone()
            if exists is None or exists["study_id"] != study.id:
                raise StudyInputError(f"unknown item id {item_id} in study {study.name!r}")
            raise StudyInputError(f"item {item_id} is not assigned to this annotator at position {position}; "
                                  "reload the page to get your current item")
        cols = validate_answer(study.mode, answer, _assignment(con, row))
        cols.update(annotator_id=annotator_id, item_id=item_id, repeat=row["repeat"], position=position,
                    rt_ms=rt_ms, session=session)
        names = ", ".join(cols)
        cur = con.execute(f"INSERT OR IGNORE INTO responses({names}) VALUES ({', '.join('?' * len(cols))})",
                          tuple(cols.values()))
        return cur.rowcount == 1
