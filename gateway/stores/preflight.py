"""Before serving: can the gateway use its files? Otherwise one line says which file and what
to do, instead of a traceback from deep inside the first request or the lifespan.

Checked (nothing is created or changed here): the data dir is a writable directory; the
embedded SQLite files in it, when they exist, are SQLite databases the gateway may write; the
keys dir, when the gateway must generate a key in it, is writable, and its PEM files readable.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from gateway.settings import Settings

SQLITE_FILES = ("trellis.db", "revocations.db")
"""The embedded stores in ``gateway.data_dir`` (the operation store, the event bus's tables,
the revocations)."""


class PreflightError(Exception):
    """One line: the path, what is wrong, and what to do."""


def preflight(settings: Settings) -> None:
    """Raise ``PreflightError`` for the first file the gateway could not use."""
    data_dir = Path(settings.gateway.data_dir)
    _writable_dir(data_dir, "gateway.data_dir")
    if not settings.shared_stores:
        for name in SQLITE_FILES:
            _sqlite_file(data_dir / name)
    oauth = settings.oauth
    keys_dir = Path(oauth.keys_dir)
    if keys_dir.is_dir():
        for pem in sorted(keys_dir.glob("*.pem")):
            if not os.access(pem, os.R_OK):
                raise PreflightError(
                    f"{pem}: signing key not readable by this user; "
                    "fix its owner or mode (0600, owned by the gateway's user)"
                )
        if oauth.generate_if_missing and not oauth.keys and not any(keys_dir.glob("*.pem")):
            _writable_dir(keys_dir, "oauth.keys_dir")
    elif oauth.generate_if_missing and not oauth.keys:
        _writable_dir(keys_dir, "oauth.keys_dir")


def _writable_dir(path: Path, setting: str) -> None:
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # created at startup under its first existing ancestor
    if not existing.is_dir():
        raise PreflightError(
            f"{existing}: not a directory ({setting} is {path}); "
            f"remove it or point {setting} elsewhere"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PreflightError(
            f"{existing}: directory not writable by this user ({setting} is {path}); "
            f"fix its owner or mode, or point {setting} elsewhere"
        )


def _sqlite_file(path: Path) -> None:
    if not path.exists():
        return  # created on first use
    if not path.is_file():
        raise PreflightError(f"{path}: not a file; remove it (the store is created at start)")
    if not os.access(path, os.R_OK | os.W_OK):
        raise PreflightError(
            f"{path}: store not readable and writable by this user; fix its owner or mode (0600)"
        )
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise PreflightError(
            f"{path}: store unreadable ({exc}); stop every gateway using it, then restore it "
            f"from a backup or move it aside to start empty (see docs/operations.md)"
        ) from None
