"""Shared pieces of the judgment-app tests: ports, serving a small study, and driving it through the API."""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx

from gazemix.study.protocol import QUESTIONS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def rows(db: str | Path, sql: str, *args: Any) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


class Session:
    """One browser tab's worth of API calls (a ``gradio_client.Client``), with outputs named by elem_id."""

    def __init__(self, url: str, ids: list[str], **kw: Any) -> None:
        from gradio_client import Client

        self.client = Client(url, verbose=False, download_files=False, **kw)
        self.ids = ids

    def call(self, api: str, *args: Any) -> dict[str, Any]:
        out = self.client.predict(*args, api_name=api)
        out = out if isinstance(out, (list, tuple)) else [out]
        assert len(out) == len(self.ids), (len(out), self.ids)
        return dict(zip(self.ids, out))

    def enrol(self, pid: str, mode: str = "infer") -> dict[str, Any]:
        """Start, accept the consent and pass the default comprehension questions (a study without practice)."""
        self.call("/start", pid)
        self.call("/consent", True)
        self.call("/instructions_done")
        return self.call("/quiz", *[q["answer"] for q in QUESTIONS[mode]])


def text(value: Any) -> str:
    """The text of a returned Markdown/HTML value (an update dict when unchanged)."""
    if isinstance(value, dict):
        return str(value.get("value", ""))
    return "" if value is None else str(value)
