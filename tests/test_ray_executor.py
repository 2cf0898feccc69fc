"""The Ray executor with a real local Ray (2 CPUs, one session shared by the module): the same
scores as in-process, a whole search and its resume, lost workers and failing candidates ending
as stored failed rows, final training through Ray; and, without Ray, its clear errors and the
rule that host timing never overlaps training on this machine."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from search_helpers import (
    TINY_SPACE,
    make_tiny_teacher,
    start_search,
    trained_events,
    wait_for_trained,
    write_config,
)

from pipeline.cli import cli
from pipeline.config import RayConfig, load_config
from pipeline.executor import ProxyTask, TrainJob
from pipeline.ray_executor import (
    CONNECT_TIMEOUT_S,
    RayExecutor,
    RayExecutorError,
    check_resources,
    connect,
    import_ray,
    probe,
)
from pipeline.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]


def quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (start-up costs seconds); its workers import this tree."""
    ray = pytest.importorskip("ray")
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), old_path) if p)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    # the stand-in tasks below are defined here: ship them by value (workers cannot import tests)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()
    if old_path is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old_path


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, cifar_small):
    return make_tiny_teacher(tmp_path_factory.mktemp("teacher"), cifar_small)


def _archs(space, n: int):
    decisions = space.decisions()
    choices = [[i % len(d.options) for d in decisions] for i in range(n)]
    return [space.arch_from(c) for c in choices], choices


def run_cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


# -- the same scores, wherever they train --------------------------------------------------------


def test_ray_scores_candidates_exactly_like_in_process(
    ray_session, tmp_path, data_dir, tiny_teacher
):
    from pipeline.search_setup import build_setup

    config = load_config(write_config(tmp_path / "cfg", data_dir, tiny_teacher))  # KD
    setup = build_setup(config, quiet)
    try:
        archs, _ = _archs(setup.space, 3)
        jobs = [TrainJob(0, i, arch.encode()) for i, arch in enumerate(archs)]
        here = {job.slot: result for job, result in setup.executor.train(jobs)}
        executor = RayExecutor(setup.executor.task, RayConfig(), quiet)
        try:
            there = {job.slot: result for job, result in executor.train(jobs)}
        finally:
            executor.close()
    finally:
        setup.close()
    assert sorted(there) == [0, 1, 2]
    for slot, result in here.items():
        assert there[slot].accuracy == result.accuracy
        assert there[slot].train_loss_per_epoch == result.train_loss_per_epoch
        assert there[slot].epochs_trained == result.epochs_trained == 2
    assert ray_session.is_initialized()  # a Ray it did not start stays up


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, data_dir, tiny_teacher):
    """A 2-generation KD search trained in-process, to compare Ray runs with."""
    root = tmp_path_factory.mktemp("clean")
    config = write_config(root / "cfg", data_dir, tiny_teacher, budget=4)
    run_cli("search", "--config", str(config), "--out", str(root / "run"), "--no-progress")
    with ResultsStore(root / "run" / "results.sqlite") as store:
        return config, _by_slot(store)


def _by_slot(store: ResultsStore) -> list[tuple]:
    """The rows in (generation, slot) order: Ray stores a batch in the order it finishes."""
    rows = sorted(store.candidates(), key=lambda r: (r.generation, r.slot))
    return [(r.generation, r.slot, r.key, r.accuracy, r.reward, r.status) for r in rows]


class DriverKilled(Exception):
    pass


class StopsAfter:
    """An executor that passes on `results` results, then stops the driver (as a kill would,
    between two candidates)."""

    def __init__(self, inner, results: int) -> None:
        self.inner, self.left = inner, results
        self.trains_beside_driver = inner.trains_beside_driver

    def train(self, jobs):
        for job, result in self.inner.train(jobs):
            if self.left == 0:
                raise DriverKilled
            self.left -= 1
            yield job, result

    def close(self) -> None:
        self.inner.close()


def test_a_ray_search_stores_every_candidate_and_a_resumed_one_trains_only_the_missing(
    ray_session, tmp_path, clean_run
):
    from pipeline.search import Search, build_setup

    config_path, clean_rows = clean_run
    config = load_config(config_path, {"search": {"executor": "ray"}})
    run_dir = tmp_path / "run"
    setup = build_setup(config, quiet)
    setup.executor = StopsAfter(setup.executor, results=3)  # dies in generation 1
    try:
        with pytest.raises(DriverKilled):
            Search(config, run_dir, setup, resume=False, show_progress=False).run()
    finally:
        setup.close()
    with ResultsStore(run_dir / "results.sqlite") as store:
        stored = sorted((r.generation, r.slot) for r in store.candidates())
    assert stored[:2] == [(0, 0), (0, 1)] and len(stored) == 3  # one of generation 1 is missing
    assert 'executor = "ray"' in (run_dir / "config.toml").read_text()

    run_cli("search", "--resume", str(run_dir), "--no-progress")  # with Ray, from the config

    trained = [(e["generation"], e["slot"]) for e in trained_events(run_dir)]
    assert sorted(trained) == [(0, 0), (0, 1), (1, 0), (1, 1)]  # each once, in any order
    with ResultsStore(run_dir / "results.sqlite") as store:
        assert _by_slot(store) == clean_rows


# -- failures end as stored rows --------------------------------------------------------------


@dataclass(frozen=True)
class DyingTask(ProxyTask):
    """Slot 0's worker dies once (then the retry succeeds), slot 1's dies on every try, slot
    2's job raises an error the proxy does not expect."""

    marker_dir: str = ""

    def score(self, job: TrainJob):
        marker = Path(self.marker_dir) / f"died-{job.slot}"
        if job.slot == 1 or (job.slot == 0 and not marker.exists()):
            marker.touch()
            os._exit(1)  # the worker process is gone, as if killed
        if job.slot == 2:
            raise KeyError("injected failure")
        return super().score(job)


def test_lost_workers_are_retried_and_failing_candidates_are_stored_failed(
    ray_session, tmp_path, data_dir
):
    from pipeline.search import Search, build_setup

    config_path = write_config(
        tmp_path / "cfg", data_dir, Path("unused"), proxy_extra='loss = "ce"'
    )
    config = load_config(config_path)
    setup = build_setup(config, quiet)  # in-process: its task is the reference
    task = setup.executor.task
    dying = DyingTask(
        **{f.name: getattr(task, f.name) for f in fields(task)}, marker_dir=str(tmp_path)
    )
    try:
        setup.executor = RayExecutor(dying, RayConfig(max_retries=1), quiet)
        setup.closers.append(setup.executor.close)
        search = Search(config, tmp_path / "run", setup, resume=False, show_progress=False)
        archs, choices = _archs(setup.space, 3)
        rows = search.evaluate(archs, choices)
    finally:
        setup.close()
    assert rows[0].status == "ok"
    assert rows[0].accuracy == task.score(TrainJob(0, 0, archs[0].encode())).accuracy
    assert rows[1].status == "failed" and rows[1].reward == 0.0
    assert "CandidateLostError" in rows[1].error and "died 2 times" in rows[1].error
    assert rows[2].status == "failed" and "KeyError: 'injected failure'" in rows[2].error
    with ResultsStore(tmp_path / "run" / "results.sqlite") as store:
        assert store.count() == 3  # nothing lost


# -- pearl run's final training -----------------------------------------------------------------


def test_final_training_on_ray_equals_in_process_and_resumes(
    ray_session, tmp_path, data_dir, tiny_teacher
):
    from pipeline.run import stage_train
    from pipeline.run_config import RUN_SECTIONS, RunConfig
    from pipeline.training import MODEL_FILE

    overrides = {
        "data": {"path": str(data_dir / "cifar10_small.npz")},
        "space": TINY_SPACE,
        "teacher": {"spec": str(tiny_teacher)},
        "train": {
            "epochs": 1,
            "batch_size": 64,
            "train_images": 256,
            "test_images": 200,
            "losses": ["kd", "ce"],
            "threads": 1,
        },
    }
    archs, _ = _archs(load_config(None, overrides, RunConfig, RUN_SECTIONS).space.build(), 2)
    units = [("searched-a", archs[0].encode()), ("searched-b", archs[1].encode())]
    results = {}
    for executor in ("inprocess", "ray"):
        config = load_config(
            None, {**overrides, "search": {"executor": executor}}, RunConfig, RUN_SECTIONS
        )
        results[executor] = stage_train(config, tmp_path / executor, units, quiet, False)
    for label, _ in units:
        for loss in ("kd", "ce"):
            ray, here = results["ray"][label][loss], results["inprocess"][label][loss]
            assert ray["top1"] == here["top1"] and ray["top5"] == here["top5"]
            assert ray["curve"][-1]["train_loss"] == here["curve"][-1]["train_loss"]
            assert (tmp_path / "ray" / "train" / f"{label}-{loss}" / MODEL_FILE).is_file()
    lines = []
    again = stage_train(config, tmp_path / "ray", units, lines.append, False)
    assert lines == ["train: every model is trained, skipped"]
    assert {label: again[label]["kd"]["top1"] for label in again} == {
        label: results["ray"][label]["kd"]["top1"] for label in again
    }


def test_returned_files_are_written_where_the_driver_keeps_them(tmp_path):
    from pipeline.final_jobs import FinalTrainJob, FinalTrainResult, write_back

    job = FinalTrainJob("searched-a", "ce", None, str(tmp_path / "train" / "searched-a-ce"))
    write_back(job, FinalTrainResult({"top1": 0.5}, {"metrics.json": b"{}", "model.pt": b"w"}))
    assert (tmp_path / "train" / "searched-a-ce" / "model.pt").read_bytes() == b"w"


# -- without a cluster: clear errors, never a hang -------------------------------------------------


def test_missing_ray_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayExecutorError, match=r'pip install -e "\.\[ray\]"'):
        import_ray()


def test_an_address_that_does_not_answer_is_an_error_within_the_timeout():
    never = SimpleNamespace(is_initialized=lambda: False, init=None)  # init is never reached
    for address in ("ray://127.0.0.1:1", "127.0.0.1:1"):
        started = time.monotonic()
        with pytest.raises(RayExecutorError, match="nothing answers at ray.address"):
            connect(never, RayConfig(address=address), quiet)
        assert time.monotonic() - started < CONNECT_TIMEOUT_S + 1
    with pytest.raises(RayExecutorError, match="is not an address"):
        probe("headnode")


def test_a_candidate_no_node_can_run_is_an_error_not_a_hang():
    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}}]
    cluster = SimpleNamespace(nodes=lambda: nodes)
    check_resources(cluster, RayConfig(cpus_per_candidate=2))
    with pytest.raises(RayExecutorError, match=r"1 GPUs.*nodes: 2 CPUs, 0 GPUs"):
        check_resources(cluster, RayConfig(gpus_per_candidate=1))
    with pytest.raises(RayExecutorError, match="ray.gpus_per_candidate = 0"):
        RayExecutor(None, RayConfig(), quiet, device="cuda")  # before any Ray starts


# -- host timing never overlaps training on this machine -------------------------------------------


class BesideExecutor:
    """Yields each result while it claims to go on training the rest on this machine."""

    def __init__(self, beside: bool) -> None:
        self.trains_beside_driver = beside
        self.training = False

    def train(self, jobs):
        from pipeline.proxy import ProxyResult

        self.training = True
        for job in jobs:
            yield job, ProxyResult(0.5, 0.1, (1.0,), 1)
        self.training = False

    def close(self) -> None:
        pass


class HostChain:
    """A latency chain timing on this machine that records whether training was running."""

    def __init__(self, executor: BesideExecutor) -> None:
        self.executor, self.during_training = executor, []

    def times_on_host(self) -> bool:
        return True

    def measure(self, arch):
        from pipeline.latency_chain import LatencyRecord

        self.during_training.append(self.executor.training)
        return LatencyRecord(1.0, "host", "here", "host:tflite", 0)

    def refresh(self):
        return []

    def best_rank(self):
        return 0


@pytest.mark.parametrize("beside", [True, False])
def test_host_timing_waits_for_training_beside_the_driver(tmp_path, beside):
    from pipeline.search import Search
    from pipeline.search_setup import SearchSetup

    config = load_config(
        None,
        {
            "space": TINY_SPACE,
            "proxy": {"loss": "ce"},
            "reward": {"cost": "latency_ms", "target": 1.0},
            "latency": {"overlap": False},
        },
    )
    executor = BesideExecutor(beside)
    chain = HostChain(executor)
    space = config.space.build()
    setup = SearchSetup(config, space, config.reward.spec(), executor, chain)
    search = Search(config, tmp_path / "run", setup, resume=False, show_progress=False)
    archs, choices = _archs(space, 3)
    rows = search.evaluate(archs, choices)
    assert [r.status for r in rows] == ["ok"] * 3 and all(r.latency_ms == 1.0 for r in rows)
    # beside the driver: every timing after the training; in-process: each in turn
    assert chain.during_training == ([False] * 3 if beside else [True] * 3)


# -- a real kill -9 of a driver that started its own Ray ----------------------------------------


@pytest.mark.slow
def test_resume_with_ray_after_kill_9_ends_like_an_uninterrupted_run(
    ray_session, tmp_path, clean_run
):
    config_path, clean_rows = clean_run
    killed = tmp_path / "killed"
    process = start_search(config_path, killed, "--set", "search.executor=ray")
    wait_for_trained(process, killed, 3)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    with ResultsStore(killed / "results.sqlite") as store:
        assert store.count() >= 3

    run_cli("search", "--resume", str(killed), "--no-progress")

    trained = [(e["generation"], e["slot"]) for e in trained_events(killed)]
    assert len(trained) == len(set(trained)) == 4  # nothing trained twice
    with ResultsStore(killed / "results.sqlite") as store:
        assert _by_slot(store) == clean_rows
