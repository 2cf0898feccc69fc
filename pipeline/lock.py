"""One process per run folder: a lock file that names its holder.

`pearl search`, `pearl run`, `pearl train` / `pearl teacher train` (their output folder) and
`pearl tables build` (its output file) hold a lock for as long as they write there; a second
process gets a `LockHeldError` naming the holder (pid, host, command, since when) and what to do.

The lock is an ``fcntl.flock`` on the lock file, not the file's existence (``O_CREAT|O_EXCL``):
the kernel drops a flock when its holder dies, ``kill -9`` included, so a dead process never
blocks a folder and no one has to guess from a pid whether the holder still lives (pids are
reused, and a pid says nothing about another host).  The file's content (pid, host, command,
start time, as JSON) only serves the messages: a file with content but no flock was left by a
holder that died, and the next process takes it over with a note saying so.  On release the
file is removed; a taker checks that the file it locked is still the one at the path (not one
unlinked by its previous holder a moment before), so removing it is safe.

A process that already holds a run folder's lock may take it again (a `Search` built inside
`pearl search` or `pearl run`, which lock the folder first): the inner one is a no-op, and the
lock is held until the outermost one is released.  A flock of a second file descriptor would
refuse the process itself.

On network file systems, flock works across machines where the file system supports locks
(Linux NFS emulates flock with byte-range locks); on one that does not, two machines could both
take it, and the host in the message tells the user which one holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

LOCK_FILE_NAME = "pearl.lock"
_HELD: dict[Path, int] = {}  # lock file (resolved) -> how many times this process holds it


class LockHeldError(RuntimeError):
    """Another process holds the lock; the message names it and what to do."""


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    command: str
    since: float  # seconds since the epoch

    @classmethod
    def this_process(cls) -> Holder:
        command = shlex.join(["pearl", *sys.argv[1:]])
        return cls(os.getpid(), socket.gethostname(), command, time.time())

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), str(data["command"]), data["since"])
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on host {self.host} (`{self.command}`, since {started})"


class ProcessLock:
    """An exclusive lock on `path` (a context manager); `subject` says what it protects, for
    the messages (e.g. "run folder runs/a")."""

    nests = False  # may this process take it again while holding it (see the docstring)?

    def __init__(self, path: str | Path, subject: str, *, log: Callable[[str], None] | None):
        self.path = Path(path)
        self.subject = subject
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self._fd: int | None = None
        self._nested: Path | None = None  # set while this object is a nested hold

    def acquire(self) -> ProcessLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = self.path.resolve()
        if self.nests and key in _HELD:  # held by this process already: nested
            _HELD[key] += 1
            self._nested = key
            return self
        for _ in range(20):  # retried only while a previous holder is removing the file
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise LockHeldError(self._held_message(holder)) from None
            if _is_current(fd, self.path):
                break
            os.close(fd)
        else:  # pragma: no cover - the file changed under us 20 times in a row
            raise LockHeldError(f"{self.path} keeps changing; is another pearl starting?")
        try:
            self._take_over(fd)
        except OSError as error:  # a full disk: no room for the holder's line
            self.path.unlink(missing_ok=True)
            os.close(fd)
            raise OSError(error.errno, error.strerror, str(self.path)) from None
        self._fd = fd
        _HELD[key] = 1
        return self

    def _take_over(self, fd: int) -> None:
        left = Holder.parse(os.pread(fd, 4096, 0).decode(errors="replace"))
        if left is not None:
            self.log(
                f"note: {self.path} was left by {left.describe()}, which stopped without "
                "releasing it (killed?); taking it over"
            )
        data = json.dumps(asdict(Holder.this_process())).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)

    def _held_message(self, holder: Holder | None) -> str:
        who = holder.describe() if holder else "another process (it is starting up)"
        stop = f" or stop it (`kill {holder.pid}` on {holder.host})" if holder else ""
        return (
            f"{self.subject} is in use by {who}: only one pearl process may write there at a "
            f"time. Wait until it ends{stop}, then run your command again."
        )

    def release(self) -> None:
        if self._nested is not None:
            _HELD[self._nested] -= 1
            self._nested = None
            return
        if self._fd is None:
            return
        _HELD.pop(self.path.resolve(), None)
        self.path.unlink(missing_ok=True)  # while still holding it (see the module docstring)
        os.close(self._fd)  # drops the flock
        self._fd = None

    def __enter__(self) -> ProcessLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> Holder | None:
    """The holder written in the file; a holder that just took it may not have written yet."""
    for _ in range(10):
        holder = Holder.parse(os.pread(fd, 4096, 0).decode(errors="replace"))
        if holder is not None:
            return holder
        time.sleep(0.05)
    return None


def _is_current(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


class FolderLock(ProcessLock):
    """The lock of a run folder (``FOLDER/pearl.lock``).  A folder this lock created is removed
    again on release when nothing else was written into it (a failed start leaves no folder).
    A process that holds it may take it again (nested)."""

    nests = True

    def __init__(self, folder: str | Path, *, log: Callable[[str], None] | None = None) -> None:
        self.folder = Path(folder)
        super().__init__(self.folder / LOCK_FILE_NAME, f"run folder {self.folder}", log=log)
        self._created = False

    def acquire(self) -> FolderLock:
        self._created = not self.folder.exists()
        super().acquire()
        return self

    def release(self) -> None:
        held = self._fd is not None
        super().release()
        if held and self._created:
            try:
                self.folder.rmdir()  # only when empty
            except OSError:
                pass


def folder_lock(folder: str | Path, log: Callable[[str], None] | None = None) -> FolderLock:
    """The lock of run folder `folder` (use it as a context manager)."""
    return FolderLock(folder, log=log)


def output_lock(path: str | Path, log: Callable[[str], None] | None = None) -> ProcessLock:
    """The lock of an output file: ``PATH.lock`` beside it."""
    path = Path(path)
    return ProcessLock(path.with_name(path.name + ".lock"), f"output {path}", log=log)


def folder_contents(folder: Path) -> list[str]:
    """The names in `folder`, without its lock file."""
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_FILE_NAME)
