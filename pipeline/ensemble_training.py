"""An ensemble teacher as KDAS makes it: N copies of one network, trained independently (one
seed each) with cross-entropy, then named together in an ensemble spec file
(`models.ensembles`).  ``pearl teacher train --seeds 0,1,2,3,4 -o DIR`` is this.

The folder::

    DIR/member-seedS.pt        each member's checkpoint, copied there when it finishes
    DIR/member-seedS.pt.run/   its run folder (`pipeline.training`: resumable after a kill)
    DIR/ensemble.json          the spec, written when every member has finished
    DIR/ensemble.stats.json    member / ensemble / oracle accuracy and the Table 5 shares
    DIR/ensemble.stats.md      the same as markdown tables (`pipeline.ensemble_stats`)

Each member is a `pipeline.final_jobs.FinalTrainJob`: in this process one after the other, or
as parallel Ray tasks (`pipeline.ray_executor.RayExecutor.train_final`, the same tasks as
`pearl run`'s final trainings) when a `RayConfig` is given.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from models.files import atomic_path
from pipeline.final_jobs import FinalTrainData, FinalTrainJob, collect
from pipeline.train_settings import TrainingError, TrainSettings

Log = Callable[[str], None]


def member_checkpoint(folder: Path, seed: int) -> Path:
    return Path(folder) / f"member-seed{seed}.pt"


def member_run_dir(folder: Path, seed: int) -> Path:
    return Path(f"{member_checkpoint(folder, seed)}.run")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; ``"0-4"`` -> ``[0, 1, 2, 3, 4]``.  Distinct, >= 0."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"seeds {text!r}: {part!r} is not a seed (0, 1, ...) or a range 0-4")
        seeds += list(range(int(low), int(high) + 1)) if dash else [int(low)]
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"seeds {text!r}: give distinct seeds, e.g. 0,1,2,3,4")
    return seeds


def member_jobs(
    settings: TrainSettings,
    seeds: Sequence[int],
    folder: Path,
    run_info: dict[str, Any],
    *,
    threads: int | None = None,
    compute: Any = None,
) -> list[FinalTrainJob]:
    """One cross-entropy training per seed, `settings` otherwise shared."""
    return [
        FinalTrainJob(
            label=f"seed{seed}",
            loss=settings.loss,
            settings=dataclasses.replace(settings, seed=seed),
            folder=str(member_run_dir(folder, seed)),
            run_info={**run_info, "command": f"{run_info.get('command', '')} (member seed {seed})"},
            threads=threads,
            compute=compute,
        )
        for seed in seeds
    ]


def check_resumable(jobs: Sequence[FinalTrainJob], resume: bool) -> None:
    """Without `resume`, a member folder that already holds a run is an error (as for one
    teacher run)."""
    from pipeline.training import STATE_FILE

    started = [job.folder for job in jobs if (Path(job.folder) / STATE_FILE).is_file()]
    if started and not resume:
        raise TrainingError(
            f"{', '.join(started)} already hold{'s' if len(started) == 1 else ''} a training "
            "run; pass --resume to continue or choose another output"
        )


def _finished(job: FinalTrainJob) -> dict | None:
    """The metrics of a member that has finished with the job's settings and data; None when
    it has not finished; an error when it finished with others (a resume with other options)."""
    from models.files import read_json
    from pipeline.train_state import differences, run_config
    from pipeline.training import CONFIG_FILE, METRICS_FILE, MODEL_FILE

    folder = Path(job.folder)
    metrics = read_json(folder / METRICS_FILE)
    if not (metrics and metrics.get("finished") and (folder / MODEL_FILE).is_file()):
        return None
    saved, now = read_json(folder / CONFIG_FILE) or {}, run_config(job.settings, job.run_info)
    saved = {"settings": saved.get("settings"), "data": _given(saved.get("data"), now["data"])}
    now = {"settings": now["settings"], "data": now["data"]}
    if saved != now:
        raise TrainingError(
            f"{folder} finished with different settings ({differences(saved, now)}); resume "
            "with the same options or choose another output"
        )
    return metrics


def _given(saved_data: dict | None, given: dict) -> dict:
    """The keys of `given` from what the run recorded about its data (it adds more)."""
    return {key: (saved_data or {}).get(key) for key in given}


def train_members(
    jobs: Sequence[FinalTrainJob],
    data: FinalTrainData,
    *,
    ray_config: Any = None,
    progress: bool = True,
    log: Log = print,
) -> dict[str, dict]:
    """Train every member not yet finished (resuming started ones); ``{label: metrics}`` of
    all of them.  With `ray_config`, the unfinished members run as parallel Ray tasks.  A
    member that fails is reported after the others have finished."""
    from pipeline.training import STATE_FILE, train

    results = {job.label: _publish(job, m) for job in jobs if (m := _finished(job)) is not None}
    pending = [job for job in jobs if job.label not in results]
    failures = []
    if pending and ray_config is not None:
        from pipeline.ray_executor import RayExecutor

        def done(job: FinalTrainJob, metrics: dict) -> None:
            results[job.label] = _publish(job, metrics)
            log(f"ensemble: member {job.label} done")

        device = getattr(pending[0].compute, "device", "auto")
        executor = RayExecutor(None, ray_config, log, device=device)
        try:
            log(f"ensemble: {len(pending)} members on Ray")
            failures = collect(executor.train_final(data, pending), done)
        finally:
            executor.close()
    else:
        for job in pending:
            log(f"ensemble: member {job.label} -> {job.folder}")
            results[job.label] = _publish(
                job,
                train(
                    job.settings,
                    data.train,
                    data.test,
                    job.folder,
                    resume=(Path(job.folder) / STATE_FILE).is_file(),
                    run_info=job.run_info,
                    progress=progress,
                    threads=job.threads,
                    compute=job.compute,
                ),
            )
    if failures:
        raise TrainingError("ensemble member training failed: " + "; ".join(failures))
    return results


def _publish(job: FinalTrainJob, metrics: dict) -> dict:
    """Copy a finished member's checkpoint beside the spec file (as soon as it finishes)."""
    from pipeline.training import MODEL_FILE

    if metrics.get("finished"):
        target = Path(job.folder.removesuffix(".run"))
        with atomic_path(target) as temporary:
            shutil.copyfile(Path(job.folder) / MODEL_FILE, temporary)
    return metrics
