"""Where a quickstart candidate's seconds go, and which part bounds candidates per hour.

Usage: python bench/candidate_budget.py [--candidates 3] [--gpu-speedup 100]

Runs a real `pearl search` of `configs/quickstart.toml` (empty caches in a temporary folder,
`--candidates` candidates, one generation when it equals search.batch_size) and times each part
where it happens: data (loading the splits) and teacher logits (filling the cache) once per
search; per candidate: proxy training (the stored `train_seconds`), latency files (direct
writes and litert-torch conversions, `GuardedExporter`), timing (`measure_cached` on
host:tflite), results store (`ResultsStore.insert` / `update`) and controller (`propose` +
`update`).  The instruments wrap the real calls of the running search; nothing is replaced.

Candidates per hour at W workers: training runs in the workers (W at a time); latency files,
timing, store and controller run in the driver one candidate at a time, so
``min(W * 3600 / training, 3600 / driver)``.  The GPU-sized column is an ESTIMATE: training
divided by `--gpu-speedup` (no GPU was used), everything else as measured.
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
    per_candidate = {"proxy training": sum(r.train_seconds or 0.0 for r in rows) / n}
    for label in (
        "latency file, direct",
        "latency file, litert-torch (guard)",
        "timing (host:tflite)",
        "results store",
        "controller",
    ):
        per_candidate[label] = seconds[label] / n
    driver = sum(v for k, v in per_candidate.items() if k != "proxy training")
    train = per_candidate["proxy training"]
    gpu_train = train / args.gpu_speedup

    lines = ["| part | where | s per search | s per candidate (measured) |", "|---|---|---:|---:|"]
    for label, value in per_search.items():
        lines.append(f"| {label} | driver, once | {value:.2f} | {value / n:.2f} (/{n}) |")
    for label, value in per_candidate.items():
        where = "worker" if label == "proxy training" else "driver"
        lines.append(f"| {label} | {where} | | {value:.3f} |")
    lines.append(f"| whole search loop, wall | | {search_wall:.1f} | {search_wall / n:.2f} |")
    lines += [
        "",
        "| setting | training s | driver s per candidate | candidates/h at 1 / 2 / 16 workers "
        "| bound by |",
        "|---|---:|---:|---|---|",
    ]
    settings = {
        "quickstart, CPU (measured)": train,
        f"GPU-sized (ESTIMATE: training / {args.gpu_speedup:g})": gpu_train,
    }
    for name, train_s in settings.items():
        rates = [min(w * 3600 / train_s, 3600 / driver) for w in (1, 2, 16)]
        bound = ["training" if w * 3600 / train_s < 3600 / driver else "driver" for w in (1, 2, 16)]
        lines.append(
            f"| {name} | {train_s:.2f} | {driver:.2f} | "
            + " / ".join(f"{r:,.0f}" for r in rates)
            + f" | {' / '.join(bound)} |"
        )
    table = "\n".join(lines)
    biggest = max((k for k in per_candidate if k != "proxy training"), key=per_candidate.get)
    notes = (
        f"`configs/quickstart.toml` (KD proxy, 2 epochs on 1,000 images, batch 32, 1 thread; "
        f"host:tflite with direct latency files, guard every "
        f"{config.latency.direct_check_every}th arch), {n} candidates, empty caches. Driver "
        f"parts per candidate: {', '.join(f'{k} {v:.3f} s' for k, v in per_candidate.items())}"
        f"; the largest driver part is {biggest}. "
        "The first candidate is always checked by the guard (one litert-torch conversion), so "
        f"with {n} candidates the guard's cost per candidate is 1/{n} of a conversion; over a "
        f"long search it is 1/{config.latency.direct_check_every} (plus the contenders). "
        "Data and teacher logits are paid once per search. The GPU row divides the measured "
        "training time by the factor shown and keeps every driver part as measured here: an "
        "estimate, no GPU was used; teacher logits on a GPU would shrink too (once per search). "
        f"1-min load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (2 cores "
        "shared with other jobs: absolute seconds are under load)."
    )
    publish("Throughput budget: one quickstart candidate", table, notes, write=not args.no_write)


if __name__ == "__main__":
    main()
