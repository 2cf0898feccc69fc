"""Search speed at the quickstart settings: KD vs CE candidate cost with the on-disk teacher-logit
cache, and whole-search throughput (candidates per hour, training + export + timing).

Usage: python bench/search_speed.py [--archs 3] [--candidates 8] [--teacher SPEC]
       [--skip-search | --skip-cost]

Part 1 trains the same random quickstart-space archs with cross-entropy and with KD whose
teacher logits come from the disk cache (`pipeline.teacher_cache`, read once like a search does),
interleaved arch by arch.  Part 2 runs `configs/quickstart.toml` as `pearl search` does (fresh
run folder, fresh latency caches so every candidate is exported and timed) and reports the wall
clock and candidates per hour.  Both record the load average; the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def kd_vs_ce(config, archs: int) -> tuple[list[str], str]:
    import dataclasses

    import torch

    from pipeline.proxy import train_candidate
    from pipeline.search_setup import load_splits, proxy_teacher

    torch.set_num_threads(config.proxy.threads or os.cpu_count())
    mini_train, mini_val = load_splits(config)
    settings = dataclasses.replace(config.proxy, loss="kd")
    ce = dataclasses.replace(settings, loss="ce")
    with tempfile.TemporaryDirectory() as cache_dir:
        config = dataclasses.replace(
            config, teacher=dataclasses.replace(config.teacher, cache_dir=cache_dir)
        )
        started = time.perf_counter()
        proxy_teacher(config, mini_train)
        fill_s = time.perf_counter() - started
        started = time.perf_counter()
        teacher, path, hit = proxy_teacher(config, mini_train)
        load_s = time.perf_counter() - started
        size_mb = path.stat().st_size / 1e6
        assert hit
    space = config.space.build()
    rng = random.Random(1)
    seconds: dict[str, list[float]] = {"ce": [], "kd (disk cache)": []}
    ratios = []
    load = [os.getloadavg()[0]]
    for index in range(archs):
        arch = space.sample(rng)
        pair = {}
        for name, mode in (("ce", ce), ("kd (disk cache)", settings)):
            result = train_candidate(
                arch, mini_train, mini_val, mode, teacher, seed=config.search.seed
            )
            pair[name] = result.seconds
            seconds[name].append(result.seconds)
            print(f"arch {index} {name}: {result.seconds:.1f} s", file=sys.stderr)
        ratios.append(pair["kd (disk cache)"] / pair["ce"])
        load.append(os.getloadavg()[0])
    rows = [
        "| mode | median s per candidate | min-max s | median ratio to ce (per arch) |",
        "|---|---:|---:|---:|",
    ]
    for name, values in seconds.items():
        ratio = "1.00x" if name == "ce" else f"{statistics.median(ratios):.2f}x"
        rows.append(
            f"| {name} | {statistics.median(values):.1f} | {min(values):.1f}-{max(values):.1f} "
            f"| {ratio} |"
        )
    notes = (
        f"{archs} random archs of the quickstart space, each trained once per mode, modes "
        f"interleaved per arch; {len(mini_train)} mini-train images, {settings.epochs} epochs, "
        f"batch {settings.batch_size}, {config.proxy.threads or os.cpu_count()} torch thread(s). "
        f"Per-arch kd/ce ratios: {', '.join(f'{r:.2f}' for r in ratios)}. Teacher "
        f"`{config.teacher.spec}`: filling the disk cache cost {fill_s:.1f} s once "
        f"({size_mb:.1f} MB), reading it back {load_s:.2f} s (a search reads it once). "
        f"1-min load average {min(load):.1f}-{max(load):.1f} during the runs (2 cores shared "
        "with other jobs). Issue target: kd <= 1.15x ce."
    )
    return rows, notes


def quickstart_throughput(config, candidates: int) -> tuple[list[str], str]:
    import dataclasses

    from pipeline.search import Search, build_setup
    from pipeline.store import ResultsStore

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        config = dataclasses.replace(
            config,
            search=dataclasses.replace(config.search, max_candidates=candidates, max_hours=0.0),
            latency=dataclasses.replace(
                config.latency,
                export_cache_dir=str(scratch / "exports"),
                measurement_cache=str(scratch / "measurements.sqlite"),
            ),
        )
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        setup = build_setup(config, log=lambda m: print(m, file=sys.stderr))
        setup_s = time.perf_counter() - started
        try:
            search = Search(config, scratch / "run", setup, resume=False, show_progress=True)
            summary = search.run()
        finally:
            setup.close()
        wall_s = time.perf_counter() - started
        with ResultsStore(scratch / "run" / "results.sqlite") as store:
            rows = store.candidates()
    train = [r.train_seconds for r in rows if r.train_seconds]
    latency = [r.latency_seconds for r in rows if r.latency_seconds is not None]
    per_hour = len(rows) / wall_s * 3600
    table = [
        "| what | value |",
        "|---|---:|",
        f"| candidates | {len(rows)} |",
        f"| wall clock, start to report written | {wall_s:.0f} s |",
        f"| of which set-up (data, teacher logits, backends) | {setup_s:.0f} s |",
        f"| candidates per hour (whole search) | {per_hour:.0f} |",
        f"| median training s per candidate | {statistics.median(train):.1f} |",
        f"| median latency s per candidate after training (export wait + timing) | "
        f"{statistics.median(latency):.1f} |",
    ]
    best = summary["best_arch"] or {}
    notes = (
        f"`configs/quickstart.toml` ({config.search.batch_size} candidates per generation, "
        f"{len(rows)} candidates, latency `{', '.join(config.latency.backends)}` with empty "
        f"export and measurement caches: every candidate is converted to .tflite in the "
        f"background converter process and timed). Teacher `{config.teacher.spec}`. Best arch: "
        f"accuracy {100 * best.get('accuracy', 0):.1f}%, {best.get('latency_ms') or 0:.3f} ms. "
        f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after."
    )
    return table, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--teacher", default=None, help="teacher spec (default: the config's)")
    parser.add_argument("--skip-search", action="store_true", help="only part 1")
    parser.add_argument("--skip-cost", action="store_true", help="only part 2")
    args = parser.parse_args()

    from pipeline.config import load_config
    from pipeline.config_paths import with_absolute_paths

    overrides = {"teacher": {"spec": args.teacher}} if args.teacher else {}
    config = with_absolute_paths(load_config(REPO / "configs" / "quickstart.toml", overrides), REPO)
    command = f"python bench/search_speed.py --archs {args.archs} --candidates {args.candidates}"
    if args.teacher:
        command += f" --teacher {args.teacher}"
    if not args.skip_cost:
        rows, notes = kd_vs_ce(config, args.archs)
        print("\n".join(rows))
        write_section(
            "Search: KD vs CE candidate cost with the disk cache",
            command + " --skip-search",
            "\n".join(rows),
            notes=notes,
        )
    if not args.skip_search:
        table, notes = quickstart_throughput(config, args.candidates)
        print("\n".join(table))
        write_section(
            "Search: quickstart throughput", command + " --skip-cost", "\n".join(table), notes=notes
        )


if __name__ == "__main__":
    main()
