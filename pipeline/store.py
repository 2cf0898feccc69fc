"""The results store of a search: one SQLite file in the run folder (standard library).

Tables:

* ``candidates``: one row per proposed candidate, keyed by (generation, slot): arch string, key,
  choices, status, accuracy, latency (+ source, device, backend spec), MACs, params, memory (+
  source, when the run needs it: `pipeline.search`), reward, wall times, the config hash and,
  for a duplicate arch, the id of the row whose result it reuses.
  A row is inserted as soon as its training ends (status ``trained``), then completed with its
  latency and reward (``ok``, ``terminated`` when early termination cut it short, or ``failed``).
* ``generations``: one row per finished controller update, with the controller's full state
  (its RNG included) as a ``torch.save`` blob, the rewards it learnt from and its statistics.
  The update and its state are one transaction, so the latest row is always a consistent
  point to resume from.
* ``meta``: key/value facts about the run (config hash, creation time).

Every write is a transaction: a crash leaves each row either absent or complete.  A file that
fails ``PRAGMA quick_check`` when opened is a `StoreError` whose message names ``pearl search
--repair``; `pipeline.repair` rebuilds it from what survives.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from models.damage import sqlite_problem, zip_problem
from models.files import disk_full

STORE_FILE_NAME = "results.sqlite"
FINAL_STATUSES = ("ok", "terminated", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    generation INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    arch TEXT NOT NULL,
    key TEXT NOT NULL,
    choices TEXT NOT NULL,
    status TEXT NOT NULL,
    accuracy REAL,
    early_accuracy REAL,
    epochs_trained INTEGER,
    latency_ms REAL,
    latency_source TEXT,
    latency_device TEXT,
    latency_spec TEXT,
    latency_rank INTEGER,
    macs INTEGER NOT NULL,
    params INTEGER NOT NULL,
    memory_mb REAL,
    memory_source TEXT,
    reward REAL,
    train_seconds REAL,
    latency_seconds REAL,
    reused_from INTEGER,
    config_hash TEXT NOT NULL,
    error TEXT,
    created_at REAL NOT NULL,
    UNIQUE (generation, slot)
);
CREATE INDEX IF NOT EXISTS candidates_key ON candidates (key);
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY,
    controller_state BLOB NOT NULL,
    rewards TEXT NOT NULL,
    stats TEXT NOT NULL,
    elapsed_seconds REAL NOT NULL,
    finished_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Candidate:
    """One row of ``candidates``."""

    id: int
    generation: int
    slot: int
    arch: str
    key: str
    choices: tuple[int, ...]
    status: str
    accuracy: float | None
    early_accuracy: float | None
    epochs_trained: int | None
    latency_ms: float | None
    latency_source: str | None
    latency_device: str | None
    latency_spec: str | None
    latency_rank: int | None
    macs: int
    params: int
    memory_mb: float | None
    memory_source: str | None  # "estimate" (models.memory) or "measured" (on latency_spec)
    reward: float | None
    train_seconds: float | None
    latency_seconds: float | None
    reused_from: int | None
    config_hash: str
    error: str | None
    created_at: float

    def cost(self, name: str) -> float | None:
        """The reward cost of this candidate: ``latency_ms``, ``macs``, ``params`` or
        ``memory_mb``."""
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


CANDIDATE_COLUMNS = [f.name for f in fields(Candidate)]
SELECT_CANDIDATES = f"SELECT {', '.join(CANDIDATE_COLUMNS)} FROM candidates"
# columns added after stores were written: NULL in older rows, added when such a store is opened
ADDED_COLUMNS = {"memory_mb": "REAL", "memory_source": "TEXT"}


def select_candidates(have: set[str]) -> str:
    """`SELECT_CANDIDATES` for a table with the columns `have` (NULL for missing added ones)."""
    names = [
        c if c in have or c not in ADDED_COLUMNS else f"NULL AS {c}" for c in CANDIDATE_COLUMNS
    ]
    return f"SELECT {', '.join(names)} FROM candidates"


def candidate_columns(db: sqlite3.Connection) -> set[str]:
    return {row[1] for row in db.execute("PRAGMA table_info(candidates)")}


GENERATION_COLUMNS = (
    "generation",
    "controller_state",
    "rewards",
    "stats",
    "elapsed_seconds",
    "finished_at",
)


def candidate_from_values(values: Sequence[Any]) -> Candidate:
    """A `Candidate` from the values of a row selected in `CANDIDATE_COLUMNS` order."""
    data = dict(zip(CANDIDATE_COLUMNS, values, strict=True))
    data["choices"] = tuple(json.loads(data["choices"]))
    return Candidate(**data)


def candidate_from_dict(data: dict[str, Any]) -> Candidate:
    """A `Candidate` from ``to_dict()`` output (e.g. a line of evaluations.jsonl); a
    `KeyError` / `TypeError` / `ValueError` when a field is missing or of the wrong kind."""
    values = {name: data[name] for name in CANDIDATE_COLUMNS if name not in ADDED_COLUMNS}
    values.update({name: data.get(name) for name in ADDED_COLUMNS})
    values["choices"] = tuple(int(c) for c in values["choices"])
    for name in ("id", "generation", "slot", "macs", "params"):
        values[name] = int(values[name])
    return Candidate(**values)


def load_controller_state(blob: bytes, where: str) -> dict[str, Any]:
    """A controller state saved by `ResultsStore.finish_generation`, checked against its zip
    CRCs first (torch alone loads damaged tensor data without a word); a `StoreError` if not."""
    import torch

    problem = zip_problem(io.BytesIO(blob))
    if problem is not None:
        raise StoreError(f"{where}: the controller state is damaged ({problem})")
    return torch.load(io.BytesIO(blob), weights_only=True)


class StoreError(RuntimeError):
    """The results store cannot be used; the message names the file and what to do."""


def store_error_message(path: Path, error: BaseException) -> str:
    """What to tell the user about an SQLite error on the store at `path`."""
    return (
        f"the results store {path} cannot be used ({type(error).__name__}: {error}); "
        f"`pearl search --repair {path.parent}` rebuilds it from evaluations.jsonl and resumes"
    )


class ResultsStore:
    """The SQLite results of one run folder."""

    def __init__(self, path: str | Path) -> None:
        """Open (or create) the store; a damaged file (``PRAGMA quick_check``) is a
        `StoreError` that says how to repair it."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        problem = sqlite_problem(self.path) if self.path.exists() else None
        if problem is not None:
            raise StoreError(store_error_message(self.path, sqlite3.DatabaseError(problem)))
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self.transaction() as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                have = candidate_columns(db)
                for name, kind in ADDED_COLUMNS.items():
                    if name not in have:  # a store from before this column
                        db.execute(f"ALTER TABLE candidates ADD COLUMN {name} {kind}")
        except sqlite3.DatabaseError as error:
            self._db.close()
            if disk_full(error):  # not damage: the caller says to free space
                raise
            raise StoreError(store_error_message(self.path, error)) from error

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- candidates ------------------------------------------------------------------------

    def insert(self, **values: Any) -> Candidate:
        """Insert a candidate row (a duplicate (generation, slot) is an IntegrityError: a
        candidate is never stored twice)."""
        values = dict(values)
        values["choices"] = json.dumps([int(c) for c in values["choices"]])
        values.setdefault("created_at", time.time())
        names = [name for name in CANDIDATE_COLUMNS if name != "id" and name in values]
        unknown = set(values) - set(names)
        if unknown:
            raise ValueError(f"unknown candidate column(s) {sorted(unknown)}")
        with self.transaction() as db:
            cursor = db.execute(
                f"INSERT INTO candidates ({', '.join(names)}) "
                f"VALUES ({', '.join('?' for _ in names)})",
                [values[name] for name in names],
            )
            row_id = cursor.lastrowid
        return self.get(row_id)

    def update(self, row_id: int, **values: Any) -> Candidate:
        unknown = set(values) - set(CANDIDATE_COLUMNS) | ({"id"} & set(values))
        if unknown:
            raise ValueError(f"cannot update column(s) {sorted(unknown)}")
        if not values:
            return self.get(row_id)
        assignments = ", ".join(f"{name} = ?" for name in values)
        with self.transaction() as db:
            db.execute(
                f"UPDATE candidates SET {assignments} WHERE id = ?", [*values.values(), row_id]
            )
        return self.get(row_id)

    def get(self, row_id: int) -> Candidate:
        row = self._db.execute(f"{SELECT_CANDIDATES} WHERE id = ?", (row_id,)).fetchone()
        if row is None:
            raise KeyError(f"no candidate with id {row_id}")
        return candidate_from_values(row)

    def at(self, generation: int, slot: int) -> Candidate | None:
        row = self._db.execute(
            f"{SELECT_CANDIDATES} WHERE generation = ? AND slot = ?",
            (generation, slot),
        ).fetchone()
        return candidate_from_values(row) if row else None

    def evaluated(self, key: str) -> Candidate | None:
        """The first trained row (not itself a reuse) of the arch with this key, if any."""
        row = self._db.execute(
            f"{SELECT_CANDIDATES} WHERE key = ? AND reused_from IS NULL "
            "AND accuracy IS NOT NULL ORDER BY id LIMIT 1",
            (key,),
        ).fetchone()
        return candidate_from_values(row) if row else None

    def candidates(self, where: str = "", params: Sequence[Any] = ()) -> list[Candidate]:
        rows = self._db.execute(f"{SELECT_CANDIDATES} {where} ORDER BY id", params).fetchall()
        return [candidate_from_values(r) for r in rows]

    def scored(self, cost_name: str | None = None) -> list[Candidate]:
        """First evaluations (no reuses) that ended with a score (``ok`` or ``terminated``), in
        id order; with `cost_name`, only those that have an accuracy and that cost."""
        rows = self.candidates("WHERE reused_from IS NULL AND status IN ('ok','terminated')")
        if cost_name is None:
            return rows
        return [r for r in rows if r.accuracy is not None and r.cost(cost_name) is not None]

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0])

    def best_early_accuracy(self, before_generation: int) -> float | None:
        row = self._db.execute(
            "SELECT MAX(early_accuracy) FROM candidates WHERE generation < ? "
            "AND reused_from IS NULL",
            (before_generation,),
        ).fetchone()
        return row[0]

    # -- generations -----------------------------------------------------------------------

    def finish_generation(
        self,
        generation: int,
        controller_state: dict[str, Any],
        rewards: Sequence[float],
        stats: dict[str, float],
        elapsed_seconds: float,
    ) -> None:
        """Record a controller update and the state after it, in one transaction."""
        import torch

        buffer = io.BytesIO()
        torch.save(controller_state, buffer)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO generations (generation, controller_state, rewards, stats, "
                "elapsed_seconds, finished_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    generation,
                    buffer.getvalue(),
                    json.dumps(list(rewards)),
                    json.dumps(stats),
                    elapsed_seconds,
                    time.time(),
                ),
            )

    def last_generation(self) -> tuple[int, dict[str, Any], float] | None:
        """``(generation, controller state, elapsed seconds)`` of the latest update, or None."""
        row = self._db.execute(
            "SELECT generation, controller_state, elapsed_seconds FROM generations "
            "ORDER BY generation DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        state = load_controller_state(row[1], f"{self.path}, generation {row[0]}")
        return int(row[0]), state, float(row[2])

    def controller_state(self, generation: int) -> dict[str, Any]:
        row = self._db.execute(
            "SELECT controller_state FROM generations WHERE generation = ?", (generation,)
        ).fetchone()
        if row is None:
            raise KeyError(f"no finished generation {generation}")
        return load_controller_state(row[0], f"{self.path}, generation {generation}")

    def restore(
        self, rows: Sequence[Candidate], generations: Sequence[Sequence[Any]], meta: dict
    ) -> None:
        """Write `rows` (ids kept), generation records (`GENERATION_COLUMNS` tuples, the state
        as its saved bytes) and `meta` in one transaction: how `pipeline.repair` fills a new
        store with what it recovered."""
        names = ", ".join(CANDIDATE_COLUMNS)
        marks = ", ".join("?" for _ in CANDIDATE_COLUMNS)
        with self.transaction() as db:
            for row in rows:
                values = row.to_dict()
                values["choices"] = json.dumps(list(row.choices))
                db.execute(
                    f"INSERT INTO candidates ({names}) VALUES ({marks})",
                    [values[name] for name in CANDIDATE_COLUMNS],
                )
            db.executemany(
                f"INSERT INTO generations ({', '.join(GENERATION_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in GENERATION_COLUMNS)})",
                generations,
            )
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta.items())

    def generation_rewards(self) -> list[list[float]]:
        rows = self._db.execute("SELECT rewards FROM generations ORDER BY generation").fetchall()
        return [json.loads(r[0]) for r in rows]
