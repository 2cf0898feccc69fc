"""A persistent cache of latency measurements in SQLite (standard library).

Key: sha256 of the model file's bytes + the device's `fingerprint_id` + the canonical JSON of the
measurement settings; so a re-exported model, another device or runtime version, or different
timing settings never hit a stale entry.  Value: the `Measurement` as JSON plus the time it was
stored.  Every write is one transaction: a crash or error mid-write leaves no entry at all.
The cache is disposable: a damaged file is moved aside and rebuilt, and a cache that fails
mid-run is dropped (measurements go on without it), each with one warning.

Default file: ``measurements.sqlite`` in `models.cache_dir.cache_root()` (``$PEARL_CACHE_DIR``,
else ``~/.cache/pearl``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from device_bench.measurement import (
    LatencyBackend,
    Measurement,
    canonical_json,
    fingerprint_id,
)
from models.cache_dir import MEASUREMENTS_FILE, cache_root
from models.damage import (
    SQLITE_SIDECARS,
    DamagedFileWarning,
    is_sqlite_damage,
    set_aside,
    sqlite_problem,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS measurements (
    key TEXT PRIMARY KEY,
    model_sha256 TEXT NOT NULL,
    device TEXT NOT NULL,
    settings TEXT NOT NULL,
    measurement TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


def default_cache_path() -> Path:
    """``$PEARL_CACHE_DIR/measurements.sqlite``, else ``~/.cache/pearl/measurements.sqlite``."""
    return cache_root() / MEASUREMENTS_FILE


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def settings_json(settings: Any) -> str:
    """Canonical JSON of a settings object (one with `to_dict`, a dataclass, a mapping, or
    None)."""
    if settings is None:
        return "null"
    if hasattr(settings, "to_dict"):
        settings = settings.to_dict()
    elif dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        settings = dataclasses.asdict(settings)
    return canonical_json(settings)


def cache_key(model_sha256: str, device_id: str, settings: Any) -> str:
    """The cache key: sha256 over model hash, device fingerprint id and settings JSON."""
    text = "\n".join((model_sha256, device_id, settings_json(settings)))
    return hashlib.sha256(text.encode()).hexdigest()


class CacheEntry(NamedTuple):
    measurement: Measurement
    created_at: float  # seconds since the epoch


class CacheError(RuntimeError):
    """The cache file could not be read or written (damaged, locked too long, disk full)."""


class MeasurementCache:
    """`get`/`put` of measurements by key in one SQLite file (created on first use).

    The file is checked (``PRAGMA quick_check``) the first time this object opens it; a damaged
    file is moved aside with a warning (`models.damage`) and a new one started.  An SQLite
    error after that raises `CacheError`; `measure_cached` then drops the cache (`drop`) and
    measures without it."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.dropped: str | None = None  # why this cache is no longer used, once dropped
        self._checked = False

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._checked:
            self._checked = True
            self._heal()
        connection = sqlite3.connect(self.path, timeout=30.0)
        try:
            connection.execute(_SCHEMA)
            connection.commit()
        except BaseException:
            connection.close()
            raise
        return connection

    def _heal(self) -> None:
        if not self.path.exists():
            return
        problem = sqlite_problem(self.path)
        if problem is not None:
            self._set_aside(problem)

    def _set_aside(self, problem: str, **kwargs) -> None:
        set_aside(self.path, "measurement cache", problem, sidecars=SQLITE_SIDECARS, **kwargs)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """An open connection; SQLite errors become `CacheError`s naming the file."""
        try:
            connection = self._connect()
            try:
                yield connection
            finally:
                connection.close()
        except sqlite3.Error as error:
            raise CacheError(f"measurement cache {self.path}: {error}") from error

    def drop(self, error: BaseException) -> None:
        """Stop using this cache (one warning); a damaged file is moved aside for next time."""
        if self.dropped is not None:
            return
        self.dropped = str(error)
        then = "measuring without a cache for the rest of this run"
        cause = error.__cause__ or error
        if is_sqlite_damage(cause) and self.path.exists():
            self._set_aside(str(cause), then=then)
        else:
            warnings.warn(f"{error}; {then}", DamagedFileWarning, stacklevel=2)

    def get_entry(self, key: str) -> CacheEntry | None:
        if self.dropped is not None or not self.path.exists():
            return None
        with self._connection() as connection:
            row = connection.execute(
                "SELECT measurement, created_at FROM measurements WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        try:
            return CacheEntry(Measurement.from_dict(json.loads(row[0])), float(row[1]))
        except (ValueError, TypeError):
            return None  # an entry from an incompatible version: treat it as a miss

    def get(self, key: str) -> Measurement | None:
        entry = self.get_entry(key)
        return entry.measurement if entry else None

    def put(
        self,
        key: str,
        measurement: Measurement,
        *,
        model_sha256: str = "",
        settings: Any = None,
    ) -> None:
        """Store (or replace) `key` in one transaction: committed whole or not at all."""
        if self.dropped is not None:
            return
        with self._connection() as connection, connection:  # commits, or rolls back
            connection.execute(
                "INSERT OR REPLACE INTO measurements "
                "(key, model_sha256, device, settings, measurement, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key,
                    model_sha256,
                    measurement.device,
                    settings_json(settings),
                    canonical_json(measurement.to_dict()),
                    time.time(),
                ),
            )

    def __len__(self) -> int:
        if not self.path.exists():
            return 0
        with self._connection() as connection:
            return int(connection.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])


class CacheResult(NamedTuple):
    measurement: Measurement
    cached: bool  # True when it came from the cache without timing anything


def key_for(backend: LatencyBackend, path: str | Path) -> tuple[str, str]:
    """``(cache key, model sha256)`` for timing `path` with `backend`."""
    model_sha = file_sha256(path)
    settings = getattr(backend, "settings", None)
    return cache_key(model_sha, fingerprint_id(backend.fingerprint()), settings), model_sha


def measure_cached(
    backend: LatencyBackend, path: str | Path, cache: MeasurementCache | None
) -> CacheResult:
    """The cached measurement of `path` on `backend`, or measure it now and store it.
    With ``cache=None`` it always measures and stores nothing; a cache that fails is dropped
    with a warning and the measurement goes on without it."""
    if cache is None:
        return CacheResult(backend.measure(path), False)
    if not Path(path).is_file():
        return CacheResult(backend.measure(path), False)  # the backend raises its clear error
    key, model_sha = key_for(backend, path)
    try:
        hit = cache.get(key)
    except CacheError as error:  # a cache never fails a measurement: go on without it
        cache.drop(error)
        hit = None
    if hit is not None:
        return CacheResult(hit, True)
    measurement = backend.measure(path)
    settings = getattr(backend, "settings", None)
    try:
        cache.put(key, measurement, model_sha256=model_sha, settings=settings)
    except CacheError as error:
        cache.drop(error)
    return CacheResult(measurement, False)
