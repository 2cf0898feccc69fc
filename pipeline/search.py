"""The shared part of every search method (DESIGN.md "The loop"): the run folder, its results
store and resume, the evaluation of proposed archs, the budget, the choice of winners.  What a
method adds (a space, a proposer or optimiser, an evaluator) is in `pipeline.methods`.

Per generation g, for the archs a method proposes:

1. Slots already in the store (a resumed generation) are taken as they are; an arch evaluated
   before in this run is *reused* (a new row pointing at the first one, nothing retrained).
2. The rest is trained through the `pipeline.executor.Executor` (in-process by default).
   Meanwhile a background thread exports the latency files of the batch
   (`LatencyChain.prepare`, in a converter subprocess: the other core).  Each candidate is
   stored the moment its training ends, then timed (`LatencyChain.measure`, one timing at a
   time, while no training runs in this process) and its reward stored.  When the executor
   trains other candidates on this machine meanwhile (a local Ray) and the timing would run
   here too (``host:...``), the batch's timings wait until its training has ended.
3. If a better latency backend came back (a phone re-attached), the front-runners measured by a
   worse one are re-measured.
4. The method learns from the stored rewards; its new state, in the same transaction as the
   generation record, goes to the store (`finish_generation`).

When the budget is spent, the winners and the Pareto front are re-measured on the best backend
that is up until the choice is stable (`settle_winners`), then `pipeline.search_report` writes
the result files.

A ``kill -9`` at any moment loses at most the candidate being trained: ``--resume`` reloads the
last recorded method state, proposes the same batch again (same RNG state) and takes every
candidate already stored instead of retraining it.  Every row the store writes is also appended
whole to evaluations.jsonl, so a damaged store can be rebuilt (`pipeline.repair`, run by
``--resume`` when the store is unusable).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from models.files import append_line
from pipeline.candidate_memory import estimated_memory, measured_memory
from pipeline.config import SearchConfig
from pipeline.config_hash import config_hash, save_config
from pipeline.executor import TrainJob
from pipeline.layout import SearchLayout
from pipeline.lock import folder_contents, folder_lock
from pipeline.registry import SEARCH_METHODS
from pipeline.repair import open_store
from pipeline.search_progress import NoProgress, SearchProgress
from pipeline.search_setup import SearchError, SearchSetup, build_setup
from pipeline.stop import write_in_progress
from pipeline.store import Candidate, ResultsStore

__all__ = ["Search", "SearchError", "build_setup"]


class Search:
    """One run folder: its store, its method and set-up.  `run()` goes to the budget, then
    `finish()` settles the winners and writes the result files; `close()` (or ``with``) closes
    the store.  The folder is locked (`pipeline.lock`) from construction to `close()`: a second
    process gets a `LockHeldError`."""

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
        self.config = config
        self.run_dir = Path(run_dir)
        self.layout = SearchLayout(self.run_dir)
        self.setup = setup
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self.show_progress = show_progress
        self.hash = config_hash(config)
        self._lock = folder_lock(self.run_dir, self.log).acquire()  # nested under a command's
        try:
            if not resume:
                _refuse_foreign_folder(self.layout)
            if resume:  # an unusable store is rebuilt from what survives, with a message
                self.store = open_store(self.layout, self.log)
            else:
                self.store = ResultsStore(self.layout.store)
        except BaseException:
            self._lock.release()
            raise
        try:
            self._check_folder(resume)  # saves the config (before the store names its hash)
            self.method = SEARCH_METHODS[config.search.method].load()(config, setup.space)
            last = self.store.last_generation()
        except BaseException:
            self.close()
            raise
        self.generation, self.elapsed_before = 0, 0.0
        if last is not None:
            generation, state, self.elapsed_before = last
            self.method.restore(state)
            self.generation = generation + 1
        self.proposed = sum(len(r) for r in self.store.generation_rewards())
        self._started = time.time()
        self._progress: SearchProgress | NoProgress = NoProgress()

    def close(self) -> None:
        """Close the store (its WAL goes back into results.sqlite); release the folder."""
        try:
            self.store.close()
        finally:
            self._lock.release()

    def __enter__(self) -> Search:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_folder(self, resume: bool) -> None:
        stored_hash = self.store.get_meta("config_hash")
        if resume and stored_hash is None and not self.store.count():
            resume = False  # killed before its first write: this resume starts it
        if resume:
            if stored_hash is None:
                raise SearchError(f"{self.run_dir} holds no search to resume")
            if stored_hash != self.hash:
                raise SearchError(
                    f"{self.layout.config} (hash {self.hash}) is not the config this run "
                    f"started with (hash {stored_hash}); restore it or start a new run"
                )
            save_config(self.config, self.run_dir)
            return
        if stored_hash is not None or self.store.count():
            raise SearchError(
                f"{self.run_dir} already holds a search; resume it with "
                f"`pearl search --resume {self.run_dir}` or choose another --out folder"
            )
        save_config(self.config, self.run_dir)  # first: a kill now leaves a resumable folder
        self.store.set_meta("config_hash", self.hash)
        self.store.set_meta("created_at", str(time.time()))

    # -- what a method calls ---------------------------------------------------------------

    def next_batch_size(self) -> int:
        """How many candidates the next generation may propose (0: the budget is spent)."""
        search = self.config.search
        elapsed = self.elapsed_before + time.time() - self._started
        if search.max_hours and elapsed >= search.max_hours * 3600:
            return 0
        if search.max_candidates:
            return min(search.batch_size, max(0, search.max_candidates - self.proposed))
        return search.batch_size

    def evaluate(self, archs: Sequence[Any], choices: Sequence[Sequence[int]]) -> list[Candidate]:
        """Store, train, time and reward the archs of this generation (slot i: ``archs[i]``,
        proposed as ``choices[i]``); returns their rows in slot order."""
        g = self.generation
        rows: list[Candidate | None] = [self.store.at(g, i) for i in range(len(archs))]
        for i, row in enumerate(rows):
            if row is not None and row.key != archs[i].key():
                raise SearchError(
                    f"stored generation {g} slot {i} is {row.key} but the method proposes "
                    f"{archs[i].key()}: the method's state does not match this store"
                )
        # reuse archs evaluated before; pick the first slot of each new arch to train
        first_slot: dict[str, int] = {}
        for i, arch in enumerate(archs):
            if rows[i] is None:
                previous = self.store.evaluated(arch.key())
                if previous is not None:
                    rows[i] = self._reuse(previous, g, i)
                    self._progress.candidate_done(rows[i])
                else:
                    first_slot.setdefault(arch.key(), i)
        to_train = sorted(first_slot.values())
        self._train(g, archs, to_train, choices, rows)
        # duplicates inside the batch, and rows a killed run left without latency
        for i, arch in enumerate(archs):
            if rows[i] is None:
                rows[i] = self._reuse(self.store.evaluated(arch.key()), g, i)
                self._progress.candidate_done(rows[i])
            elif rows[i].status == "trained":
                rows[i] = self._complete(rows[i], arch)
        self._remeasure_if_backend_returned()
        return [self.store.at(g, i) for i in range(len(archs))]

    def finish_generation(
        self, state: dict[str, Any], rewards: Sequence[float], stats: dict[str, float]
    ) -> None:
        """Record the method's update and its new state (one transaction), then move on."""
        elapsed = self.elapsed_before + time.time() - self._started
        with write_in_progress():
            self.store.finish_generation(self.generation, state, rewards, stats, elapsed)
            self._append_event({"event": "generation", "generation": self.generation})
        self.proposed += len(rewards)
        self.generation += 1
        self._progress.generation_done()

    # -- the whole search ------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self._started = time.time()
        with SearchProgress(self, enabled=self.show_progress) as progress:
            self._progress = progress
            try:
                self.method.run(self)
            finally:
                self._progress = NoProgress()
        return self.finish()

    def finish(self) -> dict[str, Any]:
        """Settle the winners on the best backend, write the result files; the summary."""
        from pipeline.search_report import write_search_outputs

        self.settle_winners()
        chain = self.setup.chain
        summary = write_search_outputs(
            self.layout,
            self.config,
            self.store.scored(self.config.reward.cost),
            candidates=self.store.count(),
            generations=self.generation,
            latency_backends=chain.status() if chain is not None else [],
        )
        self._fail_if_nothing_scored()
        return summary

    def _fail_if_nothing_scored(self) -> None:
        """A search in which every candidate failed has no result: a `SearchError` that says
        why (so the command ends with a non-zero status)."""
        rows = self.store.candidates("WHERE reused_from IS NULL")
        if not rows or any(r.status in ("ok", "terminated") for r in rows):
            return
        if all(r.train_seconds is not None for r in rows):  # each trained, none timed
            what = f"no latency backend could time any of the {len(rows)} candidates"
        else:
            what = f"all {len(rows)} candidates failed"
        first = rows[0]
        raise SearchError(
            f"{what}, so the search has no result; the first (generation {first.generation}, "
            f"slot {first.slot}): {first.error}. Each row, with its error, is in "
            f"{self.layout.events}; fix the cause and start a new search"
        )

    def settle_winners(self, rounds: int = 5) -> None:
        """Re-measure the winners and the Pareto front on the best backend that is up (a
        table or a fallback may have scored them while the phone was away) until the choice
        is stable."""
        from models.network import decode_network
        from pipeline.search_report import contenders

        chain = self.setup.chain
        if chain is None:
            return
        chain.refresh()
        for _ in range(rounds):
            rows = contenders(self.store.scored(self.config.reward.cost), self.config)
            # direct latency files of the contenders are compared with conversions first
            redo = set(chain.verify_files([decode_network(r.arch) for r in rows]))
            if not self.remeasure(rows, again=redo):
                break

    # -- pieces ----------------------------------------------------------------------------

    def _early_stop(self):
        proxy = self.config.proxy
        if not proxy.early_stop_epoch:
            return None
        from pipeline.proxy import EarlyStop

        best = self.store.best_early_accuracy(self.generation)
        threshold = proxy.early_stop_ratio * best if best is not None else 0.0
        return EarlyStop(proxy.early_stop_epoch, threshold)

    def _train(self, g, archs, slots, choices, rows) -> None:
        """Train the archs at `slots` through the executor; each row is stored, timed and
        rewarded the moment its training ends."""
        early_stop = self._early_stop()
        jobs = [TrainJob(g, i, archs[i].encode(), early_stop) for i in slots]
        prefetch = self._start_prefetch([archs[i] for i in slots])
        waiting = []  # trained rows whose host timing waits for the batch's training to end
        try:
            for job, result in self.setup.executor.train(jobs):
                arch = archs[job.slot]
                cost = arch.cost()
                with write_in_progress():
                    row = self._store_training(job, arch, cost, choices[job.slot], result)
                    self._log_event(row, "trained")
                if self._timing_would_overlap_training():
                    waiting.append((job.slot, row, arch))
                    continue
                rows[job.slot] = self._complete(row, arch)
                self._progress.candidate_done(rows[job.slot])
            for slot, row, arch in waiting:
                rows[slot] = self._complete(row, arch)
                self._progress.candidate_done(rows[slot])
        finally:
            if prefetch is not None:
                prefetch.shutdown(wait=True, cancel_futures=True)

    def _timing_would_overlap_training(self) -> bool:
        """Would timing now run on this machine while other candidates train on it (a local
        Ray)?  The in-process executor trains nothing while the driver times."""
        chain = self.setup.chain
        beside = getattr(self.setup.executor, "trains_beside_driver", False)
        return chain is not None and beside and chain.times_on_host()

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
            **estimated_memory(self.config.reward, arch),
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
                memory = measured_memory(self.config.reward, record, arch.key())
            except LatencyUnavailableError as error:
                if self.setup.chain.best_rank() is None:
                    raise SearchError(
                        f"every latency backend is down ({error}); reattach the device or fix "
                        f"latency.backends, then `pearl search --resume {self.run_dir}`"
                    ) from None
                with write_in_progress():
                    row = self.store.update(row.id, status="failed", reward=0.0, error=str(error))
                    self._log_event(row, "scored")
                return row
            values = {**record.row_values(), **memory}
        with write_in_progress():
            row = self.store.update(row.id, **values)
            row = self.store.update(row.id, status=status, reward=self._reward(row))
            self._log_event(row, "scored")
        return row

    def _reward(self, row: Candidate) -> float:
        cost = row.cost(self.config.reward.cost)
        if row.status == "failed" or cost is None or row.accuracy is None:
            return 0.0
        return float(self.setup.reward_spec(row.accuracy, float(cost)))

    def _reuse(self, previous: Candidate, generation: int, slot: int) -> Candidate:
        skip = {"id", "generation", "slot", "reused_from", "created_at", "train_seconds"}
        values = {k: v for k, v in previous.to_dict().items() if k not in skip}
        values["latency_seconds"] = 0.0
        with write_in_progress():
            where = dict(generation=generation, slot=slot, reused_from=previous.id)
            row = self.store.insert(**values, **where, train_seconds=0.0)
            self._log_event(row, "reused")
        return row

    def _log_event(self, row: Candidate, event: str) -> None:
        """Append the whole row as it now is in the store to evaluations.jsonl (`event`:
        trained, scored, reused or remeasured; a finished controller update is a "generation"
        line): what `pipeline.repair` rebuilds a damaged store from.  Lines are only ever
        appended; the last one of a (generation, slot) wins."""
        self._append_event({"event": event, **row.to_dict()})

    def _append_event(self, line: dict[str, Any]) -> None:
        line = {**line, "pid": os.getpid(), "time": time.time()}
        append_line(self.layout.events, json.dumps(line))

    def _remeasure_if_backend_returned(self) -> None:
        chain = self.setup.chain
        if chain is None or not chain.refresh():
            return
        self.remeasure(self.front_runners(self.config.latency.remeasure_top))

    def front_runners(self, k: int) -> list[Candidate]:
        """The `k` best distinct archs by reward (first evaluations only)."""
        rows = sorted(self.store.scored(), key=lambda r: (-(r.reward or 0.0), r.id))
        return rows[:k]

    def remeasure(self, rows: Sequence[Candidate], again: Collection[str] = ()) -> int:
        """Re-time rows scored by a worse backend than the best one up now, and rows whose
        arch key is in `again`; every row of the same arch gets the new latency and reward.
        Returns how many archs were re-measured."""
        from models.network import decode_network

        chain, done = self.setup.chain, 0
        for row in rows:
            if chain is None:
                continue
            if not (chain.needs_remeasure(row.latency_rank) or row.key in again):
                continue
            record = chain.measure(decode_network(row.arch))
            self.log(
                f"re-measured {row.key} on {record.spec}: {record.latency_ms:.3f} ms "
                f"(was {row.latency_ms:.3f} ms from {row.latency_spec})"
            )
            memory = measured_memory(self.config.reward, record, row.key)
            for same in self.store.candidates("WHERE key = ?", (row.key,)):
                with write_in_progress():
                    updated = self.store.update(same.id, **record.row_values(), **memory)
                    updated = self.store.update(same.id, reward=self._reward(updated))
                    self._log_event(updated, "remeasured")
            done += 1
        return done


def _refuse_foreign_folder(layout: SearchLayout) -> None:
    """A new search goes into an empty folder or its own: never over other files (a `pearl
    run` folder's config.toml, say)."""
    if layout.store.is_file() or not layout.root.is_dir():
        return
    found = folder_contents(layout.root)
    if not found:
        return
    hint = ""
    if layout.config.is_file() and (layout.root / "search").is_dir():
        hint = f" (a `pearl run` folder: continue it with `pearl run --resume {layout.root}`)"
    raise SearchError(
        f"{layout.root} is not empty and holds no pearl search ({', '.join(found[:5])}"
        f"{', ...' if len(found) > 5 else ''}){hint}; give a new or empty --out folder"
    )
