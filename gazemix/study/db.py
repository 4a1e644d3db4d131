"""SQLite storage of judgment studies: schema, connections and the one-transaction-per-write rule.

Every write opens its own connection (Gradio runs handlers on worker threads; a shared connection is
unsafe), runs inside one ``BEGIN IMMEDIATE`` transaction and closes. The database runs in WAL mode, so
readers never block the writer.

Durability is a property of the database (``meta.synchronous``, set when it is created):

- ``FULL`` (the default for studies): every commit waits until the write-ahead log is on disk, so an
  acknowledged answer survives a killed process *and* an operating-system crash or power cut.
- ``NORMAL``: the log is synced only at checkpoints; an acknowledged answer survives a killed process,
  but the last answers before an OS crash or power cut may be lost (the database itself stays intact).
  Faster on slow disks; a human study rarely needs that.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Iterator

__all__ = ["SCHEMA_VERSION", "SYNCHRONOUS", "StudyInputError", "connect", "init_db", "open_existing", "transaction"]

SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 30.0
SYNCHRONOUS = ("FULL", "NORMAL")


class StudyInputError(ValueError):
    """A request the study cannot accept; the message names the field and what to send instead.

    ``field`` names the input at fault (``"slider"``, ``"choice1"``, ``"clicks"``, ``"annotator"``, ...) so a
    screen can show the message next to that control.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    mode TEXT NOT NULL CHECK (mode IN ('infer', 'softlabel', 'click')),
    instructions TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL DEFAULT '{}',           -- JSON: seed, data, title, consent, questions, items per annotator
    secret TEXT,                                 -- salt of the stimulus file names; never leaves the server
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    key TEXT NOT NULL,                           -- stable name, e.g. the H-Mix stimulus file name
    image_path TEXT,                             -- PNG relative to the database folder (NULL: not available)
    gaze_path TEXT,                              -- .npy gaze map of the mixed image, peak 1 (NULL: no gaze)
    share_path TEXT,                             -- .npy per-pixel share of image 1 (click studies)
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
CREATE TABLE IF NOT EXISTS practice (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    role TEXT NOT NULL CHECK (role IN ('practice', 'example')),
    position INTEGER NOT NULL,
    image_path TEXT NOT NULL,
    height INTEGER NOT NULL, width INTEGER NOT NULL,
    class1 TEXT NOT NULL, class2 TEXT NOT NULL,
    choices TEXT NOT NULL DEFAULT '[]',
    answer TEXT NOT NULL DEFAULT '{}',           -- JSON: what the feedback checks (pure class, object box)
    UNIQUE (study_id, role, position)
);
CREATE TABLE IF NOT EXISTS annotators (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    external_id TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    consented_at TEXT,                           -- consent form accepted
    qualified_at TEXT,                           -- comprehension questions passed
    url_params TEXT NOT NULL DEFAULT '{}',       -- JSON PROLIFIC_PID / STUDY_ID / SESSION_ID of the first visit
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
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    kind TEXT NOT NULL,                          -- visit, consent, practice, comprehension, stimulus_missing
    detail TEXT NOT NULL DEFAULT '{}',           -- JSON
    session TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
"""

# columns added since schema 1: (table, column, declaration)
_ADDED = (("studies", "secret", "TEXT"), ("items", "share_path", "TEXT"), ("annotators", "consented_at", "TEXT"),
          ("annotators", "qualified_at", "TEXT"), ("annotators", "url_params", "TEXT NOT NULL DEFAULT '{}'"))


def _synchronous(con: sqlite3.Connection) -> str:
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'synchronous'").fetchone()
    except sqlite3.DatabaseError:
        return "FULL"
    return row[0] if row and row[0] in SYNCHRONOUS else "FULL"


def connect(db_path: str | os.PathLike) -> sqlite3.Connection:
    """A new connection (autocommit; use :func:`transaction` to write) with a busy timeout, foreign keys and
    the database's durability setting (``FULL`` unless it was created with ``NORMAL``)."""
    con = sqlite3.connect(str(db_path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA foreign_keys = ON")
    con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    con.execute(f"PRAGMA synchronous = {_synchronous(con)}")
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


def _check_path(path: Path) -> None:
    if path.is_dir():
        raise StudyInputError(f"--db {path} is a folder; pass a file name such as {path / 'study.sqlite'}", field="db")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StudyInputError(f"--db {path} cannot be read and written (permissions); pass a file you own",
                              field="db")
    folder = path.parent if str(path.parent) else Path(".")
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise StudyInputError(f"--db {path}: its folder {folder} is not writable (SQLite keeps its journal beside "
                              "the file); pass a path in a folder you can write", field="db")


def init_db(db_path: str | os.PathLike, *, synchronous: str = "FULL") -> Path:
    """Create (or open and upgrade) the database, switch it to WAL and create the tables; returns its path.

    ``synchronous`` (``FULL`` or ``NORMAL``, see the module docstring) is set when the database is created;
    an existing database keeps its own setting.
    """
    path = Path(db_path)
    synchronous = str(synchronous).upper()
    if synchronous not in SYNCHRONOUS:
        raise StudyInputError(f"--synchronous must be full or normal, got {synchronous.lower()!r}", field="db")
    _check_path(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise StudyInputError(f"--db {path}: {path.parent} is a file, not a folder", field="db")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StudyInputError(f"--db {path}: cannot create its folder ({err.strerror}); pass a path in a folder "
                              "you can write", field="db") from None
    try:
        con = connect(path)
        try:
            con.execute("PRAGMA journal_mode = WAL")
            con.executescript(SCHEMA)
            _upgrade(con)
            con.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('synchronous', ?)", (synchronous,))
            con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        finally:
            con.close()
    except sqlite3.DatabaseError as err:
        raise _db_error(path, err) from None
    return path


def _upgrade(con: sqlite3.Connection) -> None:
    """Add the columns that schema 1 databases lack (tables that exist keep their rows)."""
    for table, column, decl in _ADDED:
        cols = [r[1] for r in con.execute(f"PRAGMA table_info({table})").fetchall()]
        if cols and column not in cols:
            con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")


def _db_error(path: Path, err: sqlite3.DatabaseError) -> StudyInputError:
    text = str(err)
    if "not a database" in text or "malformed" in text:
        return StudyInputError(f"--db {path} is not an SQLite database ({text}); pass a study database or a new "
                               "file name", field="db")
    if "readonly" in text or "unable to open" in text or "disk I/O" in text:
        return StudyInputError(f"--db {path} cannot be written ({text}); pass a path in a folder you can write",
                               field="db")
    return StudyInputError(f"--db {path}: SQLite error ({text})", field="db")


def open_existing(db_path: str | os.PathLike, *, writable: bool = False) -> Path:
    """The path of an existing study database (an older schema is upgraded in place), or a clear error.

    ``writable``: also check that answers can be written (the file and its folder, for the journal).
    """
    path = Path(db_path)
    if path.is_dir():
        raise StudyInputError(f"--db {path} is a folder; pass the study's .sqlite file inside it", field="db")
    if not path.is_file():
        raise StudyInputError(f"--db {path} does not exist; create it with `gazemix study build ... --db {path}` "
                              f"or `gazemix humans import-hmix DIR --db {path}`", field="db")
    try:
        con = connect(path)
        try:
            ok = con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='responses'").fetchone()
            version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() if ok else None
        finally:
            con.close()
    except sqlite3.DatabaseError as err:
        raise _db_error(path, err) from None
    if not ok:
        raise StudyInputError(f"--db {path} is an SQLite file but not a gazemix study (no 'responses' table)",
                              field="db")
    if writable:
        _check_path(path)
    if version is None or version[0] != str(SCHEMA_VERSION):
        init_db(path)
    return path
