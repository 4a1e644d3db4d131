"""Studies, items, annotators, assignments and validated responses on top of :mod:`gazemix.study.db`.

The protocol follows the HILL MixE suite of Collins et al., "Human-in-the-Loop Mixup" (UAI 2023): every
weight is stored relative to a fixed *image 1* (the mixer's own image, whose label weight is ``lam``),
whichever class the screen showed on the left; the side is randomised per assignment and recorded.
Unlike HILL (whose sliders could be left at their start), the mixing slider must be touched: moved, or
set with the screen's "50/50" button, so a deliberate even answer is possible and an untouched one is not;
an untouched confidence slider is accepted but flagged. Two items are repeated at the end of each
annotator's order (HILL's consistency reruns), and attention checks (unmixed images with a known answer)
are mixed in. A study with a consent text or comprehension questions takes answers only from annotators
who accepted the one and passed the other (checked here, not only on the screen).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import re
import sqlite3
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from gazemix.study.db import StudyInputError, connect, open_existing, transaction

__all__ = ["MAX_CLICKS", "MODES", "SLIDER_START", "Answer", "AnnotatorStatus", "Assignment", "ItemRecord",
           "PracticeRecord", "Progress", "StudyInfo", "add_items", "check_annotator_id", "check_clicks",
           "check_study_name", "check_study_target",
           "check_comprehension", "create_study", "get_study", "next_assignment", "practice_feedback",
           "practice_items", "progress", "record_consent", "record_event", "record_missing_stimulus",
           "start_annotator", "annotator_status", "study_exists", "submit_answer", "validate_answer"]

MODES = ("infer", "softlabel", "click")
SLIDER_START = 50.0
MAX_TEXT = 200
MAX_CLICKS = 20
PRACTICE_TOLERANCE = 0.25
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
URL_PARAMS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "id")


@dataclass(frozen=True)
class StudyInfo:
    """A study's row: ``config`` holds the seed, data set, items per annotator and the texts the screen shows
    (``title``, ``consent``, ``questions``, ``minutes``, ``completion_code``, ``redirect_url``)."""

    id: int
    name: str
    mode: str
    instructions: str
    config: dict[str, Any]

    @property
    def title(self) -> str:
        return str(self.config.get("title") or self.name)

    @property
    def consent(self) -> str:
        return str(self.config.get("consent") or "")

    @property
    def questions(self) -> list[dict[str, Any]]:
        return list(self.config.get("questions") or [])


@dataclass
class ItemRecord:
    """One stimulus: a mixed image (or an unmixed attention check) with its provenance.

    ``lam`` is the label weight of image 1 (the mixer's own image); ``gaze_lam`` the share of image 1 in the
    replayed gaze mass, ``g_own / (g_own + g_partner)``, when gaze exists. Paths are relative to the
    database's folder; ``share_path`` is the per-pixel share of image 1 (click studies).
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
    share_path: str | None = None


@dataclass
class PracticeRecord:
    """A practice item (an unmixed image of ``class1``; ``class2`` is the other class named on screen) or the
    worked example of the instructions (``role="example"``, a mixed image of ``class1`` and ``class2``).

    ``answer`` holds what the practice feedback checks: ``{"class": class1}`` and, when the object's box is
    known, ``"box": [y1, x1, y2, x2]`` in image pixels.
    """

    role: str
    position: int
    image_path: str
    height: int
    width: int
    class1: str
    class2: str
    choices: list[str] = field(default_factory=list)
    answer: dict[str, Any] = field(default_factory=dict)


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


@dataclass(frozen=True)
class AnnotatorStatus:
    """Where an annotator is: consent given, comprehension passed, items answered."""

    consented: bool
    qualified: bool
    progress: Progress


@dataclass
class Answer:
    """What the screen sends for one item; only the fields of the study's mode are used.

    Attributes:
        slider: mixing slider, whole numbers 0..100, 0 = "100 % the class on the left", 100 = "100 % the class
            on the right".
        confidence: whole numbers 0..100.
        slider_touched, confidence_touched: whether the person moved the slider (input/release events) or
            pressed "50/50".
        choice1, prob1, choice2, prob2: most likely class and its probability (whole numbers 0..100), second
            most likely (``None`` for none).
        clicks: ``[(x, y), ...]`` in image pixels (x right, y down, the centre of the top-left pixel at
            ``(0, 0)``, so a click anywhere on a ``W x H`` image lies in ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``).
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
def check_study_name(name: Any) -> str:
    """A study name: 1..200 characters of text."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_TEXT:
        raise StudyInputError(f"--name must be 1..{MAX_TEXT} characters of text, got {str(name)[:40]!r}", field="name")
    return name


def study_exists(db: str | os.PathLike, name: str) -> bool:
    """Whether ``db`` (an existing database) already holds a study called ``name``."""
    con = connect(db)
    try:
        return con.execute("SELECT 1 FROM studies WHERE name = ?", (name,)).fetchone() is not None
    finally:
        con.close()


def _item_rows(study_id: int, items: Iterable[ItemRecord]) -> list[tuple]:
    return [(study_id, it.key, it.image_path, it.gaze_path, it.share_path, it.height, it.width, it.mixer,
             json.dumps(it.params), it.source1, it.source2, it.class1, it.class2, float(it.lam),
             None if it.gaze_lam is None else float(it.gaze_lam), json.dumps(list(it.choices)), int(it.is_check),
             None if it.check_answer is None else json.dumps(it.check_answer), it.seed) for it in items]


_ITEM_INSERT = ("INSERT INTO items(study_id, key, image_path, gaze_path, share_path, height, width, mixer, params, "
                "source1, source2, class1, class2, lam, gaze_lam, choices, is_check, check_answer, seed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def create_study(db: str | os.PathLike, name: str, mode: str, *, instructions: str = "",
                 config: dict[str, Any] | None = None, items: Iterable[ItemRecord] = (),
                 practice: Iterable[PracticeRecord] = (), secret: str | None = None,
                 before_commit: Callable[[sqlite3.Connection, int], None] | None = None) -> StudyInfo:
    """Create a study with its items and practice items in one transaction.

    Args:
        mode: ``infer`` (slider + confidence), ``softlabel`` or ``click``.
        secret: the salt of the study's stimulus names (kept in the database, never served).
        before_commit: called with the connection and the new study's id just before COMMIT (e.g. to move the
            study's freshly written files into place); if it raises, nothing is stored.
    """
    if mode not in MODES:
        raise StudyInputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}", field="mode")
    name = check_study_name(name)
    try:
        with transaction(db) as con:
            if con.execute("SELECT 1 FROM studies WHERE name = ?", (name,)).fetchone():
                raise StudyInputError(f"a study named {name!r} already exists in {db}; pass another --name",
                                      field="name")
            study_id = int(con.execute("INSERT INTO studies(name, mode, instructions, config, secret) "
                                       "VALUES (?, ?, ?, ?, ?)",
                                       (name, mode, instructions, json.dumps(config or {}), secret)).lastrowid)
            con.executemany(_ITEM_INSERT, _item_rows(study_id, items))
            con.executemany("INSERT INTO practice(study_id, role, position, image_path, height, width, class1, "
                            "class2, choices, answer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [(study_id, p.role, p.position, p.image_path, p.height, p.width, p.class1, p.class2,
                              json.dumps(list(p.choices)), json.dumps(p.answer)) for p in practice])
            if before_commit is not None:
                before_commit(con, study_id)
    except sqlite3.IntegrityError as err:
        raise StudyInputError(f"could not create study {name!r}: {err} (item keys must be unique and weights in "
                              "[0, 1])") from err
    return StudyInfo(study_id, name, mode, instructions, dict(config or {}))


def check_study_target(db: str | os.PathLike, name: str) -> None:
    """Refuse before anything is written: a folder, a file that is not a study database, a folder that cannot
    be written, or a study name that is taken (whose files are then left exactly as they are)."""
    db = Path(db)
    if db.exists() or db.is_dir():
        open_existing(db, writable=True)
        if study_exists(db, name):
            raise StudyInputError(f"a study named {name!r} already exists in {db}; its files are kept as they are. "
                                  "Pass another --name (or another --db)", field="name")
        return
    folder = db.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise StudyInputError(f"--db {db}: {folder} is a file, not a folder", field="db")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StudyInputError(f"--db {db} cannot be created: {folder} is not writable; pass a path in a folder you "
                              "can write", field="db")


def get_study(db: str | os.PathLike, name: str | None = None) -> StudyInfo:
    """The study called ``name``, or the only study in the database when ``name`` is None."""
    con = connect(db)
    try:
        rows = con.execute("SELECT id, name, mode, instructions, config FROM studies ORDER BY id").fetchall()
    finally:
        con.close()
    names = [r["name"] for r in rows]
    if not rows:
        raise StudyInputError(f"{db} holds no study yet; build one with `gazemix study build`", field="study")
    if name is None:
        if len(rows) > 1:
            raise StudyInputError(f"{db} holds several studies ({', '.join(names)}); pass --study NAME", field="study")
        row = rows[0]
    else:
        match = [r for r in rows if r["name"] == name]
        if not match:
            raise StudyInputError(f"no study {name!r} in {db}; studies: {', '.join(names)}", field="study")
        row = match[0]
    return StudyInfo(row["id"], row["name"], row["mode"], row["instructions"], json.loads(row["config"]))


def add_items(db: str | os.PathLike, study: StudyInfo, items: Iterable[ItemRecord]) -> int:
    """Insert items in one transaction; returns how many were added (a repeated key is an error)."""
    rows = _item_rows(study.id, items)
    try:
        with transaction(db) as con:
            con.executemany(_ITEM_INSERT, rows)
    except sqlite3.IntegrityError as err:
        raise StudyInputError(f"could not add items to study {study.name!r}: {err} (item keys must be unique "
                              f"and weights in [0, 1])") from err
    return len(rows)


def practice_items(db: str | os.PathLike, study: StudyInfo, role: str = "practice") -> list[dict[str, Any]]:
    """The study's practice items (``role="practice"``, in order) or its worked example (``"example"``)."""
    con = connect(db)
    try:
        rows = con.execute("SELECT * FROM practice WHERE study_id = ? AND role = ? ORDER BY position",
                           (study.id, role)).fetchall()
    finally:
        con.close()
    return [{**dict(r), "choices": json.loads(r["choices"]), "answer": json.loads(r["answer"])} for r in rows]


# ------------------------------------------------------------------------------------------ annotators
def check_annotator_id(value: Any) -> str:
    """An annotator id: 1-64 characters of letters, digits, ``_ . @ -``, starting with a letter or digit."""
    if not isinstance(value, str):
        raise StudyInputError(f"annotator id must be text, got {type(value).__name__}", field="annotator")
    value = value.strip()
    if not value:
        raise StudyInputError("enter your participant id (letters, digits and _ . @ -)", field="annotator")
    if len(value) > 64:
        raise StudyInputError(f"annotator id is {len(value)} characters long; use at most 64", field="annotator")
    if not _ID_RE.match(value):
        raise StudyInputError("annotator id may only contain letters, digits and _ . @ - (starting with a letter "
                              f"or digit), got {value[:40]!r}", field="annotator")
    return value


def _url_params(params: dict[str, Any] | None) -> dict[str, str]:
    """The study-relevant URL parameters (Prolific's ids, ``id``), each checked like an annotator id."""
    out = {}
    for key in URL_PARAMS:
        value = (params or {}).get(key)
        if value not in (None, ""):
            out[key] = check_annotator_id(value)
    return out


def _annotator_rng(study: StudyInfo, external_id: str, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(study.config.get("seed", 0)), zlib.crc32(external_id.encode()), stream])


def record_event(con: sqlite3.Connection, annotator_id: int, kind: str, detail: dict[str, Any],
                 session: str | None = None) -> None:
    """Append one event (visit, consent, practice answer, comprehension attempt, ...) inside a transaction."""
    con.execute("INSERT INTO events(annotator_id, kind, detail, session) VALUES (?, ?, ?, ?)",
                (annotator_id, kind, json.dumps(detail), session))


def _check_session(session: Any) -> str | None:
    if session is not None and (not isinstance(session, str) or len(session) > MAX_TEXT):
        raise StudyInputError(f"session must be text of at most {MAX_TEXT} characters", field="session")
    return session


def start_annotator(db: str | os.PathLike, study: StudyInfo, external_id: str, *,
                    url_params: dict[str, Any] | None = None, session: str | None = None) -> int:
    """The annotator's id, creating the annotator and their randomised assignment on first sight.

    Assignment (one transaction, so concurrent first logins cannot double-assign): the
    ``items_per_annotator`` least-assigned regular items (all by default), every attention check, in a
    random order; then ``repeats`` of the regular items again at the end; each with a random left/right side.
    ``url_params`` (``PROLIFIC_PID``, ``STUDY_ID``, ``SESSION_ID``, ``id``) are stored at the first visit; every
    visit is logged as an event.
    """
    external_id = check_annotator_id(external_id)
    params = _url_params(url_params)
    session = _check_session(session)
    with transaction(db) as con:
        row = con.execute("SELECT id FROM annotators WHERE study_id = ? AND external_id = ?",
                          (study.id, external_id)).fetchone()
        if row:
            record_event(con, int(row["id"]), "visit", params, session)
            return int(row["id"])
        items = con.execute(
            "SELECT i.id, i.is_check, i.choices, COUNT(a.item_id) AS n FROM items i "
            "LEFT JOIN assignments a ON a.item_id = i.id AND a.repeat = 0 WHERE i.study_id = ? "
            "GROUP BY i.id ORDER BY i.id", (study.id,)).fetchall()
        if not items:
            raise StudyInputError(f"study {study.name!r} has no items", field="study")
        ann = int(con.execute("INSERT INTO annotators(study_id, external_id, url_params) VALUES (?, ?, ?)",
                              (study.id, external_id, json.dumps(params))).lastrowid)
        record_event(con, ann, "visit", params, session)
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


def _annotator_row(con: sqlite3.Connection, study: StudyInfo, annotator_id: Any) -> sqlite3.Row:
    if isinstance(annotator_id, bool) or not isinstance(annotator_id, int):
        raise StudyInputError(f"annotator must be an integer id, got {str(annotator_id)[:40]!r}", field="annotator")
    row = con.execute("SELECT * FROM annotators WHERE id = ?", (annotator_id,)).fetchone()
    if row is None or row["study_id"] != study.id:
        raise StudyInputError(f"unknown annotator {annotator_id!r} in study {study.name!r}: start a session first",
                              field="annotator")
    return row


def progress(db: str | os.PathLike, annotator_id: int) -> Progress:
    """How many of the annotator's assignments are answered."""
    con = connect(db)
    try:
        total = con.execute("SELECT COUNT(*) FROM assignments WHERE annotator_id = ?", (annotator_id,)).fetchone()[0]
        done = con.execute("SELECT COUNT(*) FROM responses WHERE annotator_id = ?", (annotator_id,)).fetchone()[0]
    finally:
        con.close()
    return Progress(int(done), int(total))


def annotator_status(db: str | os.PathLike, study: StudyInfo, annotator_id: int) -> AnnotatorStatus:
    """Consent, comprehension and progress of one annotator; a study without a consent text (or questions)
    counts every annotator as consented (or qualified)."""
    con = connect(db)
    try:
        row = _annotator_row(con, study, annotator_id)
    finally:
        con.close()
    return AnnotatorStatus(consented=not study.consent or row["consented_at"] is not None,
                           qualified=not study.questions or row["qualified_at"] is not None,
                           progress=progress(db, annotator_id))


def record_consent(db: str | os.PathLike, study: StudyInfo, annotator_id: int, accepted: Any, *,
                   session: str | None = None) -> None:
    """Store that the annotator accepted the study's consent text (its SHA-256 is kept with the event)."""
    if accepted is not True:
        raise StudyInputError("tick the box to agree to take part, or close the page if you do not wish to",
                              field="consent")
    session = _check_session(session)
    with transaction(db) as con:
        _annotator_row(con, study, annotator_id)
        con.execute("UPDATE annotators SET consented_at = COALESCE(consented_at, strftime('%Y-%m-%dT%H:%M:%fZ', "
                    "'now')) WHERE id = ?", (annotator_id,))
        record_event(con, annotator_id, "consent",
                     {"sha256": hashlib.sha256(study.consent.encode()).hexdigest()}, session)


def check_comprehension(db: str | os.PathLike, study: StudyInfo, annotator_id: int, answers: Sequence[Any], *,
                        session: str | None = None) -> list[int]:
    """Check and log one attempt at the comprehension questions; returns the 0-based numbers of the wrong or
    missing answers (empty: passed, and the annotator may answer the items)."""
    qs = study.questions
    if not isinstance(answers, (list, tuple)) or len(answers) != len(qs):
        got = len(answers) if isinstance(answers, (list, tuple)) else 0
        raise StudyInputError(f"expected {len(qs)} answers, got {got}", field="questions")
    wrong = [k for k, (q, a) in enumerate(zip(qs, answers)) if a != q["answer"]]
    session = _check_session(session)
    with transaction(db) as con:
        row = _annotator_row(con, study, annotator_id)
        if study.consent and row["consented_at"] is None:
            raise StudyInputError("accept the consent form first", field="stage")
        record_event(con, annotator_id, "comprehension",
                     {"answers": [a if isinstance(a, str) and len(a) <= MAX_TEXT else None for a in answers],
                      "wrong": wrong}, session)
        if not wrong:
            con.execute("UPDATE annotators SET qualified_at = COALESCE(qualified_at, strftime('%Y-%m-%dT%H:%M:%fZ', "
                        "'now')) WHERE id = ?", (annotator_id,))
    return wrong


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


# ------------------------------------------------------------------------------------------- validation
def _number(name: str, value: Any, lo: float, hi: float, *, whole: bool = False) -> float:
    """A finite real number in ``[lo, hi]`` (``whole``: on the slider's steps of 1); booleans and text are
    refused, not converted."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise StudyInputError(f"{name} must be a number in [{lo:g}, {hi:g}], got {str(value)[:40]!r}", field=name)
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise StudyInputError(f"{name} must be in [{lo:g}, {hi:g}], got {value!r}", field=name)
    if whole and value != round(value):
        raise StudyInputError(f"{name} must be a whole number (the slider moves in steps of 1), got {value!r}",
                              field=name)
    return value


def _choice(name: str, value: Any, allowed: Sequence[str], *, optional: bool = False, label: str = "") -> str | None:
    if optional and (value is None or value == "" or value == "None"):
        return None
    if value is None or value == "":
        raise StudyInputError(f"choose the {label or name}", field=name)
    if not isinstance(value, str) or len(value) > MAX_TEXT or value not in allowed:
        shown = str(value)[:40] if value is not None else None
        raise StudyInputError(f"{label or name} must be one of {', '.join(allowed)}{' or None' if optional else ''}, "
                              f"got {shown!r}", field=name)
    return value


def check_clicks(clicks: Any, height: int, width: int) -> list[list[float]]:
    """1..20 clicks ``[x, y]`` on a ``width x height`` image (see :class:`Answer`); a click off the image is
    refused, never moved onto it."""
    if not isinstance(clicks, (list, tuple)):
        raise StudyInputError(f"clicks must be a list of [x, y] pairs, got {type(clicks).__name__}", field="clicks")
    if not clicks:
        raise StudyInputError("click on the picture (at least once) before you submit", field="clicks")
    if len(clicks) > MAX_CLICKS:
        raise StudyInputError(f"at most {MAX_CLICKS} clicks per picture, got {len(clicks)}: clear some", field="clicks")
    pts = []
    for k, pt in enumerate(clicks):
        if not isinstance(pt, (list, tuple)) or len(pt) != 2:
            raise StudyInputError(f"clicks[{k}] must be an [x, y] pair, got {str(pt)[:40]!r}", field="clicks")
        x = _number(f"clicks[{k}].x", pt[0], -math.inf, math.inf)
        y = _number(f"clicks[{k}].y", pt[1], -math.inf, math.inf)
        if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
            raise StudyInputError(f"clicks[{k}] at ({x:g}, {y:g}) lies outside the {width} x {height} picture; "
                                  "click on the picture", field="clicks")
        pts.append([x, y])
    return pts


def validate_answer(mode: str, answer: Answer, asg: Assignment) -> dict[str, Any]:
    """Check ``answer`` against the study's mode and the item; returns the response columns to store.

    Raises :class:`StudyInputError` whose ``field`` names the control at fault.
    """
    item, flags = asg.item, []
    out: dict[str, Any] = {"left_is_image1": int(asg.left_is_image1)}
    if mode == "infer":
        slider = _number("slider", answer.slider, 0, 100, whole=True)
        if not (answer.slider_touched is True or slider != SLIDER_START):
            raise StudyInputError("move the mixing slider to your answer, or press 50/50 if the picture looks evenly "
                                  "mixed", field="slider")
        conf = _number("confidence", answer.confidence, 0, 100, whole=True)
        conf_touched = answer.confidence_touched is True or conf != SLIDER_START
        if not conf_touched:
            flags.append("confidence_untouched")
        right_share = slider / 100.0
        out.update(slider=slider, slider_start=SLIDER_START, slider_touched=1, confidence=conf / 100.0,
                   confidence_touched=int(conf_touched),
                   weight1=1.0 - right_share if asg.left_is_image1 else right_share)
    elif mode == "softlabel":
        allowed = asg.choice_order or [item["class1"], item["class2"]]
        c1 = _choice("choice1", answer.choice1, allowed, label="most likely class")
        p1 = _number("prob1", answer.prob1, 0, 100, whole=True)
        c2 = _choice("choice2", answer.choice2, allowed, optional=True, label="second most likely class")
        p2 = 0.0 if c2 is None else _number("prob2", answer.prob2, 0, 100, whole=True)
        if c2 == c1:
            raise StudyInputError("the second most likely class must differ from the first (pick another class or "
                                  "None)", field="choice2")
        if p2 > p1:
            raise StudyInputError(f"the second class's probability ({p2:g} %) must not exceed the first's ({p1:g} %): "
                                  "the first class is the most likely", field="prob2")
        if p1 + p2 > 100:
            raise StudyInputError(f"the two probabilities add up to {p1 + p2:g} %; together they may be at most "
                                  "100 %", field="prob2")
        probs = {c1: p1, **({c2: p2} if c2 else {})}
        m1, m2 = probs.get(item["class1"], 0.0), probs.get(item["class2"], 0.0)
        out.update(choice1=c1, prob1=p1 / 100.0, choice2=c2, prob2=p2 / 100.0,
                   weight1=m1 / (m1 + m2) if m1 + m2 > 0 else None)
    elif mode == "click":
        h, w = item["height"], item["width"]
        if h is None or w is None:
            raise StudyInputError(f"item {item['key']!r} has no image size, so it cannot take clicks", field="item")
        out.update(clicks=json.dumps(check_clicks(answer.clicks, int(h), int(w))))
    else:
        raise StudyInputError(f"unknown study mode {mode!r}", field="mode")
    out["flags"] = ",".join(flags)
    return out


def _locate(con: sqlite3.Connection, study: StudyInfo, annotator_id: int, position: Any, item_id: Any,
            *, answering: bool) -> sqlite3.Row:
    """The annotator's assignment at ``position`` (which must hold ``item_id``), after the stage checks."""
    if isinstance(position, bool) or not isinstance(position, int) or isinstance(item_id, bool) \
            or not isinstance(item_id, int):
        raise StudyInputError(f"position and item id must be integers, got {position!r} and {item_id!r}",
                              field="item")
    ann = _annotator_row(con, study, annotator_id)
    if answering and study.consent and ann["consented_at"] is None:
        raise StudyInputError("accept the consent form before answering items", field="stage")
    if answering and study.questions and ann["qualified_at"] is None:
        raise StudyInputError("answer the comprehension questions before the items", field="stage")
    row = con.execute("SELECT * FROM assignments WHERE annotator_id = ? AND position = ?",
                      (annotator_id, position)).fetchone()
    if row is None or row["item_id"] != item_id:
        exists = con.execute("SELECT study_id FROM items WHERE id = ?", (item_id,)).fetchone()
        if exists is None or exists["study_id"] != study.id:
            raise StudyInputError(f"unknown item id {item_id} in study {study.name!r}", field="item")
        raise StudyInputError(f"item {item_id} is not assigned to this annotator at position {position}; "
                              "reload the page to get your current item", field="item")
    return row


def submit_answer(db: str | os.PathLike, study: StudyInfo, annotator_id: int, position: int, item_id: int,
                  answer: Answer, *, rt_ms: float | None = None, session: str | None = None) -> bool:
    """Validate and store one answer in one transaction; returns False when it was a duplicate (kept once).

    The item must be the one assigned to this annotator at ``position``, and the annotator must have accepted
    the consent and passed the questions (when the study has them); anything else is rejected with a
    message saying which.
    """
    session = _check_session(session)
    if rt_ms is not None:
        rt_ms = _number("rt_ms", rt_ms, 0, 7 * 24 * 3600 * 1000)
    with transaction(db) as con:
        row = _locate(con, study, annotator_id, position, item_id, answering=True)
        cols = validate_answer(study.mode, answer, _assignment(con, row))
        cols.update(annotator_id=annotator_id, item_id=item_id, repeat=row["repeat"], position=position,
                    rt_ms=rt_ms, session=session)
        names = ", ".join(cols)
        cur = con.execute(f"INSERT OR IGNORE INTO responses({names}) VALUES ({', '.join('?' * len(cols))})",
                          tuple(cols.values()))
        return cur.rowcount == 1


def record_missing_stimulus(db: str | os.PathLike, study: StudyInfo, annotator_id: int, position: int,
                            item_id: int, *, session: str | None = None) -> None:
    """Mark the annotator's assignment as skipped because its image file is gone (an empty response flagged
    ``stimulus_missing``, which the analysis drops and counts), so the annotator goes on to the next item."""
    session = _check_session(session)
    with transaction(db) as con:
        row = _locate(con, study, annotator_id, position, item_id, answering=False)
        con.execute("INSERT OR IGNORE INTO responses(annotator_id, item_id, repeat, position, left_is_image1, flags, "
                    "session) VALUES (?, ?, ?, ?, ?, 'stimulus_missing', ?)",
                    (annotator_id, item_id, row["repeat"], position, row["left_is_image1"], session))
        record_event(con, annotator_id, "stimulus_missing", {"item_id": item_id, "position": position}, session)


# --------------------------------------------------------------------------------------------- practice
def practice_feedback(mode: str, item: dict[str, Any], answer: Answer, *, left_is_image1: bool) -> tuple[bool, str]:
    """Validate a practice answer exactly as a real one (so the same mistakes are caught) and say how it
    relates to the practice image, which is an unmixed photograph of ``item["class1"]``: feedback never
    reveals a mixer's label. Returns ``(right, text)``."""
    pure, other = item["class1"], item["class2"]
    asg = Assignment(0, 0, 0, left_is_image1, list(item.get("choices") or []),
                     {**item, "key": f"practice {item.get('position', 0)}"})
    cols = validate_answer(mode, answer, asg)
    if mode == "infer":
        w = cols["weight1"]
        if w >= 1 - PRACTICE_TOLERANCE:
            return True, f"This picture shows only a **{pure}**, and your answer gives it {w:.0%}."
        return False, (f"This picture shows only a **{pure}** (no {other}), so the slider belongs at the *{pure}* end; "
                       f"your answer gives the {pure} {w:.0%}. Move the slider towards the class you see.")
    if mode == "softlabel":
        if cols["choice1"] == pure:
            return True, f"This picture shows a **{pure}**."
        return False, f"This picture shows a **{pure}**; you chose {cols['choice1']} as the most likely class."
    clicks = json.loads(cols["clicks"])
    box = (item.get("answer") or {}).get("box")
    if box is None:
        return True, (f"You clicked {len(clicks)} time(s). This picture shows a **{pure}**: in the study, click on the "
                      "object that decides what the picture shows.")
    y1, x1, y2, x2 = box
    if any(x1 - 0.5 <= x <= x2 - 0.5 and y1 - 0.5 <= y <= y2 - 0.5 for x, y in clicks):
        return True, f"Your click is on the **{pure}** (inside the green box)."
    return False, f"The **{pure}** is inside the green box; your clicks missed it. Click on the object itself."
