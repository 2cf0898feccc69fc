"""A results store that can be repaired, on a real search damaged on disk: `--resume` rebuilds an
unusable store from what survives (with a message), `--repair` does it on demand, and the
resumed search ends exactly where the undamaged one did; what cannot be rebuilt is reported;
no raw sqlite3 error reaches the user; a search whose every candidate failed exits non-zero."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from search_helpers import make_tiny_teacher, write_config

from pipeline.cli import cli
from pipeline.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]
SQLITE_PAGE_BYTES = 4096


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, cifar_small):
    return make_tiny_teacher(tmp_path_factory.mktemp("teacher"), cifar_small)


def pearl(*args) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir, tiny_teacher):
    """A finished 2-generation search (4 candidates, 2 per generation)."""
    root = tmp_path_factory.mktemp("repair")
    config = write_config(root / "cfg", data_dir, tiny_teacher, budget=4)
    code, output = pearl("search", "--config", config, "--out", root / "run", "--no-progress")
    assert code == 0, output
    return root / "run"


@pytest.fixture
def copy(finished, tmp_path) -> Path:
    """A copy of the finished search to damage."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


def store_contents(path: Path) -> tuple[list[dict], list[dict], list]:
    with ResultsStore(path) as store:
        rows = [r.to_dict() for r in store.candidates()]
        states = [store.controller_state(g) for g in range(len(store.generation_rewards()))]
        return rows, states, store.generation_rewards()


def assert_same_search(a: Path, b: Path) -> None:
    rows_a, states_a, rewards_a = store_contents(a)
    rows_b, states_b, rewards_b = store_contents(b)
    assert rows_a == rows_b and rewards_a == rewards_b
    for state_a, state_b in zip(states_a, states_b, strict=True):
        for name, tensor in state_a["policy"].items():
            assert torch.equal(tensor, state_b["policy"][name]), name
        assert state_a["generator"].equal(state_b["generator"])


def trained(run_dir: Path) -> list[tuple[int, int]]:
    lines = [json.loads(t) for t in (run_dir / "evaluations.jsonl").read_text().splitlines()]
    return [(e["generation"], e["slot"]) for e in lines if e.get("event", "trained") == "trained"]


def overwrite(path: Path, pages: list[int]) -> None:
    """Overwrite SQLite pages (1-based numbers) of `path` with garbage."""
    with open(path, "r+b") as handle:
        for page in pages:
            handle.seek((page - 1) * SQLITE_PAGE_BYTES)
            handle.write(random.Random(page).randbytes(SQLITE_PAGE_BYTES))


def pages_of(path: Path, table: str) -> list[tuple[int, str, str]]:
    """``(page number, page type, path in the b-tree)`` of each page of `table`."""
    with sqlite3.connect(path) as db:
        query = "SELECT pageno, pagetype, path FROM dbstat WHERE name = ? ORDER BY path"
        return db.execute(query, (table,)).fetchall()


def test_resume_rebuilds_a_wholly_damaged_store_from_evaluations_jsonl(finished, copy):
    store = copy / "results.sqlite"
    size = store.stat().st_size
    overwrite(store, list(range(2, size // SQLITE_PAGE_BYTES + 1)))  # all but the header page
    before = trained(copy)

    code, output = pearl("search", "--resume", copy, "--no-progress", "--json")
    assert code == 0, output
    assert f"{store} cannot be used" in output and "Traceback" not in output
    assert "4 candidate rows (0 read from the old file, 4 from evaluations.jsonl)" in output
    assert "lost: the controller state of generation(s) 0, 1; the search restarts its " in output
    assert "controller from its seed and proposes generation 0 again" in output
    (aside,) = copy.glob("results.sqlite.damaged-*")
    assert f"the damaged file is kept as {aside}" in output
    assert trained(copy) == before  # nothing trained again
    assert_same_search(copy / "results.sqlite", finished / "results.sqlite")


def test_repair_keeps_what_the_damaged_file_still_gives(finished, copy):
    store = copy / "results.sqlite"
    overflow = [page for page, kind, where in pages_of(store, "generations") if kind == "overflow"]
    # the state of the last generation is the last chain of overflow pages: damage its tail
    overwrite(store, overflow[-2:])

    code, output = pearl("search", "--repair", copy, "--no-progress")
    assert code == 0, output
    assert "4 candidate rows (4 read from the old file, 0 from evaluations.jsonl)" in output
    assert "lost: the controller state of generation(s) 1; the search restarts its controller "
    assert "from its state after generation 0 and proposes generation 1 again" in output
    assert_same_search(copy / "results.sqlite", finished / "results.sqlite")

    code, output = pearl("search", "--repair", copy, "--no-progress")  # intact now
    assert code == 0 and "cannot be used" not in output and "repaired" not in output


def test_a_controller_state_damaged_inside_its_data_is_found_and_replaced(finished, copy):
    store = copy / "results.sqlite"
    overflow = [page for page, kind, where in pages_of(store, "generations") if kind == "overflow"]
    with open(store, "r+b") as handle:  # garbage inside a page, its structure left intact
        handle.seek((overflow[-2] - 1) * SQLITE_PAGE_BYTES + 512)
        handle.write(random.Random(0).randbytes(64))

    code, output = pearl("search", "--resume", copy, "--no-progress")
    assert code == 0, output
    assert "the controller state is damaged" in output and "CRC" in output
    assert "lost: the controller state of generation(s) 1;" in output
    assert_same_search(copy / "results.sqlite", finished / "results.sqlite")


def test_lines_without_the_whole_row_are_reported_as_lost(finished, copy):
    events = copy / "evaluations.jsonl"
    lines = [json.loads(t) for t in events.read_text().splitlines()]
    old_keys = ("generation", "slot", "key", "status", "accuracy", "train_seconds", "pid", "time")
    old = []  # slot 1 of generation 1 as a pearl before whole-row lines logged it
    for line in lines:
        if (line["generation"], line.get("slot")) != (1, 1):
            old.append(line)
        elif line["event"] == "trained":
            old.append({k: line[k] for k in old_keys})
    events.write_text("".join(json.dumps(line) + "\n" for line in old))
    (copy / "results.sqlite").unlink()

    code, output = pearl("search", "--resume", copy, "--no-progress")
    assert code == 0, output
    assert "it is missing" in output and "3 from evaluations.jsonl" in output
    assert "lost: 1 candidate(s) (generation/slot 1/1) whose evaluations.jsonl lines" in output
    assert trained(copy).count((1, 1)) == 2  # the lost one was trained again, nothing else
    rows, _, _ = store_contents(copy / "results.sqlite")
    assert [(r["generation"], r["slot"]) for r in rows][-1] == (1, 1) and len(rows) == 4


def test_no_raw_sqlite_error_reaches_the_user(copy):
    store = copy / "results.sqlite"
    store.write_bytes(b"garbage " * 1000)
    for args in (["report", copy], ["search", "--config", copy / "config.toml", "--out", copy]):
        code, output = pearl(*args)
        assert code == 1 and "Traceback" not in output, output
        assert f"the results store {store} cannot be used" in output
        assert f"pearl search --repair {copy}" in output


def _failing_latency(tmp_path, data_dir, tiny_teacher) -> list[str]:
    """Config and flags of a search in which every candidate trains but none can be timed (a
    latency table for another space: every lookup misses)."""
    config = write_config(tmp_path / "cfg", data_dir, tiny_teacher, budget=2)
    table = REPO / "latency_tables" / "host_tflite_mnas-cifar_32.csv"
    settings = ("reward.cost=latency_ms", "reward.target=1.0", f"latency.backends=table:{table}")
    return ["--config", config, *(f"--set={setting}" for setting in settings), "--no-progress"]


def test_a_search_whose_every_candidate_failed_exits_non_zero(tmp_path, data_dir, tiny_teacher):
    args = _failing_latency(tmp_path, data_dir, tiny_teacher)
    code, output = pearl("search", *args, "--out", tmp_path / "run")
    assert code == 1, output
    assert "no latency backend could time any of the 2 candidates" in output
    assert "so the search has no result" in output and "MissingKeyError" in output

    code, output = pearl("run", *args, "--out", tmp_path / "full")
    assert code == 1 and "search stage: no latency backend could time any" in output
    assert not (tmp_path / "full" / "winners.json").exists()
