"""Memory as a reward cost and as a budget of the winner rule: config checks, the rule, stores
from before the memory columns, and a real tiny search with ``reward.cost = "memory_mb"``."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from dataclasses import dataclass

import pytest
from click.testing import CliRunner
from search_helpers import write_config

from models.memory import estimate_memory
from models.network import decode_network
from pipeline.cli import cli
from pipeline.config import load_config
from pipeline.config_errors import ConfigError
from pipeline.config_hash import config_hash
from pipeline.pareto import pareto_front
from pipeline.reward import RewardSpec
from pipeline.store import _SCHEMA, ResultsStore, candidate_from_dict
from pipeline.winners import MemoryBudget, pick_winners

CE = {"proxy": {"loss": "ce"}}


def test_measured_memory_needs_phones_that_report_it():
    reward = {"cost": "memory_mb", "memory_source": "measured"}
    with pytest.raises(ConfigError, match=r"host:tflite, which report none: list only adb:"):
        load_config(None, {**CE, "reward": reward})
    with pytest.raises(ConfigError, match="reward.memory_source = 'estimate'"):
        load_config(None, {**CE, "reward": {**reward, "cost": "macs", "max_memory_mb": "4"}})
    phone = load_config(None, {**CE, "reward": reward, "latency": {"backends": ["adb:R58M"]}})
    assert phone.reward.needs_memory
    # measured memory nobody uses (latency cost, no budget) is no error
    load_config(None, {**CE, "reward": {"memory_source": "measured"}})
    with pytest.raises(ConfigError, match="reward.memory_source"):
        load_config(None, {**CE, "reward": {"memory_source": "guess"}})
    with pytest.raises(ConfigError, match="reward.max_memory_mb: must be >= 0"):
        load_config(None, {**CE, "reward": {"max_memory_mb": "-1"}})


def test_runs_from_before_memory_settings_keep_their_hash():
    # hashes computed by the code before reward.memory_source / max_memory_mb existed
    assert config_hash(load_config(None, CE)) == "a626fbe55689bb65"
    kdas = {**CE, "search": {"method": "kdas"}, "reward": {"cost": "params"}}
    assert config_hash(load_config(None, kdas)) == "7bb09f79358d274f"
    budget = load_config(None, {**CE, "reward": {"max_memory_mb": "5"}})
    measured = {"memory_source": "measured", "cost": "memory_mb"}
    phone = load_config(None, {**CE, "reward": measured, "latency": {"backends": ["adb:X"]}})
    assert len({config_hash(c) for c in (load_config(None, CE), budget, phone)}) == 3


@dataclass
class Row:
    key: str
    accuracy: float
    memory_mb: float | None
    params: int = 1000
    latency_ms: float | None = None
    latency_source: str | None = None
    latency_spec: str | None = None
    memory_source: str = "estimate"
    macs: int = 1
    arch: str = "a"
    generation: int = 0

    def cost(self, name: str):
        return getattr(self, name)


def test_the_memory_budget_filters_winners_for_any_cost_and_joins_kdas_budget():
    rows = [
        Row("big", 0.9, 6.0, params=900),
        Row("mid", 0.8, 3.0, params=500),
        Row("s", 0.7, 1.0, params=300),
    ]
    by_memory = RewardSpec.preset("hard", 10.0, cost="memory_mb")
    assert pick_winners(rows, [10.0], by_memory)[0]["key"] == "big"
    (winner,) = pick_winners(rows, [10.0], by_memory, [MemoryBudget("memory_mb", 4.0, "x")])
    assert winner["key"] == "mid" and winner["within_memory"] and winner["max_memory_mb"] == 4.0
    assert winner["memory_mb"] == 3.0 and winner["memory_source"] == "estimate"
    # the MB budget on a MACs search, with KDAS's parameter budget: both must hold
    macs = RewardSpec.preset("hard", 5.0, cost="macs")
    both = [
        MemoryBudget("memory_mb", 4.0, "reward.max_memory_mb"),
        MemoryBudget("params", 400, "k"),
    ]
    assert pick_winners(rows, [5.0], macs, both)[0]["key"] == "s"
    # nothing fits: the rule without the budgets, flagged, and the note names the settings
    over = pick_winners(rows, [5.0], macs, [MemoryBudget("memory_mb", 0.5, "reward.max_memory_mb")])
    assert over[0]["key"] == "big" and over[0]["within_memory"] is False
    assert "memory_mb <= 0.5 (reward.max_memory_mb)" in over[0]["note"]
    # a row without a memory number never fits a memory budget
    unknown = [Row("u", 0.99, None), Row("s", 0.7, 1.0)]
    assert pick_winners(unknown, [5.0], macs, both[:1])[0]["key"] == "s"


def test_a_store_from_before_the_memory_columns_opens_and_reads(tmp_path):
    path = tmp_path / "results.sqlite"
    old_schema = _SCHEMA.replace("    memory_mb REAL,\n    memory_source TEXT,\n", "")
    assert "memory_mb" not in old_schema
    with sqlite3.connect(path) as db:
        db.executescript(old_schema)
        db.execute(
            "INSERT INTO candidates (generation, slot, arch, key, choices, status, macs, params,"
            " config_hash, created_at) VALUES (0, 0, 'a', 'k', '[1]', 'ok', 5, 6, 'h', 1.0)"
        )
    with ResultsStore(path) as store:
        (row,) = store.candidates()
        assert row.params == 6 and row.memory_mb is None and row.memory_source is None
        store.update(row.id, memory_mb=2.5, memory_source="estimate")
        assert store.get(row.id).memory_mb == 2.5
    line = {k: v for k, v in row.to_dict().items() if not k.startswith("memory")}
    assert candidate_from_dict(line).memory_mb is None  # an old evaluations.jsonl line


TINY_MEMORY = """
[reward]
preset = "soft"
cost = "memory_mb"
target = 1.2
max_memory_mb = 1.5
"""


def test_a_search_with_memory_as_the_cost_stores_and_ranks_by_it(tmp_path, data_dir):
    config = write_config(tmp_path / "cfg", data_dir, teacher="", proxy_extra='loss = "ce"')
    text = config.read_text().replace("epochs = 2", "epochs = 1")
    head, _, tail = text.partition("[reward]")
    config.write_text(head + TINY_MEMORY + tail[tail.index("[controller]") :])
    result = CliRunner().invoke(
        cli, ["search", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert "MB memory (estimate)" in result.stdout

    with ResultsStore(tmp_path / "run" / "results.sqlite") as store:
        rows = store.scored("memory_mb")
    assert len(rows) >= 2
    spec = RewardSpec.preset("soft", 1.2, cost="memory_mb")
    for row in rows:  # the estimate of its own arch, no latency taken, the reward from it
        assert row.memory_source == "estimate" and row.latency_ms is None
        assert row.memory_mb == pytest.approx(estimate_memory(decode_network(row.arch)).memory_mb)
        assert row.reward == pytest.approx(spec(row.accuracy, row.memory_mb))

    (best,) = json.loads((tmp_path / "run" / "best_arch.json").read_text())
    assert best["cost"] == "memory_mb" and best["max_memory_mb"] == 1.5
    fits = [r for r in rows if r.memory_mb <= 1.5]
    assert best["within_memory"] == bool(fits)
    pool = fits or rows
    within = [r for r in pool if r.memory_mb <= 1.2]
    assert within  # seed 0 proposes archs on both sides of the target
    # the most accurate within both the target and the budget, ties to the smaller memory
    expected = max(within, key=lambda r: (r.accuracy, -r.memory_mb))
    assert best["key"] == expected.key and best["memory_mb"] == expected.memory_mb
    front = pareto_front([(r.accuracy, r.memory_mb) for r in rows])
    pareto = (tmp_path / "run" / "pareto.csv").read_text()
    assert pareto.splitlines()[0].count("memory_mb") == 1
    assert {rows[i].key for i in front} == {line.split(",")[0] for line in pareto.splitlines()[1:]}


def test_measured_memory_comes_from_the_phone_with_the_timing(tmp_path, device, monkeypatch):
    """The loopback phone (tests/loopback_adbd: the real ADB protocol, a benchmark_model that
    runs the pushed file in LiteRT and prints the tool's memory footprint lines), through the
    search's latency chain.  (A whole measured search on it passes too, in ~50 s: too slow to
    keep here.)"""
    from loopback_adbd import fake_aarch64_binary
    from search_helpers import tiny_space

    from android_runner.runner import RunOptions
    from device_bench.phone import AdbBackend, PhoneSettings
    from pipeline.candidate_memory import measured_memory
    from pipeline.latency_chain import LatencyChain, LatencyUnavailableError

    binary = tmp_path / "android_aarch64_benchmark_model"
    fake_aarch64_binary(binary)
    monkeypatch.setenv("PEARL_BENCHMARK_MODEL", str(binary))
    quick = PhoneSettings(
        RunOptions(warmup_runs=2, warmup_min_secs=0, num_runs=20, min_secs=0.05, max_secs=2),
        min_invocations=1,
        max_invocations=1,
    )
    phone = AdbBackend(device.spec, quick)
    chain = LatencyChain([device.spec], backends=[phone], export_cache_dir=tmp_path / "exports")
    space = tiny_space()
    arch = space.arch_from([0] * len(space.decisions()))
    record = chain.measure(arch)
    assert record.spec == device.spec and record.memory_mb is not None and record.memory_mb > 1
    reward = load_config(
        None,
        {
            **CE,
            "reward": {"cost": "memory_mb", "memory_source": "measured"},
            "latency": {"backends": [device.spec]},
        },
    ).reward
    assert measured_memory(reward, record, arch.key()) == {
        "memory_mb": record.memory_mb,
        "memory_source": "measured",
    }
    assert measured_memory(load_config(None, CE).reward, record, arch.key()) == {}  # not used
    silent = dataclasses.replace(record, memory_mb=None)  # a tool that printed no memory line
    with pytest.raises(LatencyUnavailableError, match="reported no memory footprint"):
        measured_memory(reward, silent, arch.key())


def test_the_run_report_says_where_memory_comes_from_and_each_winners():
    from pipeline.run_report import memory_lines

    assert memory_lines(load_config(None, CE), [{"key": "k", "arch": "a"}]) == []  # not used
    config = load_config(None, {**CE, "reward": {"max_memory_mb": "2"}})
    winners = [
        {"key": "k1", "arch": "a", "memory_mb": 1.234, "within_memory": True},
        {"key": "k2", "arch": "b", "memory_mb": 3.5, "within_memory": False},
        {"target": 1.0, "arch": None},
    ]
    (line, blank) = memory_lines(config, winners)
    assert line == (
        "Memory (MB, `models.memory` estimate, budget 2 MB); winners: `k1` 1.23 MB, "
        "`k2` 3.50 MB (OVER the budget: none fits)."
    )
