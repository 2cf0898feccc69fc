"""The search loop (AKD, DESIGN.md "The loop"): propose a batch, evaluate it, reward, update.

Per generation g:

1. ``controller.propose(n)`` -> choice vectors -> archs (slots 0..n-1).
2. Slots already in the store (a resumed generation) are taken as they are; an arch evaluated
   before in this run is *reused* (a new row pointing at the first one, nothing retrained).
3. The rest is trained through an `Executor` (in-process by default; the interface lets a Ray
   executor train them elsewhere).  Meanwhile a background thread exports the latency files of
   the batch (`LatencyChain.prepare`, in a converter subprocess: the other core).  Each
   candidate is stored the moment its training ends, then timed (`LatencyChain.measure`, one
   timing at a time, while no training runs in this process) and its reward stored.
4. If a better latency backend came back (a phone re-attached), the front-runners measured by a
   worse one are re-measured.
5. ``controller.update`` with the stored rewards; its new state, in the same transaction as the
   generation record, goes to the store.

A ``kill -9`` at any moment loses at most the candidate being trained: ``--resume`` reloads the
last recorded controller state, proposes the same batch again (same RNG state) and takes every
candidate already stored instead of retraining it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.config import SearchConfig, config_hash, save_config
from pipeline.store import STORE_FILE_NAME, Candidate, ResultsStore

EVENTS_FILE_NAME = "evaluations.jsonl"


class SearchError(RuntimeError):
    """The search cannot go on; the message says why and what to do."""


# --------------------------------------------------------------------------------------------
# Executors


@dataclass(frozen=True)
class TrainJob:
    generation: int
    slot: int
    arch: str  # canonical arch string
    early_stop: Any = None  # pipeline.proxy.EarlyStop or None


class Executor(Protocol):
    """Trains candidates on the proxy task; yields each result as soon as it is known (in any
    order), an exception object in place of a result when that candidate failed."""

    def train(self, jobs: Sequence[TrainJob]) -> Iterator[tuple[TrainJob, Any]]: ...

    def close(self) -> None: ...


class InProcessExecutor:
    """Trains one candidate after the other in this process."""

    def __init__(self, mini_train, mini_val, settings, teacher=None, threads: int = 0) -> None:
        self.mini_train = mini_train
        self.mini_val = mini_val
        self.settings = settings
        self.teacher = teacher
        self.threads = threads or os.cpu_count() or 1

    def train(self, jobs: Sequence[TrainJob]) -> Iterator[tuple[TrainJob, Any]]:
        import torch

        from models.arch import Arch
        from pipeline.proxy import train_candidate

        torch.set_num_threads(self.threads)
        for job in jobs:
            try:
                result = train_candidate(
                    Arch.decode(job.arch),
                    self.mini_train,
                    self.mini_val,
                    self.settings,
                    self.teacher,
                    early_stop=job.early_stop,
                )
            except (ValueError, RuntimeError, FloatingPointError) as error:
                result = error
            yield job, result

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Set-up


@dataclass
class SearchSetup:
    """Everything a search needs, built from a config (data, space, teacher, controller...)."""

    config: SearchConfig
    space: Any
    reward_spec: Any
    executor: Executor
    chain: Any  # LatencyChain or None (reward cost macs / params)
    teacher_note: str = ""
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in self.closers:
            close()


def load_splits(config: SearchConfig):
    """``(mini_train, mini_val)`` from the config's data section."""
    import numpy as np

    from pipeline.data import load_dataset, split_train_val

    train, _ = load_dataset(config.data.path, image_size=config.space.input_size)
    mini_train, mini_val = split_train_val(train, config.data.val_fraction, config.data.split_seed)
    if config.data.train_images:
        mini_train = mini_train.take(np.arange(min(config.data.train_images, len(mini_train))))
    if config.data.val_images:
        mini_val = mini_val.take(np.arange(min(config.data.val_images, len(mini_val))))
    return mini_train, mini_val


def proxy_settings(config: SearchConfig):
    from pipeline.proxy import ProxySettings

    p = config.proxy
    return ProxySettings(
        epochs=p.epochs,
        batch_size=p.batch_size,
        lr=p.lr,
        momentum=p.momentum,
        weight_decay=p.weight_decay,
        warmup_epochs=p.warmup_epochs,
        loss=p.loss,
        temperature=p.temperature,
        alpha=p.alpha,
        seed=config.search.seed,
    )


def build_setup(config: SearchConfig, log: Callable[[str], None]) -> SearchSetup:
    from pipeline.latency_chain import LatencyChain, WorkerExporter

    space = config.space.build()
    mini_train, mini_val = load_splits(config)
    if mini_train.num_classes != space.num_classes:
        raise SearchError(
            f"{config.data.path} has {mini_train.num_classes} classes but space.num_classes is "
            f"{space.num_classes}; set space.num_classes = {mini_train.num_classes}"
        )
    settings = proxy_settings(config)
    teacher, note = None, ""
    if settings.loss in ("kd", "od"):
        from pipeline.teacher_cache import cached_teacher

        started = time.perf_counter()
        teacher, path, hit = cached_teacher(
            config.teacher.spec,
            mini_train,
            batch_size=settings.batch_size,
            seed=settings.seed,
            epochs=settings.epochs,
            members=settings.loss == "od",
            cache_dir=config.teacher.cache_dir,
            input_size=space.input_size,
        )
        seconds = time.perf_counter() - started
        note = f"teacher logits {'read from' if hit else 'computed into'} {path} ({seconds:.1f} s)"
        log(note)
    executor = InProcessExecutor(mini_train, mini_val, settings, teacher, config.proxy.threads)
    setup = SearchSetup(config, space, config.reward.spec(), executor, None, note)
    if config.reward.cost == "latency_ms":
        exporter = None
        if config.latency.overlap:
            exporter = WorkerExporter(config.latency.export_cache_dir, num_threads=1)
            setup.closers.append(exporter.close)
        measurement_cache = None
        if config.latency.measurement_cache != "none":
            from device_bench.cache import MeasurementCache

            measurement_cache = MeasurementCache(config.latency.measurement_cache or None)
        setup.chain = LatencyChain(
            config.latency.backends,
            export_cache_dir=config.latency.export_cache_dir,
            measurement_cache=measurement_cache,
            threads=config.latency.threads,
            exporter=exporter,
            log=log,
        )
        if setup.chain.best_rank() is None:
            setup.close()
            details = "; ".join(f"{s['spec']}: {s['why']}" for s in setup.chain.status())
            raise SearchError(f"no latency backend is available ({details})")
    setup.closers.append(executor.close)
    return setup


# --------------------------------------------------------------------------------------------
# The loop


class Search:
    """One run folder: its store, controller and set-up.  `run()` goes to the budget."""

    def __init__(
        self,
        config: SearchConfig,
        run_dir: str | Path,
        setup: SearchSetup,
        *,
        resume: bool,
        log: Callable[[str], None] | None = None,
        show_progress: bool = True,
    ) -> None:
        from pipeline.controllers import make_controller

        self.config = config
        self.run_dir = Path(run_dir)
        self.setup = setup
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self.show_progress = show_progress
        self.hash = config_hash(config)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.store = ResultsStore(self.run_dir / STORE_FILE_NAME)
        stored_hash = self.store.get_meta("config_hash")
        if resume:
            if stored_hash is None:
                raise SearchError(f"{self.run_dir} holds no search to resume")
            if stored_hash != self.hash:
                raise SearchError(
                    f"{self.run_dir}/config.toml (hash {self.hash}) is not the config this run "
                    f"started with (hash {stored_hash}); restore it or start a new run"
                )
        else:
            if stored_hash is not None or self.store.count():
                raise SearchError(
                    f"{self.run_dir} already holds a search; resume it with "
                    f"`pearl search --resume {self.run_dir}` or choose another --out folder"
                )
            self.store.set_meta("config_hash", self.hash)
            self.store.set_meta("created_at", str(time.time()))
        save_config(config, self.run_dir)
        self.controller = make_controller(
            config.controller.name,
            setup.space.decisions(),
            config.search.seed,
            **config.controller.options,
        )
        last = self.store.last_generation()
        self.generation, self.elapsed_before = 0, 0.0
        if last is not None:
            generation, state, self.elapsed_before = last
            self.controller.load_state_dict(state)
            self.generation = generation + 1
        self.proposed = sum(len(r) for r in self.store.generation_rewards())

    # -- budget ----------------------------------------------------------------------------

    def _remaining(self, started: float) -> int | None:
        """Candidates to propose next (0: budget spent)."""
        search = self.config.search
        if search.max_hours and (self.elapsed_before + time.time() - started) >= (
            search.max_hours * 3600
        ):
            return 0
        if search.max_candidates:
            return max(0, search.max_candidates - self.proposed)
        return None

    # -- run -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.time()
        with _Progress(self, enabled=self.show_progress) as progress:
            while True:
                remaining = self._remaining(started)
                if remaining == 0:
                    break
                n = self.config.search.batch_size
                if remaining is not None:
                    n = min(n, remaining)
                choices = self.controller.propose(n)
                rows = self._evaluate_generation(choices, progress)
                rewards = [row.reward for row in rows]
                stats = self.controller.update(choices, rewards)
                elapsed = self.elapsed_before + time.time() - started
                self.store.finish_generation(
                    self.generation, self.controller.state_dict(), rewards, stats, elapsed
                )
                self.proposed += n
                self.generation += 1
                progress.generation_done()
        from pipeline.search_report import write_report

        return write_report(self)

    def _evaluate_generation(self, choices: list[list[int]], progress) -> list[Candidate]:
        from models.costs import arch_cost

        g = self.generation
        archs = [self.setup.space.arch_from(c) for c in choices]
        rows: list[Candidate | None] = [self.store.at(g, i) for i in range(len(choices))]
        for i, row in enumerate(rows):
            if row is not None and row.key != archs[i].key():
                raise SearchError(
                    f"stored generation {g} slot {i} is {row.key} but the controller proposes "
                    f"{archs[i].key()}: the controller state does not match this store"
                )
        # reuse archs evaluated before; pick the first slot of each new arch to train
        first_slot: dict[str, int] = {}
        for i, arch in enumerate(archs):
            if rows[i] is None:
                previous = self.store.evaluated(arch.key())
                if previous is not None:
                    rows[i] = self._reuse(previous, g, i)
                    progress.candidate_done(rows[i])
                else:
                    first_slot.setdefault(arch.key(), i)
        to_train = sorted(first_slot.values())
        early_stop = self._early_stop()
        jobs = [TrainJob(g, i, archs[i].encode(), early_stop) for i in to_train]
        prefetch = self._start_prefetch([archs[i] for i in to_train])
        try:
            for job, result in self.setup.executor.train(jobs):
                arch = archs[job.slot]
                cost = arch_cost(arch)
                rows[job.slot] = self._store_training(job, arch, cost, choices[job.slot], result)
                self._log_event(rows[job.slot])
                rows[job.slot] = self._complete(rows[job.slot], arch)
                progress.candidate_done(rows[job.slot])
        finally:
            if prefetch is not None:
                prefetch.shutdown(wait=True, cancel_futures=True)
        # duplicates inside the batch, and rows a killed run left without latency
        for i, arch in enumerate(archs):
            if rows[i] is None:
                rows[i] = self._reuse(self.store.evaluated(arch.key()), g, i)
                progress.candidate_done(rows[i])
            elif rows[i].status == "trained":
                rows[i] = self._complete(rows[i], arch)
        self._remeasure_if_backend_returned()
        return [self.store.at(g, i) for i in range(len(choices))]

    # -- pieces ----------------------------------------------------------------------------

    def _early_stop(self):
        proxy = self.config.proxy
        if not proxy.early_stop_epoch:
            return None
        from pipeline.proxy import EarlyStop

        best = self.store.best_early_accuracy(self.generation)
        threshold = proxy.early_stop_ratio * best if best is not None else 0.0
        return EarlyStop(proxy.early_stop_epoch, threshold)

    def _start_prefetch(self, archs) -> ThreadPoolExecutor | None:
        chain = self.setup.chain
        if chain is None or not self.config.latency.overlap or not archs:
            return None
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="latency-export")

        def prepare(arch):
            try:
                chain.prepare(arch)
            except Exception as error:  # measured again (and reported) in the main thread
                self.log(f"background export of {arch.key()} failed: {error}")

        for arch in archs:
            pool.submit(prepare, arch)
        return pool

    def _store_training(self, job: TrainJob, arch, cost, choices, result) -> Candidate:
        common = dict(
            generation=job.generation,
            slot=job.slot,
            arch=job.arch,
            key=arch.key(),
            choices=choices,
            macs=cost.macs,
            params=cost.params,
            config_hash=self.hash,
        )
        if isinstance(result, BaseException):
            return self.store.insert(
                **common,
                status="failed",
                accuracy=0.0,
                reward=0.0,
                error=f"training failed: {type(result).__name__}: {result}",
            )
        return self.store.insert(
            **common,
            status="trained",
            accuracy=result.accuracy,
            early_accuracy=result.early_accuracy,
            epochs_trained=result.epochs_trained,
            train_seconds=result.seconds,
            error="early termination" if result.stopped_early else None,
        )

    def _complete(self, row: Candidate, arch) -> Candidate:
        """Latency (if the reward needs it) and reward for a trained row."""
        if row.status != "trained":
            return row
        status = "terminated" if row.error == "early termination" else "ok"
        values: dict[str, Any] = {}
        if self.setup.chain is not None:
            from pipeline.latency_chain import LatencyUnavailableError

            try:
                record = self.setup.chain.measure(arch)
            except LatencyUnavailableError as error:
                if self.setup.chain.best_rank() is None:
                    raise SearchError(
                        f"every latency backend is down ({error}); reattach the device or fix "
                        f"latency.backends, then `pearl search --resume {self.run_dir}`"
                    ) from None
                return self.store.update(row.id, status="failed", reward=0.0, error=str(error))
            values = _latency_values(record)
        row = self.store.update(row.id, **values)
        return self.store.update(row.id, status=status, reward=self._reward(row))

    def _reward(self, row: Candidate) -> float:
        cost = row.cost(self.config.reward.cost)
        if row.status == "failed" or cost is None or row.accuracy is None:
            return 0.0
        return float(self.setup.reward_spec(row.accuracy, float(cost)))

    def _reuse(self, previous: Candidate, generation: int, slot: int) -> Candidate:
        skip = {"id", "generation", "slot", "reused_from", "created_at", "train_seconds"}
        values = {k: v for k, v in previous.to_dict().items() if k not in skip}
        values["latency_seconds"] = 0.0
        return self.store.insert(
            **values, generation=generation, slot=slot, reused_from=previous.id, train_seconds=0.0
        )

    def _log_event(self, row: Candidate) -> None:
        event = {
            "generation": row.generation,
            "slot": row.slot,
            "key": row.key,
            "status": row.status,
            "accuracy": row.accuracy,
            "train_seconds": row.train_seconds,
            "pid": os.getpid(),
            "time": time.time(),
        }
        with (self.run_dir / EVENTS_FILE_NAME).open("a") as handle:
            handle.write(json.dumps(event) + "\n")

    def _remeasure_if_backend_returned(self) -> None:
        chain = self.setup.chain
        if chain is None or not chain.refresh():
            return
        self.remeasure(self.front_runners(self.config.latency.remeasure_top))

    def front_runners(self, k: int) -> list[Candidate]:
        """The `k` best distinct archs by reward (first evaluations only)."""
        rows = self.store.candidates("WHERE reused_from IS NULL AND status IN ('ok','terminated')")
        rows.sort(key=lambda r: (-(r.reward or 0.0), r.id))
        return rows[:k]

    def remeasure(self, rows: Sequence[Candidate]) -> int:
        """Re-time rows scored by a worse backend than the best one up now; every row of the
        same arch gets the new latency and reward.  Returns how many archs were re-measured."""
        from models.arch import Arch

        chain, done = self.setup.chain, 0
        for row in rows:
            if chain is None or not chain.needs_remeasure(row.latency_rank):
                continue
            record = chain.measure(Arch.decode(row.arch))
            self.log(
                f"re-measured {row.key} on {record.spec}: {record.latency_ms:.3f} ms "
                f"(was {row.latency_ms:.3f} ms from {row.latency_spec})"
            )
            for same in self.store.candidates("WHERE key = ?", (row.key,)):
                updated = self.store.update(same.id, **_latency_values(record))
                self.store.update(same.id, reward=self._reward(updated))
            done += 1
        return done


def _latency_values(record) -> dict[str, Any]:
    return {
        "latency_ms": record.latency_ms,
        "latency_source": record.source,
        "latency_device": record.device,
        "latency_spec": record.spec,
        "latency_rank": record.rank,
        "latency_seconds": record.seconds,
    }


# --------------------------------------------------------------------------------------------
# Progress bar (stderr)


class _Progress:
    def __init__(self, search: Search, enabled: bool) -> None:
        self.search = search
        self.enabled = enabled
        self._progress = None
        self._task = None
        self._lock = threading.Lock()

    def __enter__(self) -> _Progress:
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]search[/] gen {task.fields[generation]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("best reward {task.fields[best]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.__enter__()
        budget = self.search.config.search.max_candidates or None
        done = self.search.store.count()
        self._task = self._progress.add_task(
            "search", total=budget, completed=done, generation=self.search.generation, best="-"
        )
        self._refresh_best()
        return self

    def _refresh_best(self) -> None:
        rows = self.search.front_runners(1)
        if self._progress is not None and rows:
            self._progress.update(self._task, best=f"{rows[0].reward:.4f}")

    def candidate_done(self, row: Candidate) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=self.search.store.count())
            self._refresh_best()

    def generation_done(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, generation=self.search.generation)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
