"""Accuracy of `pearl tables adapt` against the number N of networks measured on the device.

Source: a shipped table (default the 32 px one).  On this machine (host:tflite), with the table
protocol (shuffled passes of fresh processes, the reference network, fast-mode values), time a
fit pool of networks (seed 2024, the adapt default) and a held-out set (another seed), then for
each N fit on the first N of the pool and score on the held-out set; also score the source
table as it is and a single common scale + offset fitted on the same N (what the per-group
scales must beat).  Networks are the direct writer's graphs (identical to litert exports, op
for op; seconds instead of minutes each).

    python bench/table_adapt.py --work-dir /tmp/adapt --held-out 40 --pool 30

`--precision int8` adapts the (fp32) source to another device with its own op profile: int8
files on this machine (`pearl tables adapt --precision int8`), timed as the direct writer's fast
int8 files; `--rebuilt TABLE` adds a row for a full build of that precision (e.g. the shipped
int8 table) scored on the same held-out networks.  Each row says what it costs: the adapt rows
the time of the N networks (their share of this run's file making and measuring) plus the
fit, the rebuild its header's ``build_seconds``.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._report import write_section  # noqa: E402
from device_bench.table_adapt import fit_scales, group_sums  # noqa: E402
from device_bench.table_build import (  # noqa: E402
    mode_values,
    network_files,
    reference_network,
    sample_archs,
    space_from_header,
)
from device_bench.table_measure import NETWORK_SETTINGS  # noqa: E402
from device_bench.table_runs import MeasureRun  # noqa: E402
from latency_tables.identity import PRECISIONS  # noqa: E402
from latency_tables.table import LatencyTable, fit_correction  # noqa: E402

TITLE = "Latency table few-shot adaptation (host:tflite)"


def scores(predicted: list[float], measured: list[float]) -> dict:
    errors = [abs(p / m - 1) for p, m in zip(predicted, measured, strict=True)]
    return {
        "within_5": sum(e <= 0.05 for e in errors) / len(errors),
        "within_10": sum(e <= 0.10 for e in errors) / len(errors),
        "rmspe": math.sqrt(sum(e * e for e in errors) / len(errors)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default="latency_tables/host_tflite_mnas-cifar_32.csv")
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--pool", type=int, default=30)
    parser.add_argument("--held-out", type=int, default=40)
    parser.add_argument("--held-out-seed", type=int, default=77)
    parser.add_argument("--ns", default="5,10,20,30")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="time the networks as files of this precision (default: the source table's)",
    )
    parser.add_argument(
        "--rebuilt", type=Path, default=None, help="a full build of the target to compare"
    )
    parser.add_argument("--write", action="store_true", help="write BENCHMARKS.md")
    args = parser.parse_args()

    source = LatencyTable.load(ROOT / args.table)
    precision = args.precision or source.precision
    space = space_from_header(source.space)
    pool = sample_archs(space, args.pool, 2024)
    held = sample_archs(space, args.held_out, args.held_out_seed)
    cache = args.work_dir / "cache"
    _, reference = reference_network(space, cache)
    started = time.perf_counter()
    nets = network_files(pool + held, cache, lambda _n: None, "direct", precision)
    files_s = time.perf_counter() - started
    same = precision == source.precision
    state = args.work_dir / ("adapt.state.json" if same else f"adapt-{precision}.state.json")
    run = MeasureRun(state, "this-machine", {"table": args.table, "precision": precision})
    load_before = os.getloadavg()[0]
    run.measure(
        "host:tflite", [(nets, NETWORK_SETTINGS)], 3, batch=50, reference=reference,
        max_passes=5,
    )  # fmt: skip
    # what N networks of an adaptation cost: their share of the files and the measuring
    per_network_s = (files_s + run.state["seconds"]) / len(nets)
    values, modes = mode_values(run, list(nets))
    pool_ms = [values[a.encode()] for a in pool]
    held_ms = [values[a.encode()] for a in held]
    pool_sums = [group_sums(source, a) for a in pool]
    held_sums = [group_sums(source, a) for a in held]

    as_is = scores([source.predict_ms(a) for a in held], held_ms)
    rows = [("source table as is", "-", as_is, "-")]
    for n in (int(v) for v in args.ns.split(",")):
        if n > len(pool):
            continue
        common = fit_correction([sum(s.values()) for s in pool_sums[:n]], pool_ms[:n])
        one_scale = [common.apply(sum(s.values())) for s in held_sums]
        rows.append(("one scale + offset", n, scores(one_scale, held_ms), ""))
        started = time.perf_counter()
        fit = fit_scales(pool_sums[:n], pool_ms[:n])
        cost = f"{n * per_network_s + time.perf_counter() - started:.0f} s"
        rows.append(("per-group scales (adapt)", n,
                     scores([fit.predict_ms(s) for s in held_sums], held_ms), cost))  # fmt: skip
    if args.rebuilt is not None:
        rebuilt = LatencyTable.load(args.rebuilt)
        rebuilt.check_precision(precision, "--precision")
        rows.append((f"full rebuild (`{args.rebuilt.name}`)", "all layers",
                     scores([rebuilt.predict_ms(a) for a in held], held_ms),
                     f"{rebuilt.header['build_seconds']:.0f} s (build_seconds)"))  # fmt: skip
    loads = run.state["load"]
    lines = [
        "| model | N fitted | within +-5% | within +-10% | RMSPE | cost |",
        "|---|---|---|---|---|---|",
    ]
    for name, n, s, cost in rows:
        lines.append(
            f"| {name} | {n} | {s['within_5']:.0%} | {s['within_10']:.0%} | {s['rmspe']:.1%} "
            f"| {cost} |"
        )
    table_md = "\n".join(lines)
    print(table_md)
    slow = "none" if modes["slow_ms"] is None else f"{modes['slow_ms']:.3f} ms"
    load = statistics.median(loads)
    cores = os.cpu_count() or 1
    target = (
        f"{precision} files (direct writer"
        + (
            ", int8 quantised with fixed ranges: op for op the calibrated files"
            if precision == "int8"
            else ""
        )
        + ")"
    )
    notes = (
        f"Source: `{args.table}` ({source.precision} files; built on an AMD EPYC VM, 1 thread, "
        f"XNNPACK). Device: host:tflite on this machine ({source.fingerprint.get('cpu')} class, "
        f"{cores} cores), timing {target}. "
        f"Held-out: {args.held_out} networks (seed {args.held_out_seed}); fit pool: seed 2024. "
        f"Speed modes (reference network): fast {modes['fast_ms']:.3f} ms, slow {slow}, "
        f"{modes['fast_share']:.0%} of {modes['batches']} batches fast, "
        f"{modes['normalised_entries']} networks normalised from slow batches. "
        "Fit pool and held-out networks are timed in the same run, so a proportional "
        "slowdown of this machine (load, speed mode) is absorbed by the fit: the gain over "
        "'source table as is' is partly that"
        + ("" if args.rebuilt is None else ", and the full rebuild (built earlier) does not get it")
        + ". Adapt cost: N x the run's seconds per network (making its file + its share of the "
        f"measuring, {per_network_s:.1f} s) + the fit. "
        f"Load: 1-min load average {load_before:.2f} when the measuring started, median "
        f"{load:.2f} over batches on {cores} cores"
        + (
            " (more runnable jobs than cores: a loaded machine, not the target conditions)."
            if load > cores + 0.5
            else " (the measurement plus at most one other single-threaded job)."
        )
    )
    print(notes)
    if args.write:
        command = "python bench/table_adapt.py " + " ".join(sys.argv[1:])
        title = TITLE if same else TITLE.replace("(", f"to {precision} files vs a full rebuild (")
        write_section(title, command, table_md, notes=notes)


if __name__ == "__main__":
    main()
