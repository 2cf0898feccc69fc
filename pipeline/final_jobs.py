"""Final training as a job an executor can run elsewhere (`pearl run`'s train stage with
``search.executor = "ray"``): one model x one loss, trained with `pipeline.training.train`.

The data and the teacher (`FinalTrainData`) are shipped once for every job; a job carries only
its settings and its folder.  The worker trains into the folder (so, on one machine or on a
filesystem every node mounts, a killed run resumes from its last finished epoch) and returns
the folder's small files (`RETURNED_FILES`); the driver writes them into its own run folder
(`write_back`), so a cluster without a shared filesystem still ends with every result on the
driver (there a killed final training restarts from epoch 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FinalTrainData:
    """What every final training of a run shares: the splits and the loaded teacher."""

    train: Any  # pipeline.data.ImageArrays
    test: Any
    teacher: Any = None  # an eval-mode nn.Module, or None (no loss needs one)


@dataclass(frozen=True)
class FinalTrainJob:
    label: str
    loss: str
    settings: Any  # pipeline.train_settings.TrainSettings
    folder: str  # the run folder's train/LABEL-LOSS, as the driver sees it
    run_info: dict[str, Any] = field(default_factory=dict)
    needs_teacher: bool = False
    threads: int | None = None  # torch threads in the worker (None: all usable cores)
    compute: Any = None  # the [compute] section as the worker applies it (None: defaults)

    def run(self, data: FinalTrainData) -> FinalTrainResult:
        """Train (resuming from the folder's state when there is one); the metrics and the
        bytes of the files the driver keeps."""
        from pipeline.training import STATE_FILE, train

        folder = Path(self.folder)
        metrics = train(
            self.settings,
            data.train,
            data.test,
            folder,
            teacher=data.teacher if self.needs_teacher else None,
            resume=(folder / STATE_FILE).is_file(),
            run_info=self.run_info,
            progress=False,
            threads=self.threads,
            compute=self.compute,
        )
        files = {name: (folder / name).read_bytes() for name in returned_files()}
        return FinalTrainResult(metrics, files)


@dataclass(frozen=True)
class FinalTrainResult:
    metrics: dict[str, Any]
    files: dict[str, bytes]  # file name -> content, written by the driver (`write_back`)


def returned_files() -> tuple[str, ...]:
    """What a finished final training sends back: its config, metrics and model (not the
    resumable state, which is large and only matters where the training runs)."""
    from pipeline.training import CONFIG_FILE, METRICS_FILE, MODEL_FILE

    return (CONFIG_FILE, MODEL_FILE, METRICS_FILE)  # metrics last: it marks "finished"


def write_back(job: FinalTrainJob, result: FinalTrainResult) -> None:
    """Write the returned files into the driver's folder of `job` (atomically; files that
    already hold the same bytes, as on a shared filesystem, are left alone)."""
    from models.files import atomic_write

    folder = Path(job.folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in result.files.items():
        path = folder / name
        if not (path.is_file() and path.read_bytes() == content):
            atomic_write(path, content)


def collect(
    outcomes: Iterable[tuple[FinalTrainJob, Any]], on_done: Callable[[FinalTrainJob, dict], None]
) -> list[str]:
    """Take the ``(job, FinalTrainResult or exception)`` pairs an executor yields: write each
    result back (`write_back`) and hand its metrics to `on_done`; returns one line per job that
    failed (``LABEL with LOSS: Error: message``), for the caller to report after the others."""
    failures = []
    for job, outcome in outcomes:
        if isinstance(outcome, BaseException):
            failures.append(f"{job.label} with {job.loss}: {type(outcome).__name__}: {outcome}")
            continue
        write_back(job, outcome)
        on_done(job, outcome.metrics)
    return failures
