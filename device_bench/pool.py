"""Several devices measuring a list of models in parallel: one thread per device, one job per
device at a time, jobs taken from a shared queue.

A device whose `measure` raises `DeviceDroppedError` (it already retried with back-off) is taken
out of the pool and its job goes back to the queue for another device; when no device is left,
`PoolExhaustedError` names the jobs that could not be measured.  Other `MeasurementError`s
belong to the model (it does not load, the tool crashed on it): the job is not retried and the
error is reported per job (`PoolJobError` after every other job has finished).

Generic over `LatencyBackend`; with a `MeasurementCache` every job goes through
`measure_cached`, so nothing is measured twice.  Pool devices should be the same phone model:
each measurement carries its own device fingerprint id, and the cache keys by it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from device_bench.cache import MeasurementCache, measure_cached
from device_bench.measurement import LatencyBackend, Measurement, MeasurementError
from device_bench.phone import DeviceDroppedError


class PoolExhaustedError(MeasurementError):
    """Every device dropped out before all jobs were measured."""


class PoolJobError(MeasurementError):
    """Some jobs failed; `results` holds the measurements (None where a job failed) and
    `errors` maps job index -> the error."""

    def __init__(self, message: str, results: list, errors: dict[int, Exception]) -> None:
        super().__init__(message)
        self.results = results
        self.errors = errors


@dataclass(frozen=True)
class JobDone:
    """What the per-job callback receives."""

    index: int
    path: Path
    device: str  # the backend spec that ran it
    measurement: Measurement | None
    error: Exception | None
    cached: bool


class DevicePool:
    def __init__(
        self,
        backends: Sequence[LatencyBackend],
        *,
        cache: MeasurementCache | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if not backends:
            raise ValueError("a device pool needs at least one backend")
        self.backends = list(backends)
        self.cache = cache
        self.log = log or (lambda message: None)
        self.removed: dict[str, str] = {}  # spec -> why it left the pool

    @property
    def active(self) -> list[LatencyBackend]:
        return [b for b in self.backends if b.spec not in self.removed]

    def measure_many(
        self,
        paths: Sequence[str | Path],
        on_result: Callable[[JobDone], None] | None = None,
    ) -> list[Measurement]:
        """Measurements of `paths`, in order.  `on_result` is called (from worker threads, one
        call at a time) as each job finishes."""
        paths = [Path(p) for p in paths]
        results: list[Measurement | None] = [None] * len(paths)
        errors: dict[int, Exception] = {}
        jobs: queue.Queue[int] = queue.Queue()
        for index in range(len(paths)):
            jobs.put(index)
        lock = threading.Lock()
        pending = [len(paths)]
        alive = [len(self.active)]
        finished = threading.Event()
        if not paths:
            return []
        if not alive[0]:
            raise PoolExhaustedError(self._exhausted_message(paths, set(range(len(paths)))))

        def report(done: JobDone) -> None:
            if on_result is not None:
                with lock:
                    on_result(done)

        def worker(backend: LatencyBackend) -> None:
            while not finished.is_set():
                try:
                    index = jobs.get(timeout=0.05)
                except queue.Empty:
                    continue
                try:
                    measurement, cached = measure_cached(backend, paths[index], self.cache)
                except DeviceDroppedError as err:
                    jobs.put(index)  # the job survives; this device leaves
                    with lock:
                        self.removed[backend.spec] = str(err)
                        alive[0] -= 1
                        if alive[0] == 0:
                            finished.set()
                    self.log(f"{backend.spec} left the pool: {err}")
                    return
                except Exception as err:  # the model's fault (or a bug): report, do not hang
                    errors[index] = err
                    report(JobDone(index, paths[index], backend.spec, None, err, False))
                else:
                    results[index] = measurement
                    report(JobDone(index, paths[index], backend.spec, measurement, None, cached))
                with lock:
                    pending[0] -= 1
                    if pending[0] == 0:
                        finished.set()

        threads = [
            threading.Thread(target=worker, args=(b,), name=f"pool-{b.spec}", daemon=True)
            for b in self.active
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        missing = {i for i in range(len(paths)) if results[i] is None and i not in errors}
        if missing:
            raise PoolExhaustedError(self._exhausted_message(paths, missing))
        if errors:
            lines = "; ".join(f"{paths[i].name}: {errors[i]}" for i in sorted(errors))
            raise PoolJobError(
                f"{len(errors)} of {len(paths)} model(s) could not be measured: {lines}",
                results,
                errors,
            )
        return [r for r in results if r is not None]

    def _exhausted_message(self, paths: Sequence[Path], missing: set[int]) -> str:
        names = ", ".join(paths[i].name for i in sorted(missing))
        why = "; ".join(f"{spec}: {reason}" for spec, reason in self.removed.items())
        return (
            f"no device left in the pool; {len(missing)} model(s) not measured ({names}). "
            f"Devices removed: {why or 'none were usable'}. Reconnect the phones (`pearl "
            "devices`) and run again: finished measurements are in the cache"
        )

    def close(self) -> None:
        for backend in self.backends:
            close = getattr(backend, "close", None)
            if close is not None:
                close()
