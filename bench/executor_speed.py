"""Executor speed: candidates per hour for the same candidates trained in-process (one after
the other, 1 torch thread) and through a local Ray (``cpus_per_candidate = 1``: one worker per
core, 1 thread each), side by side in one run, and whether every candidate's score is identical.

Usage: python bench/executor_speed.py [--candidates 8] [--rounds 1]

The proxy task is `configs/quickstart.toml`'s (KD from the shipped teacher through the
teacher-logit cache, 1,000 mini-train images, 2 epochs); the candidates are random archs of its
space (seed 0).  Wall clock counts from the first job submitted to the last result; Ray's
start-up is reported apart (a search pays it once).  The machine is shared: the 1-minute load
average is recorded before and after.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import median_and_range, write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TITLE = "Executors: in-process vs local Ray"


def proxy_task(config):
    """The quickstart's proxy task with 1 torch thread per candidate."""
    from pipeline.executor import ProxyTask
    from pipeline.search_setup import load_splits, proxy_teacher

    mini_train, mini_val = load_splits(config)
    teacher, _, _ = proxy_teacher(config, mini_train)
    return ProxyTask(
        mini_train, mini_val, config.proxy, teacher, seed=config.search.seed, threads=1
    )


def timed(executor, jobs) -> tuple[float, dict]:
    """Wall seconds from the first submission to the last result; ``{slot: ProxyResult}``."""
    started = time.perf_counter()
    results = {job.slot: result for job, result in executor.train(jobs)}
    failed = {slot: r for slot, r in results.items() if isinstance(r, BaseException)}
    if failed:
        raise SystemExit(f"candidates failed: {failed}")
    return time.perf_counter() - started, results


def run_rounds(task, jobs, rounds: int) -> tuple[dict, float, bool]:
    """``({executor: [(wall_s, results), ...]}, ray start-up s, identical scores)``."""
    from pipeline.config import RayConfig
    from pipeline.executor import InProcessExecutor
    from pipeline.ray_executor import RayExecutor

    started = time.perf_counter()
    ray = RayExecutor(task, RayConfig(cpus_per_candidate=1), log=print)
    startup_s = time.perf_counter() - started
    runs: dict[str, list] = {"in-process": [], "ray": []}
    try:
        for index in range(rounds):
            order = [("in-process", InProcessExecutor(task)), ("ray", ray)]
            for name, executor in order if index % 2 == 0 else order[::-1]:
                wall_s, results = timed(executor, jobs)
                runs[name].append((wall_s, results))
                print(f"round {index} {name}: {wall_s:.1f} s", file=sys.stderr)
    finally:
        ray.close()
    scores = [
        {slot: (r.accuracy, r.train_loss_per_epoch) for slot, r in results.items()}
        for runs_of in runs.values()
        for _, results in runs_of
    ]
    return runs, startup_s, all(s == scores[0] for s in scores)


def table(runs: dict, workers: int, candidates: int) -> list[str]:
    rows = [
        "| executor | workers x threads | wall s per round (median, min-max) | candidates per "
        "hour | s per candidate inside its worker (median, min-max) | speed-up |",
        "|---|---|---:|---:|---:|---:|",
    ]
    base = statistics.median(w for w, _ in runs["in-process"])
    for name, shape in (("in-process", "1 x 1"), ("ray", f"{workers} x 1")):
        wall, wall_range = median_and_range([w for w, _ in runs[name]], 0)
        inside, inside_range = median_and_range(
            [r.seconds for _, results in runs[name] for r in results.values()], 1
        )
        rows.append(
            f"| {name} | {shape} | {wall:.0f} ({wall_range}) | {candidates / wall * 3600:.0f} "
            f"| {inside:.1f} ({inside_range}) | {base / wall:.2f}x |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1, help="each executor this many times")
    args = parser.parse_args()

    from pipeline.config import load_config
    from pipeline.config_paths import with_absolute_paths
    from pipeline.executor import TrainJob
    from pipeline.run_config import RUN_SECTIONS, RunConfig

    quickstart = load_config(REPO / "configs" / "quickstart.toml", None, RunConfig, RUN_SECTIONS)
    config = with_absolute_paths(quickstart.search_config(), REPO)
    config = dataclasses.replace(config, proxy=dataclasses.replace(config.proxy, threads=1))
    space = config.space.build()
    rng = random.Random(0)
    jobs = [TrainJob(0, i, space.sample(rng).encode()) for i in range(args.candidates)]
    load_before = os.getloadavg()[0]
    task = proxy_task(config)
    runs, startup_s, identical = run_rounds(task, jobs, args.rounds)
    workers = len(os.sched_getaffinity(0))
    rows = table(runs, workers, args.candidates)
    notes = (
        f"The same {args.candidates} random archs of the quickstart space (seed 0), KD proxy "
        f"({len(task.mini_train)} mini-train images, {config.proxy.epochs} epochs, batch "
        f"{config.proxy.batch_size}), {args.rounds} round(s) per executor, alternating which "
        f"goes first. Per-candidate accuracies and losses identical in every run: "
        f"{'yes' if identical else 'NO'}. Ray: a local Ray started by the executor "
        f"({startup_s:.1f} s start-up, not in the wall clock; the first candidate of each worker "
        f"includes importing torch and fetching the task once). 1-min load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (2 cores shared with other "
        "jobs)."
    )
    print("\n".join(rows))
    print(notes)
    command = (
        f"python bench/executor_speed.py --candidates {args.candidates} --rounds {args.rounds}"
    )
    write_section(TITLE, command, "\n".join(rows), notes=notes)


if __name__ == "__main__":
    main()
