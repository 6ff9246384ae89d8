"""Files the gateway writes are private to it: directories 0700, files 0600.

Stores hold tokens' revocations, idempotency records, customers' cross-references and events
with personal data, so another local user must not read them, whatever the process umask.
SQLite creates its ``-wal`` and ``-shm`` files with the permissions of the database file, so
making the database file 0600 before SQLite opens it covers its companions too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` and each missing parent as 0700 (``mkdir(parents=True)`` would give the
    parents the umask's mode); tighten ``path`` if it exists and is ours."""
    missing = []
    at = path
    while not at.exists():
        missing.append(at)
        at = at.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process made it meanwhile
            pass
    _tighten(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty as 0600 if missing (its directory as :func:`private_dir`);
    tighten an existing one that is ours."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        _tighten(path, FILE_MODE)
    else:
        os.close(fd)
    return path


def _tighten(path: Path, mode: int) -> None:
    info = path.stat()
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & ~mode:
        path.chmod(mode)
