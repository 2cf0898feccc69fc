"""Damaged files: how a damaged cache or store is recognised, and moving it aside.

A cache is disposable: when a check finds it damaged (SQLite's ``PRAGMA quick_check``, a content
hash, a size, a file header, a zip archive's CRCs), it is renamed with a
``.damaged-YYYYmmdd-HHMMSS`` suffix (kept for a post-mortem, never read again), a
`DamagedFileWarning` says where it went, and the cache is rebuilt from nothing.  Standard library
only: every package uses this.
"""

from __future__ import annotations

import os
import sqlite3
import time
import warnings
import zipfile
from contextlib import closing
from pathlib import Path
from typing import BinaryIO

SQLITE_SIDECARS = ("-journal", "-wal", "-shm")  # SQLite's files beside a database
_DAMAGE_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class DamagedFileWarning(UserWarning):
    """A damaged cache file was moved aside (the message names both paths) and is rebuilt."""


def move_aside(path: str | os.PathLike, sidecars: tuple[str, ...] = ()) -> Path:
    """Rename `path` (a file or folder) to ``PATH.damaged-TIMESTAMP`` (a free name) and each
    existing ``PATH<sidecar>`` to the same name plus its sidecar suffix; returns the new path."""
    path = Path(path)
    base = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    target, n = base, 1
    while target.exists():
        target, n = base.with_name(f"{base.name}-{n}"), n + 1
    os.rename(path, target)
    for suffix in sidecars:
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.rename(side, target.with_name(target.name + suffix))
    return target


def set_aside(
    path: str | os.PathLike,
    what: str,
    problem: str,
    *,
    then: str = "starting a new one",
    sidecars: tuple[str, ...] = (),
) -> Path:
    """`move_aside` with one `DamagedFileWarning`: "WHAT PATH is damaged (PROBLEM); moved it to
    TARGET, THEN".  Returns where it went (`path` itself when another process moved it first)."""
    try:
        target = move_aside(path, sidecars)
    except FileNotFoundError:  # another process set it aside a moment ago
        return Path(path)
    warnings.warn(
        f"{what} {path} is damaged ({problem}); moved it to {target}, {then}",
        DamagedFileWarning,
        stacklevel=2,
    )
    return target


def is_sqlite_damage(error: BaseException) -> bool:
    """Does this sqlite3 error mean the file is damaged (not merely busy, read-only or full)?"""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, sqlite3.DatabaseError) and (code or 0) & 0xFF in _DAMAGE_CODES


def sqlite_problem(path: str | os.PathLike, *, full: bool = False) -> str | None:
    """None when the SQLite file at `path` passes ``PRAGMA quick_check`` (``integrity_check``
    with `full`), else what is wrong.  Errors other than damage (a locked file) are raised."""
    check = "integrity_check" if full else "quick_check"
    try:
        with closing(sqlite3.connect(path, timeout=30.0)) as connection:
            rows = connection.execute(f"PRAGMA {check}(5)").fetchall()
    except sqlite3.DatabaseError as error:
        if is_sqlite_damage(error):
            return str(error)
        raise
    lines = [line for row in rows for line in str(row[0]).splitlines()]
    if lines == ["ok"]:
        return None
    found = [line for line in lines if not line.startswith("***")]  # "*** in database main"
    return "; ".join(found[:3]) + ("; ..." if len(found) > 3 else "")


def zip_problem(path: str | os.PathLike | BinaryIO) -> str | None:
    """None when every member of the zip archive at `path` (a ``torch.save`` file or buffer)
    matches its CRC-32, else what is wrong: torch itself loads damaged tensor data without a
    complaint."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        return f"not a readable zip archive: {error}"
    return None if bad is None else f"{bad} fails its CRC-32 check"
