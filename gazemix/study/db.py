"""SQLite storage of judgment studies: schema, connections and the one-transaction-per-write rule.

Every write opens its own connection (Gradio runs handlers on worker threads; a shared connection is
unsafe), runs inside one ``BEGIN IMMEDIATE`` transaction and closes. The database runs in WAL mode, so
readers never block the writer and a killed process loses no committed answer.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Iterator

__all__ = ["SCHEMA_VERSION", "StudyInputError", "connect", "init_db", "open_existing", "transaction"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0


class StudyInputError(ValueError):
    """A request the study cannot accept; the message names the field and what to send instead."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    mode TEXT NOT NULL CHECK (mode IN ('infer', 'softlabel', 'click')),
    instructions TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL DEFAULT '{}',           -- JSON: seed, data set, items per annotator, repeats
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    key TEXT NOT NULL,                           -- stable name, e.g. the H-Mix stimulus file name
    image_path TEXT,                             -- PNG relative to the database folder (NULL: not available)
    gaze_path TEXT,                              -- .npy gaze map of the mixed image, peak 1 (NULL: no gaze)
    height INTEGER, width INTEGER,
    mixer TEXT NOT NULL,                         -- 'none' for attention checks
    params TEXT NOT NULL DEFAULT '{}',           -- JSON provenance: mixer options and sampled parameters
    source1 TEXT, source2 TEXT,                  -- ids of image 1 (own) and image 2 (partner)
    class1 TEXT NOT NULL, class2 TEXT NOT NULL,
    lam REAL NOT NULL CHECK (lam >= 0 AND lam <= 1),        -- label weight of image 1
    gaze_lam REAL CHECK (gaze_lam >= 0 AND gaze_lam <= 1),  -- g_own / (g_own + g_partner)
    choices TEXT NOT NULL DEFAULT '[]',          -- JSON class names offered in soft-label mode
    is_check INTEGER NOT NULL DEFAULT 0,
    check_answer TEXT,                           -- JSON known answer of an attention check
    seed INTEGER,
    UNIQUE (study_id, key)
);
CREATE TABLE IF NOT EXISTS annotators (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    external_id TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (study_id, external_id)
);
CREATE TABLE IF NOT EXISTS assignments (
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    position INTEGER NOT NULL,                   -- 0-based place in the annotator's order
    item_id INTEGER NOT NULL REFERENCES items(id),
    repeat INTEGER NOT NULL DEFAULT 0,           -- 1 for the repeated (consistency) trials
    left_is_image1 INTEGER NOT NULL,             -- which class is shown on the left
    choice_order TEXT NOT NULL DEFAULT '[]',     -- JSON order of the soft-label choices shown
    PRIMARY KEY (annotator_id, position),
    UNIQUE (annotator_id, item_id, repeat)
);
CREATE TABLE IF NOT EXISTS responses (
    id INTEGER PRIMARY KEY,
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    item_id INTEGER NOT NULL REFERENCES items(id),
    repeat INTEGER NOT NULL DEFAULT 0,
    position INTEGER,
    weight1 REAL CHECK (weight1 >= 0 AND weight1 <= 1),     -- human weight of image 1
    confidence REAL CHECK (confidence >= 0 AND confidence <= 1),
    slider REAL,                                 -- raw slider 0..100 (0 = all left class)
    slider_start REAL,
    slider_touched INTEGER,
    confidence_touched INTEGER,
    left_is_image1 INTEGER,
    choice1 TEXT, prob1 REAL, choice2 TEXT, prob2 REAL,
    clicks TEXT,                                 -- JSON [[x, y], ...] in image pixels
    excluded TEXT,                               -- JSON classes marked "definitely not" (H-Mix soft labels)
    flags TEXT NOT NULL DEFAULT '',              -- comma-separated quality flags
    rt_ms REAL,
    session TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (annotator_id, item_id, repeat)
);
CREATE INDEX IF NOT EXISTS responses_item ON responses(item_id);
"""


def connect(db_path: str | os.PathLike) -> sqlite3.Connection:
    """A new connection (autocommit; use :func:`transaction` to write) with a busy timeout and foreign keys."""
    con = sqlite3.connect(str(db_path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA foreign_keys = ON")
    con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    con.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable across application crashes
    return con


@contextlib.contextmanager
def transaction(db_path: str | os.PathLike) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE`` transaction on a fresh connection: committed on success, rolled back on error."""
    con = connect(db_path)
    try:
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    finally:
        con.close()


def init_db(db_path: str | os.PathLike) -> Path:
    """Create (or open) the database, switch it to WAL and create the tables; returns its path."""
    path = Path(db_path)
    if path.exists() and path.is_dir():
        raise StudyInputError(f"--db {path} is a folder; pass a file name such as study.sqlite")
    path.parent.mkdir(parents=True, exist_ok=True)
    con = connect(path)
    try:
        con.execute("PRAGMA journal_mode = WAL")
        con.executescript(SCHEMA)
        con.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    finally:
        con.close()
    return path


def open_existing(db_path: str | os.PathLike) -> Path:
    """The path of an existing study database, or a clear error."""
    path = Path(db_path)
    if not path.is_file():
        raise StudyInputError(f"--db {path} does not exist; create it with `gazemix study build ... --db {path}` "
                              f"or `gazemix humans import-hmix DIR --db {path}`")
    con = connect(path)
    try:
        ok = con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='responses'").fetchone()
    except sqlite3.DatabaseError as err:
        raise StudyInputError(f"--db {path} is not an SQLite database ({err})") from err
    finally:
        con.close()
    if not ok:
        raise StudyInputError(f"--db {path} is an SQLite file but not a gazemix study (no 'responses' table)")
    return path
