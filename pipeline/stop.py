"""Graceful stop: SIGTERM and Ctrl-C (SIGINT) end a command between writes, never inside one.

While `stop_on_signals()` is active, either signal raises `StopRequested` in the main thread at
once, unless a write is in progress (`write_in_progress()`: a candidate's row and its line in
evaluations.jsonl, a controller update): then the write finishes first and the stop is raised as
it ends.  The command then says how to continue (``--resume``), and its ``finally`` blocks close
worker processes and release the folder lock on the way out.

A full disk stops a command too: `disk_full_message` is what the commands say then.

`StopRequested` is a `BaseException` (as `KeyboardInterrupt` is), so ``except Exception`` in
the code it passes through does not swallow it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from models.files import disk_full

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_writes_in_progress = 0
_pending: int | None = None  # a signal received during a write


class StopRequested(BaseException):
    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_status = 128 + signum  # what a shell reports for a process ended by it
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def _handle(signum: int, frame) -> None:
    global _pending
    if _writes_in_progress:
        _pending = signum
        return
    raise StopRequested(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into `StopRequested` inside this block (main thread only;
    elsewhere it does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, _handle) for number in SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def write_in_progress() -> Iterator[None]:
    """A write that a stop must not cut in half: a signal that arrives during it is raised as
    `StopRequested` when the outermost such block ends."""
    global _writes_in_progress, _pending
    _writes_in_progress += 1
    try:
        yield
    finally:
        _writes_in_progress -= 1
        if not _writes_in_progress and _pending is not None:
            signum, _pending = _pending, None
            raise StopRequested(signum)


def disk_full_message(error: BaseException, store: Path, resume: str) -> str | None:
    """What to tell the user when `error` came from a full disk (else None): which file could
    not be written (`store` for SQLite's error, which names none), that what was written
    before is intact (every write is atomic or an append of whole lines; an SQLite transaction
    rolls back), and how to go on (`resume`: how to continue, e.g. the command in backquotes)."""
    if not disk_full(error):
        return None
    if isinstance(error, OSError):
        where = error.filename or "a file"
        reason = error.strerror or "no space left on device"
    else:
        where, reason = store, str(error)
    return (
        f"the disk is full: writing {where} failed ({reason}). Everything written before is "
        f"intact (nothing was half-written). Free space on that disk, then continue with "
        f"{resume}"
    )
