"""Executors: where candidates are trained on the proxy task (DESIGN.md "Search methods and
where they run").  The search (the driver) owns the store and the latency chain; an executor
only trains and returns scores.  In-process is the default; a distributed executor implements
the same `Executor` protocol and registers nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class TrainJob:
    generation: int
    slot: int
    arch: str  # canonical arch string
    early_stop: Any = None  # pipeline.proxy.EarlyStop or None


class Executor(Protocol):
    """Trains candidates on the proxy task; yields each result as soon as it is known (in any
    order), an exception object in place of a result when that candidate failed.

    `trains_beside_driver`: True when candidates may train on the driver's machine while the
    driver works between results (a local Ray); the search then times on the host only after
    the batch's training has ended."""

    trains_beside_driver: bool

    def train(self, jobs: Sequence[TrainJob]) -> Iterator[tuple[TrainJob, Any]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ProxyTask:
    """Everything a worker needs to score a candidate, shipped once per search (an executor
    that runs elsewhere sends this to its workers once, then only jobs)."""

    mini_train: Any  # pipeline.data.ImageArrays
    mini_val: Any
    settings: Any  # the config's [proxy] section
    teacher: Any = None  # pipeline.proxy.TeacherSignal or None
    seed: int = 0  # the search's seed
    threads: int = 0  # torch threads (0: all cores)
    compute: Any = None  # the config's [compute] section (None: the defaults)

    def score(self, job: TrainJob) -> Any:
        """The `pipeline.proxy.ProxyResult` of `job`, or the exception that ended it (a
        candidate that cannot train is a result too: it is stored as failed).  A device this
        machine lacks (`pipeline.device.DeviceError`) is no candidate's fault and is raised."""
        import torch

        from models.network import decode_network
        from pipeline.proxy import train_candidate

        torch.set_num_threads(self.threads or os.cpu_count() or 1)
        try:
            return train_candidate(
                decode_network(job.arch),
                self.mini_train,
                self.mini_val,
                self.settings,
                self.teacher,
                early_stop=job.early_stop,
                seed=self.seed,
                compute=self.compute,
            )
        except (ValueError, RuntimeError, FloatingPointError) as error:
            return error


class InProcessExecutor:
    """Trains one candidate after the other in this process."""

    trains_beside_driver = False  # nothing trains while the driver times

    def __init__(self, task: ProxyTask) -> None:
        self.task = task

    def train(self, jobs: Sequence[TrainJob]) -> Iterator[tuple[TrainJob, Any]]:
        for job in jobs:
            yield job, self.task.score(job)

    def close(self) -> None:
        pass
