"""Repairing a search's results store from what survives (`pearl search --repair RUN_DIR`, and
automatically when `--resume` finds the store unusable).

A store is *unusable* when it is missing while evaluations.jsonl exists, fails SQLite's
``PRAGMA quick_check`` (``integrity_check`` for --repair), or its rows or newest controller state
cannot be read back.  The repair then

1. reads what it can from the damaged file, record by record: meta, candidate rows and the
   controller state of each generation (a state counts only if it loads);
2. takes every candidate row from evaluations.jsonl that the file did not give (each line holds
   the whole row as it was stored; the last line of a (generation, slot) wins).  Lines written
   by an older pearl, without the whole row, cannot be rebuilt and are reported;
3. keeps the controller states of generations 0..G, the longest run without a gap: the resumed
   search restarts its controller from generation G and proposes generation G+1 again with the
   same random state, taking every candidate found above from the store instead of training it;
4. writes a new store beside the damaged one, moves the damaged file aside
   (``results.sqlite.damaged-TIMESTAMP``) and puts the new one in its place, then says what was
   recovered and what was lost.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from models.damage import SQLITE_SIDECARS, move_aside, sqlite_problem
from pipeline.config_hash import saved_config_hash
from pipeline.layout import SearchLayout
from pipeline.store import (
    GENERATION_COLUMNS,
    SELECT_CANDIDATES,
    Candidate,
    ResultsStore,
    StoreError,
    candidate_columns,
    candidate_from_dict,
    candidate_from_values,
    load_controller_state,
    select_candidates,
)

Log = Callable[[str], None]


@dataclass
class Salvage:
    """What a damaged store file still gives, record by record."""

    meta: dict[str, str] = field(default_factory=dict)
    rows: dict[tuple[int, int], Candidate] = field(default_factory=dict)
    generations: dict[int, tuple] = field(default_factory=dict)  # GENERATION_COLUMNS tuples
    unreadable_generations: list[int] = field(default_factory=list)


@dataclass
class RepairReport:
    store: Path
    moved_to: Path | None
    rows_from_store: int
    rows_from_events: int
    old_lines: list[tuple[int, int]]  # (generation, slot) of lines without the whole row
    kept_generations: int  # controller states 0..kept-1 are in the new store
    lost_generations: list[int]

    def lines(self) -> list[str]:
        rows = self.rows_from_store + self.rows_from_events
        where = f"; the damaged file is kept as {self.moved_to}" if self.moved_to else ""
        out = [
            f"repaired {self.store}: {rows} candidate rows ({self.rows_from_store} read from "
            f"the old file, {self.rows_from_events} from evaluations.jsonl), controller states "
            f"of {self.kept_generations} generations{where}"
        ]
        if self.lost_generations:
            restart = (
                f"from its state after generation {self.kept_generations - 1}"
                if self.kept_generations
                else "from its seed"
            )
            out.append(
                f"lost: the controller state of generation(s) {_listed(self.lost_generations)}; "
                f"the search restarts its controller {restart} and proposes generation "
                f"{self.kept_generations} again (stored candidates are reused, not trained again)"
            )
        if self.old_lines:
            slots = _listed(f"{g}/{s}" for g, s in self.old_lines)
            out.append(
                f"lost: {len(self.old_lines)} candidate(s) (generation/slot {slots}) whose "
                "evaluations.jsonl lines were written by an older pearl without the whole row; "
                "they are trained again if the search proposes them again"
            )
        return out


def _listed(items, limit: int = 8) -> str:
    items = [str(i) for i in items]
    return ", ".join(items[:limit]) + (
        f" and {len(items) - limit} more" if len(items) > limit else ""
    )


# -- checking ---------------------------------------------------------------------------------


def store_problem(layout: SearchLayout, *, full: bool = False) -> str | None:
    """Why the store of `layout` cannot be used for a resume, or None when it can."""
    path = layout.store
    if not path.exists():
        return "it is missing" if layout.events.is_file() else None
    problem = sqlite_problem(path, full=full)
    if problem is not None:
        return problem
    try:
        with ResultsStore(path) as store:
            store.candidates()
            store.last_generation()  # the state a resume starts from must load
            store.generation_rewards()
    except sqlite3.OperationalError:  # busy or locked: not damage
        raise
    except StoreError as error:
        return str(error.__cause__ or error)
    except Exception as error:  # noqa: BLE001 - any record that does not read back
        return f"a stored record does not read back ({type(error).__name__}: {error})"
    return None


def open_store(layout: SearchLayout, log: Log, *, full: bool = False) -> ResultsStore:
    """The store of a search being resumed; an unusable one is repaired first (with a message
    saying why and what was lost)."""
    problem = store_problem(layout, full=full)
    if problem is not None:
        log(f"{layout.store} cannot be used ({problem}); rebuilding it from what survives")
        for line in repair_store(layout).lines():
            log(line)
    return ResultsStore(layout.store)


# -- repairing --------------------------------------------------------------------------------


def repair_store(layout: SearchLayout) -> RepairReport:
    """Rebuild the store of `layout` (see the module docstring)."""
    salvage = salvage_store(layout.store) if layout.store.exists() else Salvage()
    journal = read_journal(layout.events)
    rows = dict(salvage.rows)
    added = {slot: row for slot, row in journal.rows.items() if slot not in rows}
    rows.update(added)
    old_lines = [slot for slot in journal.partial if slot not in rows]
    kept = 0
    while kept in salvage.generations:
        kept += 1
    meta = {**salvage.meta, "repaired_at": str(time.time())}
    meta.setdefault("config_hash", _config_hash(rows.values(), layout))
    moved_to = _replace_store(
        layout.store,
        sorted(rows.values(), key=lambda r: r.id),
        [salvage.generations[g] for g in range(kept)],
        meta,
    )
    lost = _lost_generations(salvage, journal, rows, kept)
    return RepairReport(
        layout.store, moved_to, len(salvage.rows), len(added), old_lines, kept, lost
    )


def _lost_generations(salvage: Salvage, journal: Journal, rows, kept: int) -> list[int]:
    """Generations whose controller state existed but is not in the new store (unreadable, or
    after a gap): those listed in the old file, logged as finished, or moved on from."""
    moved_on_from = range(max((g for g, _ in rows), default=0))
    known = {*salvage.generations, *salvage.unreadable_generations, *journal.finished}
    return sorted(g for g in known | set(moved_on_from) if g >= kept)


def salvage_store(path: Path) -> Salvage:
    """Read every record of a damaged store that still reads (each on its own)."""
    salvage = Salvage()
    with closing(sqlite3.connect(path, timeout=30.0)) as db:
        salvage.meta = dict(_each(db, "SELECT key, value FROM meta WHERE rowid = ?", "meta"))
        try:
            select = select_candidates(candidate_columns(db))
        except sqlite3.DatabaseError:
            select = SELECT_CANDIDATES
        for values in _each(db, f"{select} WHERE id = ?", "candidates"):
            try:
                row = candidate_from_values(values)
            except (ValueError, TypeError):
                continue
            salvage.rows[(row.generation, row.slot)] = row
        columns = ", ".join(GENERATION_COLUMNS)
        query = f"SELECT {columns} FROM generations WHERE rowid = ?"
        for generation in _ids(db, "generations"):
            try:
                record = db.execute(query, (generation,)).fetchone()
                load_controller_state(record[1], f"generation {generation}")
                salvage.generations[int(record[0])] = tuple(record)
            except Exception:  # noqa: BLE001 - any failure means this state is lost
                salvage.unreadable_generations.append(generation)
    return salvage


def _ids(db: sqlite3.Connection, table: str) -> list[int]:
    """The rowids of `table` that can be listed (none when its b-tree is unreadable)."""
    try:
        return [r[0] for r in db.execute(f"SELECT rowid FROM {table} ORDER BY rowid")]
    except sqlite3.DatabaseError:
        try:  # the table's root may still give its highest id
            top = db.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()[0] or 0
        except sqlite3.DatabaseError:
            return []
        return list(range(1, top + 1))


def _each(db: sqlite3.Connection, query: str, table: str):
    """The result row of `query` for each id of `table` that reads."""
    for row_id in _ids(db, table):
        try:
            row = db.execute(query, (row_id,)).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None:
            yield row


@dataclass
class Journal:
    """What evaluations.jsonl says: the last whole row of each (generation, slot), the (generation,
    slot) of lines without a whole row (an older pearl), the generations that finished."""

    rows: dict[tuple[int, int], Candidate] = field(default_factory=dict)
    partial: list[tuple[int, int]] = field(default_factory=list)
    finished: set[int] = field(default_factory=set)


def read_journal(path: Path) -> Journal:
    journal, partial = Journal(), set()
    if not path.is_file():
        return journal
    for text in path.read_text(errors="replace").splitlines():
        try:
            line = json.loads(text)
            if line.get("event") == "generation":
                journal.finished.add(int(line["generation"]))
                continue
            slot = (int(line["generation"]), int(line["slot"]))
        except (ValueError, TypeError, KeyError, AttributeError):
            continue  # not even a position: a line cut short by a crash
        try:
            journal.rows[slot] = candidate_from_dict(line)
        except (ValueError, TypeError, KeyError):
            partial.add(slot)
    journal.partial = sorted(partial - set(journal.rows))
    return journal


def _config_hash(rows, layout: SearchLayout) -> str:
    """The config hash the rows were made with (the most common), else the saved config's."""
    counts = Counter(row.config_hash for row in rows)
    if counts:
        return counts.most_common(1)[0][0]
    saved = saved_config_hash(layout.config) if layout.config.is_file() else None
    if saved is None:
        raise StoreError(f"{layout.root}: no config hash survives; this search cannot resume")
    return saved


def _replace_store(path: Path, rows, generations, meta) -> Path | None:
    """Write the new store beside `path`, move the old one aside, put the new one in place."""
    fresh = path.with_name(f".{path.name}.repairing")
    for suffix in ("", *SQLITE_SIDECARS):
        Path(f"{fresh}{suffix}").unlink(missing_ok=True)
    with ResultsStore(fresh) as store:
        store.restore(rows, generations, meta)
    moved = move_aside(path, SQLITE_SIDECARS) if path.exists() else None
    os.replace(fresh, path)
    return moved
