"""Results store: rows round-trip, a candidate is never stored twice, transactions roll back,
controller states round-trip exactly."""

import sqlite3

import pytest
import torch

from models.space import get_space
from pipeline.controllers import make_controller
from pipeline.store import ResultsStore

ROW = dict(
    generation=0,
    slot=0,
    arch="in32_cls10|...",
    key="0123456789abcdef",
    choices=[1, 0, 2],
    status="trained",
    accuracy=0.5,
    macs=1_000_000,
    params=20_000,
    config_hash="feedfacefeedface",
)


def test_rows_round_trip_and_update(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        row = store.insert(**ROW)
        assert row.choices == (1, 0, 2) and row.accuracy == 0.5 and row.latency_ms is None
        row = store.update(row.id, latency_ms=1.25, latency_source="host", status="ok")
        assert store.at(0, 0) == row
        assert store.evaluated(ROW["key"]) == row
    with ResultsStore(tmp_path / "r.sqlite") as store:  # persisted
        assert store.at(0, 0).latency_ms == 1.25
        assert store.count() == 1


def test_a_slot_is_never_stored_twice_and_failed_writes_leave_nothing(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.insert(**ROW)
        with pytest.raises(sqlite3.IntegrityError):
            store.insert(**{**ROW, "key": "other"})
        with pytest.raises(RuntimeError):
            with store.transaction() as db:
                db.execute("DELETE FROM candidates")
                raise RuntimeError("crash in the middle")
        assert store.count() == 1  # rolled back
        with pytest.raises(ValueError, match="unknown candidate column"):
            store.insert(**ROW, latency="fast")


def test_reuse_points_to_the_first_evaluation(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        first = store.insert(**ROW)
        store.insert(**{**ROW, "generation": 1, "reused_from": first.id})
        assert store.evaluated(ROW["key"]).id == first.id
        assert store.evaluated("not-there") is None


def test_controller_state_round_trips_exactly(tmp_path):
    decisions = get_space("mnas-cifar").decisions()
    controller = make_controller("ppo", decisions, seed=3)
    choices = controller.propose(4)
    controller.update(choices, [0.1, 0.2, 0.3, 0.4])
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.finish_generation(0, controller.state_dict(), [0.1, 0.2, 0.3, 0.4], {"x": 1.0}, 5.0)
        generation, state, elapsed = store.last_generation()
        with pytest.raises(sqlite3.IntegrityError):  # one update per generation
            store.finish_generation(0, controller.state_dict(), [0.1], {}, 6.0)
    assert generation == 0 and elapsed == 5.0
    restored = make_controller("ppo", decisions, seed=99)
    restored.load_state_dict(state)
    assert restored.propose(6) == controller.propose(6)
    for name, tensor in controller.policy.state_dict().items():
        assert torch.equal(tensor, restored.policy.state_dict()[name])
