"""The search loop on real CIFAR images with a real (briefly trained) teacher: end to end,
duplicates, early termination, the CLI, resume after a real `kill -9`, the quickstart."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from search_helpers import (
    make_tiny_teacher,
    start_search,
    tiny_space,
    trained_events,
    wait_for_trained,
    write_config,
)

from models.arch import Arch
from pipeline.cli import cli
from pipeline.config import load_config
from pipeline.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, cifar_small):
    return make_tiny_teacher(tmp_path_factory.mktemp("teacher"), cifar_small)


def run_cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data_dir, tiny_teacher):
    """A 2-generation KD search with early termination checks, run through the CLI."""
    root = tmp_path_factory.mktemp("search")
    config = write_config(
        root / "cfg",
        data_dir,
        tiny_teacher,
        budget=4,
        proxy_extra="early_stop_epoch = 1\nearly_stop_ratio = 0.9",
    )
    run_dir = root / "run"
    output = run_cli(
        "search", "--config", str(config), "--out", str(run_dir), "--json", "--no-progress"
    )
    return run_dir, json.loads(output)


def test_a_search_stores_every_candidate_and_writes_the_report(finished_run):
    run_dir, summary = finished_run
    config = load_config(run_dir / "config.toml")
    with ResultsStore(run_dir / "results.sqlite") as store:
        rows = store.candidates()
        assert [(r.generation, r.slot) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
        spec = config.reward.spec()
        for row in rows:
            assert row.status in ("ok", "terminated")
            assert 0.0 <= row.accuracy <= 1.0 and row.macs > 0 and row.params > 0
            assert row.reward == pytest.approx(spec(row.accuracy, row.macs))
            assert row.early_accuracy is not None  # the epoch-1 check ran
            if row.status == "terminated":
                assert row.epochs_trained == 1 and row.accuracy == row.early_accuracy
            Arch.decode(row.arch)
        # the stored rewards are exactly what the controller learnt from
        assert store.generation_rewards() == [
            [r.reward for r in rows[:2]],
            [r.reward for r in rows[2:]],
        ]
        assert store.last_generation()[0] == 1
    # generation 0 has nothing to compare with: nobody is terminated there
    assert all(r.status == "ok" for r in rows[:2])
    for name in ("pareto.csv", "pareto.png", "candidates.csv", "best_arch.json", "config.toml"):
        assert (run_dir / name).stat().st_size > 0
    best = summary["best_arch"]
    assert (run_dir / "best_arch.txt").read_text().strip() == best["arch"]
    within = [r.accuracy for r in rows if r.macs <= config.reward.target]
    if within:  # the winner is the most accurate arch within the target
        assert best["accuracy"] == max(within) and best["macs"] <= config.reward.target
    front = summary["pareto_front"]
    assert front and all(a["macs"] < b["macs"] for a, b in zip(front, front[1:], strict=False))
    assert all(a["accuracy"] < b["accuracy"] for a, b in zip(front, front[1:], strict=False))


def test_duplicate_archs_reuse_stored_results(finished_run, data_dir, tiny_teacher):
    from pipeline.search import Search, build_setup

    run_dir, _ = finished_run
    config = load_config(run_dir / "config.toml", {"search": {"max_candidates": "8"}})
    setup = build_setup(config, log=lambda m: None)
    try:
        search = Search(config, run_dir, setup, resume=True, show_progress=False)
        with ResultsStore(run_dir / "results.sqlite") as store:
            old = store.candidates()
        events_before = len(trained_events(run_dir))
        new = setup.space.arch_from([0] * len(setup.space.decisions()))
        assert all(r.key != new.key() for r in old)
        new_choices = [0] * len(setup.space.decisions())
        batch = [list(old[0].choices), list(old[0].choices), new_choices, new_choices]
        rows = search.evaluate([setup.space.arch_from(c) for c in batch], batch)
    finally:
        setup.close()
    assert [r.reused_from for r in rows[:2]] == [old[0].id, old[0].id]
    assert rows[0].accuracy == old[0].accuracy and rows[0].reward == old[0].reward
    assert rows[2].reused_from is None and rows[3].reused_from == rows[2].id
    assert len(trained_events(run_dir)) == events_before + 1  # only the new arch was trained


def test_early_termination_stops_hopeless_candidates_and_leaves_others_alone(cifar_small):
    from pipeline.config import ProxyConfig
    from pipeline.data import split_train_val
    from pipeline.proxy import EarlyStop, train_candidate

    config_space = tiny_space()
    arch = config_space.arch_from([0] * len(config_space.decisions()))
    mini_train, mini_val = split_train_val(cifar_small[0], 0.2, 0)
    mini_train = mini_train.take(list(range(256)))
    mini_val = mini_val.take(list(range(200)))
    settings = ProxyConfig(epochs=2, batch_size=64, loss="ce")
    plain = train_candidate(arch, mini_train, mini_val, settings)
    passed = train_candidate(arch, mini_train, mini_val, settings, early_stop=EarlyStop(1, 0.0))
    stopped = train_candidate(arch, mini_train, mini_val, settings, early_stop=EarlyStop(1, 1.01))
    assert passed.accuracy == plain.accuracy and passed.epochs_trained == 2  # check is free
    assert passed.early_accuracy is not None and not passed.stopped_early
    assert stopped.stopped_early and stopped.epochs_trained == 1
    assert stopped.accuracy == stopped.early_accuracy == passed.early_accuracy
    assert stopped.seconds < plain.seconds * 1.5


def test_cli_errors_are_clear(finished_run, tmp_path):
    run_dir, _ = finished_run
    runner = CliRunner()
    result = runner.invoke(cli, ["search"])
    assert result.exit_code != 0 and "either --config FILE" in result.output
    result = runner.invoke(cli, ["search", "--resume", str(run_dir), "--loss", "ce"])
    assert result.exit_code != 0 and "cannot change proxy.loss when resuming" in result.output
    result = runner.invoke(cli, ["search", "--resume", str(tmp_path)])
    assert result.exit_code != 0 and "not a pearl search run folder" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[proxy]\nepoch = 3\n")
    result = runner.invoke(cli, ["search", "--config", str(bad)])
    assert result.exit_code != 0 and "proxy.epoch" in result.output and "epochs" in result.output
    result = runner.invoke(
        cli, ["search", "--config", str(run_dir / "config.toml"), "--out", str(run_dir)]
    )
    assert result.exit_code != 0 and "already holds a search" in result.output


@pytest.mark.slow
def test_resume_after_kill_9_evaluates_nothing_twice_and_ends_like_an_uninterrupted_run(
    tmp_path, data_dir, tiny_teacher
):
    config = write_config(tmp_path / "cfg", data_dir, tiny_teacher, budget=6)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    process = start_search(config, killed)
    wait_for_trained(process, killed, 3)
    os.kill(process.pid, signal.SIGKILL)  # mid generation 1: its slot 0 is stored, slot 1 not
    process.wait()
    assert process.returncode == -signal.SIGKILL
    with ResultsStore(killed / "results.sqlite") as store:
        stored_before = {(r.generation, r.slot) for r in store.candidates()}
        last = store.last_generation()
    assert len(stored_before) >= 3 and len(stored_before) < 6

    run_cli("search", "--resume", str(killed), "--no-progress")
    run_cli("search", "--config", str(config), "--out", str(clean), "--no-progress")

    trained = [(e["generation"], e["slot"]) for e in trained_events(killed)]
    assert len(trained) == len(set(trained)) == 6  # nothing trained twice
    assert last is not None  # the killed run had recorded at least one update
    with ResultsStore(killed / "results.sqlite") as a, ResultsStore(clean / "results.sqlite") as b:
        rows_a, rows_b = a.candidates(), b.candidates()
        assert [(r.key, r.accuracy, r.reward) for r in rows_a] == [
            (r.key, r.accuracy, r.reward) for r in rows_b
        ]
        assert a.controller_state(last[0])["generator"].equal(
            b.controller_state(last[0])["generator"]
        )
        state_a, state_b = a.last_generation()[1], b.last_generation()[1]
    for name, tensor in state_a["policy"].items():
        assert torch.equal(tensor, state_b["policy"][name]), name
    assert state_a["updates"] == state_b["updates"] == 3


@pytest.mark.slow
def test_quickstart_config_runs_end_to_end_on_a_tiny_budget(tmp_path, data_dir, tiny_teacher):
    from models.teacher_loading import CHECKPOINTS_DIR

    shipped = CHECKPOINTS_DIR / "resnet20_cifar10.pt"
    teacher = "builtin:resnet20_cifar10" if shipped.is_file() else str(tiny_teacher)
    output = run_cli(
        "search",
        "--config",
        str(REPO / "configs" / "quickstart.toml"),
        "--out",
        str(tmp_path / "run"),
        "--set",
        f"data.path={data_dir / 'cifar10_small.npz'}",
        "--set",
        f"teacher.spec={teacher}",
        "--set",
        f"teacher.cache_dir={tmp_path / 'teacher_cache'}",
        "--set",
        "data.train_images=256",
        "--set",
        "data.val_images=200",
        "--set",
        "proxy.epochs=1",
        "--set",
        "search.batch_size=2",
        "--max-candidates",
        "2",
        "--no-progress",
    )
    assert "best within latency_ms <=" in output or "no evaluated arch" in output
    with ResultsStore(tmp_path / "run" / "results.sqlite") as store:
        rows = store.candidates()
    assert len(rows) == 2
    for row in rows:
        assert row.latency_ms > 0 and row.latency_source == "host"
        assert row.latency_spec == "host:tflite"
    assert (tmp_path / "run" / "pareto.png").stat().st_size > 0


def test_teacher_logit_cache_is_keyed_by_teacher_data_and_loader(
    tmp_path, cifar_small, tiny_teacher
):
    import shutil

    from pipeline.config import ProxyConfig
    from pipeline.data import split_train_val
    from pipeline.proxy import train_candidate
    from pipeline.teacher_cache import cache_key, cached_teacher

    mini_train, mini_val = split_train_val(cifar_small[0], 0.2, 0)
    mini_train, mini_val = mini_train.take(list(range(128))), mini_val.take(list(range(100)))
    kwargs = dict(batch_size=64, seed=0, epochs=1, input_size=32, cache_dir=tmp_path / "c")
    first, path, hit = cached_teacher(str(tiny_teacher), mini_train, members=False, **kwargs)
    again, path_again, hit_again = cached_teacher(
        str(tiny_teacher), mini_train, members=False, **kwargs
    )
    assert not hit and hit_again and path == path_again
    assert torch.equal(first.per_epoch[0], again.per_epoch[0])
    assert first.per_epoch[0].shape == (128, 10)

    copy = tmp_path / "copy.pt"
    shutil.copy(tiny_teacher, copy)
    key = dict(batch_size=64, seed=0, epochs=1, members=False)
    base = cache_key(str(tiny_teacher), mini_train, **key)
    assert cache_key(str(copy), mini_train, **key) == base  # same bytes, same teacher
    assert cache_key(str(tiny_teacher), mini_train, **{**key, "seed": 1}) != base
    assert cache_key(str(tiny_teacher), mini_train, **{**key, "members": True}) != base
    assert cache_key(str(tiny_teacher), mini_train.take(list(range(64))), **key) != base
    copy.write_bytes(copy.read_bytes() + b"\0")  # a different file
    assert cache_key(str(copy), mini_train, **key) != base

    # an ensemble for oracle KD: one logit vector per member, and the "od" proxy trains on it
    ensemble = f"{tiny_teacher},{tiny_teacher}"
    members, _, _ = cached_teacher(ensemble, mini_train, members=True, **kwargs)
    assert members.per_epoch[0].shape == (128, 2, 10)
    assert torch.equal(members.per_epoch[0][:, 0], first.per_epoch[0])
    arch = tiny_space().arch_from([0] * len(tiny_space().decisions()))
    settings = ProxyConfig(epochs=1, batch_size=64, loss="od", temperature=3.0, alpha=1.0)
    result = train_candidate(arch, mini_train, mini_val, settings, members)
    assert 0.0 <= result.accuracy <= 1.0 and result.epochs_trained == 1
