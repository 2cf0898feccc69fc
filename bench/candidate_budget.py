"""Where a quickstart candidate's seconds go, and which part bounds candidates per hour.

Usage: python bench/candidate_budget.py [--candidates 3] [--gpu-speedup 100]

Runs a real `pearl search` of `configs/quickstart.toml` (empty caches in a temporary folder,
`--candidates` candidates, one generation when it equals search.batch_size) and times each part
where it happens: data (loading the splits) and teacher logits (filling the cache) once per
search; per candidate: proxy training (the stored `train_seconds`), latency files (direct
writes and litert-torch conversions, `GuardedExporter`), timing (`measure_cached` on
host:tflite), results store (`ResultsStore.insert` / `update`) and controller (`propose` +
`update`).  The instruments wrap the real calls of the running search; nothing is replaced.

Candidates per hour at W workers: training runs in the workers (W at a time); direct latency
files, timing, store and controller run in the driver one candidate at a time; guard
conversions run in the background converter process: ``min(W * 3600 / training,
3600 / driver, 3600 / converter)``.  The GPU-sized row is an ESTIMATE: training divided by
`--gpu-speedup` (no GPU was used), everything else as measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import publish  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def instrument(obj, name: str, label: str, seconds: dict, calls: dict) -> None:
    """Add the wall time of every call of `obj.name` to `seconds[label]`."""
    original = getattr(obj, name)

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds[label] += time.perf_counter() - started
            calls[label] += 1

    setattr(obj, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--gpu-speedup", type=float, default=100.0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    import device_bench.cache
    from pipeline.config import load_config
    from pipeline.run_config import RUN_SECTIONS, RunConfig
    from pipeline.search import Search
    from pipeline.search_setup import build_setup, load_splits, proxy_teacher
    from pipeline.store import ResultsStore

    seconds: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = {
            "teacher": {"cache_dir": f"{tmp}/teacher_logits"},
            "latency": {"export_cache_dir": f"{tmp}/artifacts", "measurement_cache": "none"},
            "search": {"max_candidates": str(args.candidates), "max_hours": "0"},
        }
        quickstart = REPO / "configs" / "quickstart.toml"
        config = load_config(quickstart, overrides, RunConfig, RUN_SECTIONS)
        started = time.perf_counter()
        mini_train, _ = load_splits(config)
        per_search = {"data (load and split)": time.perf_counter() - started}
        started = time.perf_counter()
        proxy_teacher(config, mini_train)
        per_search["teacher logits (fill the cache)"] = time.perf_counter() - started
        started = time.perf_counter()
        setup = build_setup(config, log=print)
        per_search["set-up (data again, cached logits, converter, backend)"] = (
            time.perf_counter() - started
        )
        exporter = setup.chain.exporter
        instrument(exporter, "_write", "latency file, direct", seconds, calls)
        instrument(exporter, "_convert", "latency file, litert-torch (guard)", seconds, calls)
        instrument(device_bench.cache, "measure_cached", "timing (host:tflite)", seconds, calls)
        try:
            search = Search(config, Path(tmp) / "run", setup, resume=False, show_progress=False)
            for name in ("insert", "update"):
                instrument(search.store, name, "results store", seconds, calls)
            for name in ("propose", "update"):
                instrument(search.method.controller, name, "controller", seconds, calls)
            started = time.perf_counter()
            search.run()
            search_wall = time.perf_counter() - started
            search.finish()
        finally:
            setup.close()
        with ResultsStore(Path(tmp) / "run" / "results.sqlite") as store:
            rows = store.candidates()
    load_after = os.getloadavg()

    n = len(rows)
    train = sum(r.train_seconds or 0.0 for r in rows) / n
    driver_parts = ("latency file, direct", "timing (host:tflite)", "results store", "controller")
    per_candidate = {label: seconds[label] / n for label in driver_parts}
    driver = sum(per_candidate.values())
    guard = "latency file, litert-torch (guard)"
    conversions = calls[guard]
    per_conversion = seconds[guard] / conversions if conversions else 0.0
    every = config.latency.direct_check_every
    converter = per_conversion / every  # a long search: one conversion per `every` archs

    lines = ["| part | where | s per search | s per candidate |", "|---|---|---:|---:|"]
    for label, value in per_search.items():
        lines.append(f"| {label} | driver, once | {value:.2f} | {value / n:.2f} (/{n}) |")
    lines.append(f"| proxy training | worker | | {train:.2f} |")
    for label, value in per_candidate.items():
        lines.append(f"| {label} | driver | | {value:.3f} |")
    lines.append(
        f"| {guard}: {conversions} conversion(s), {per_conversion:.1f} s each | converter "
        f"process | {seconds[guard]:.1f} | {converter:.2f} (1/{every} of a conversion) |"
    )
    lines.append(f"| whole search loop, wall | | {search_wall:.1f} | {search_wall / n:.2f} |")
    lines += [
        "",
        "| setting | training s | driver s | converter s | candidates/h at 1 / 2 / 16 "
        "workers | bound by |",
        "|---|---:|---:|---:|---|---|",
    ]
    settings = {
        "quickstart, CPU (measured)": train,
        f"GPU-sized (ESTIMATE: training / {args.gpu_speedup:g})": train / args.gpu_speedup,
    }
    for name, train_s in settings.items():
        rates, bounds = [], []
        for workers in (1, 2, 16):
            limits = {
                "training": workers * 3600 / train_s,
                "driver": 3600 / driver,
                "converter": 3600 / converter if converter else float("inf"),
            }
            bound = min(limits, key=limits.get)
            rates.append(limits[bound])
            bounds.append(bound)
        lines.append(
            f"| {name} | {train_s:.2f} | {driver:.2f} | {converter:.2f} | "
            + " / ".join(f"{r:,.0f}" for r in rates)
            + f" | {' / '.join(bounds)} |"
        )
    table = "\n".join(lines)
    biggest = max(per_candidate, key=per_candidate.get)
    notes = (
        f"`configs/quickstart.toml` (KD proxy, 2 epochs on 1,000 images, batch 32, 1 thread; "
        f"host:tflite with direct latency files, guard every {every}th arch and every "
        f"contender), {n} candidates, empty caches. Training runs in the workers (W at a "
        "time); direct writes, timing, store and controller in the driver, one candidate at a "
        "time (the largest: "
        f"{biggest}); guard conversions in the background converter process (one core), "
        f"counted at 1/{every} of a measured conversion per candidate (a long search; this "
        f"short one converted {conversions} time(s): the first arch and the contenders). "
        "Data and teacher logits are paid once per search. The GPU row divides the measured "
        "training time by the factor shown and keeps every other part as measured here: an "
        "ESTIMATE, no GPU was used; teacher logits on a GPU would shrink too (once per search). "
        f"1-min load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (2 cores "
        "shared with other jobs: absolute seconds are under load, several times a quiet "
        "machine's)."
    )
    publish("Throughput budget: one quickstart candidate", table, notes, write=not args.no_write)


if __name__ == "__main__":
    main()
