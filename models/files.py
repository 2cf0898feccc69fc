"""Atomic file writes, the one place every package writes a file that others may read.

A file is written to a temporary sibling and renamed over its final path, so a reader (or a
resume after a kill) sees the old file or the new one, never half of one.  The same holds when
the disk fills up (ENOSPC): the temporary file is removed, the old file stays, and the `OSError`
names the path (`disk_full` recognises it).  `append_line` is the append-only counterpart: a line
goes in whole or not at all.  The temporary name is
unique (several processes may write the same path) and keeps the final suffix (matplotlib and
torch choose formats by it).  This module imports nothing heavy: `android_runner` and
`latency_tables` use it too (every package may import `models`; `models/__init__` is empty).
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _process_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _process_umask()  # read once: changing the umask later races with other threads


@contextmanager
def atomic_path(path: str | os.PathLike, *, mode: int | None = None) -> Iterator[Path]:
    """Yields a temporary path next to `path`; when the block ends without an exception the
    temporary file is renamed over `path` (with permission bits `mode`, default: a normal file
    under the process umask), else removed.  Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_UMASK if mode is None else mode)
        os.replace(temporary, path)
    except OSError as error:
        raise _named(error, path) from None
    finally:
        temporary.unlink(missing_ok=True)


_FULL = (errno.ENOSPC, errno.EDQUOT)


def _named(error: OSError, path: Path) -> OSError:
    """`error` with `path` as its file name when it has none (a failed write() names none)."""
    if error.filename is None and error.errno in _FULL:
        return OSError(error.errno, os.strerror(error.errno), str(path))
    return error


# SQLite on a full disk: "database or disk is full", or (WAL mode) "disk I/O error" when it
# cannot make room for the shared-memory file beside the database
_SQLITE_FULL = (sqlite3.SQLITE_FULL, getattr(sqlite3, "SQLITE_IOERR_SHMSIZE", 4874))


def disk_full(error: BaseException) -> bool:
    """Did this error come from a full disk (or quota): an `OSError` ENOSPC / EDQUOT, or
    SQLite's error for it?"""
    if isinstance(error, OSError):
        return error.errno in _FULL
    code = getattr(error, "sqlite_errorcode", None)
    return (
        isinstance(error, sqlite3.Error)
        and code is not None
        and (code in _SQLITE_FULL or code & 0xFF == sqlite3.SQLITE_FULL)
    )


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append `line` and a newline to `path` in one write; when the write fails (a full disk)
    the file is cut back to its old length, so it never ends in half a line."""
    data = (line + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        except OSError as error:
            os.ftruncate(fd, size)
            raise _named(error, Path(path)) from None
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: str | bytes, *, mode: int | None = None) -> Path:
    """Write `data` (text as UTF-8, or bytes) to `path` atomically; returns the path."""
    with atomic_path(path, mode=mode) as temporary:
        if mode is not None:
            os.chmod(temporary, mode)  # private data is never readable by others, even briefly
        if isinstance(data, str):
            temporary.write_text(data, encoding="utf-8")
        else:
            temporary.write_bytes(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, document: Any) -> Path:
    """`document` as indented JSON with a final newline, written atomically."""
    return atomic_write(path, json.dumps(document, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """What `atomic_write_json` wrote, or None when the file is not there."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None
