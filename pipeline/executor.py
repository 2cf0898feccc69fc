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
    order), an exception object in place of a result when that candidate failed."""

    def train(self, jobs: Sequence[TrainJob]) -> Iterator[tuple[TrainJob, Any]]: ...

    def close(self) -> None: ...


class InProcessExecutor:
    """Trains one candidate after the other in this process.  `settings` is the config's
    ``[proxy]`` section, `seed` the search's seed."""

    def __init__(self, mini_train, mini_val, settings, teacher=None, threads: int = 0, seed=0):
        self.mini_train = mini_train
        self.mini_val = mini_val
        self.settings = settings
        self.teacher = teacher
        self.threads = threads or os.cpu_count() or 1
        self.seed = seed

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
                    seed=self.seed,
                )
            except (ValueError, RuntimeError, FloatingPointError) as error:
                result = error
            yield job, result

    def close(self) -> None:
        pass
