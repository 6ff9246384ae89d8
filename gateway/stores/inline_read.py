"""Point reads of a local SQLite file on the event loop's own thread.

An indexed read of a WAL-mode file never waits for writers: it costs a few µs, where a hop to a
worker thread costs ~60 µs and a GIL hand-off (docs/performance.md). The connection is read-only
and never waits (timeout 0): when the file is busy anyway (a checkpoint) or not created yet, the
read raises ``sqlite3.OperationalError`` at once and the caller retries it in a worker thread.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


class InlineReader:
    """One read-only connection, opened on first use; call it from the event loop only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def fetchall(self, sql: str, args: tuple[str, ...]) -> list[tuple[Any, ...]]:
        conn = self._conn
        if conn is None:
            if not self.path.exists():
                raise sqlite3.OperationalError("not created yet")
            conn = sqlite3.connect(self.path, timeout=0, check_same_thread=False)
            conn.execute("PRAGMA query_only = 1")
            self._conn = conn
        return conn.execute(sql, args).fetchall()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
