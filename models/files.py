"""Atomic file writes, the one place every package writes a file that others may read.

A file is written to a temporary sibling and renamed over its final path, so a reader (or a
resume after a kill) sees the old file or the new one, never half of one.  The temporary name is
unique (several processes may write the same path) and keeps the final suffix (matplotlib and
torch choose formats by it).  This module imports nothing heavy: `android_runner` and
`latency_tables` use it too (every package may import `models`; `models/__init__` is empty).
"""

from __future__ import annotations

import json
import os
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
    finally:
        temporary.unlink(missing_ok=True)


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
