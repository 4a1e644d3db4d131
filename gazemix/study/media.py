"""Where a study's stimuli live, under which names, and how they appear on disk all at once.

Every study gets a fresh folder ``<db stem>_media/<random>/``; each file in it is named by an HMAC of the
item's key under the study's secret (stored in the database, never served), so nothing in a name tells the
mixer, the index or whether an item is a check, and names cannot be recomputed without the secret. Files are
written into a hidden ``.building-<random>`` folder, which is renamed into place inside the transaction that
stores the study (:meth:`StudyMedia.move_into_place` as ``create_study(before_commit=...)``): a study's files
are never rewritten once it exists, and a refused or interrupted build leaves no study behind.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import sqlite3
from pathlib import Path

__all__ = ["StudyMedia", "media_folder", "stimulus_stem"]


def stimulus_stem(secret: str, key: str) -> str:
    """The file stem of a stimulus: HMAC-SHA256 of its key under the study's secret, 24 hex digits."""
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()[:24]


def media_folder(db: Path) -> Path:
    """The folder holding the stimulus folders of every study in ``db``."""
    return db.parent / f"{db.stem}_media"


class StudyMedia:
    """A new study's stimulus folder: write files with :meth:`path`, then :meth:`move_into_place` at commit,
    or :meth:`discard` everything when the study is not stored."""

    def __init__(self, db: str | os.PathLike) -> None:
        db = Path(db)
        root = media_folder(db)
        root.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        self.secret = secrets.token_hex(16)
        self.tmp, self.final = root / f".building-{token}", root / token
        self.rel = self.final.relative_to(db.parent)
        self.tmp.mkdir()

    def path(self, key: str, suffix: str) -> tuple[Path, str]:
        """``(file to write now, path to store)`` of the file ``key`` with ``suffix`` (e.g. ``.png``)."""
        stem = stimulus_stem(self.secret, key)
        return self.tmp / f"{stem}{suffix}", str(self.rel / f"{stem}{suffix}")

    def move_into_place(self, con: sqlite3.Connection, study_id: int) -> None:
        """Rename the folder to its final name (call inside the study's transaction, before COMMIT)."""
        os.rename(self.tmp, self.final)

    def discard(self) -> None:
        """Remove the files (the study was not stored)."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        shutil.rmtree(self.final, ignore_errors=True)
