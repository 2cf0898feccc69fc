"""Accuracy of `pearl tables adapt` against the number N of networks measured on the device.

Source: a shipped table (default the 32 px one).  On this machine (host:tflite), with the table
protocol (shuffled passes of fresh processes, the reference network, fast-mode values), time a
fit pool of networks (seed 2024, the adapt default) and a held-out set (another seed), then for
each N fit on the first N of the pool and score on the held-out set: the source table as it
is, a single common scale + offset fitted on the same N (the baseline), and the table each
adapt model (`--model groups`, `--model layers`) makes from the same N networks.  Networks are
the direct writer's graphs (identical to litert exports, op for op; seconds instead of minutes
each).

    python bench/table_adapt.py --work-dir /tmp/adapt --held-out 40 --pool 30

`--precision int8` adapts the (fp32) source to another device with its own op profile: int8
files on this machine (`pearl tables adapt --precision int8`), timed as the direct writer's fast
int8 files; `--rebuilt TABLE` adds a row for a full build of that precision (e.g. the shipped
int8 table) scored on the same held-out networks.  Each row says what it costs: the adapt rows
the time of the N networks (their share of this run's file making and measuring) plus the
fit, the rebuild its header's ``build_seconds``.

`--offline TABLE` times nothing: the "measured" latency of every network is TABLE's prediction
(a full build of the target, e.g. the shipped int8 table, within +-5% of real int8 files for
all its validation networks), so the models can be compared on a loaded machine and on many
draws (`--pool-seeds 2024,1,2`: scores are the mean over fit pools drawn with these seeds);
`--noise 0.03` multiplies each latency by 1 + a Gaussian of that sd (measurement noise).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._report import write_section  # noqa: E402
from device_bench.adapt_model import AUTO, MODELS, AdaptError, fit_best  # noqa: E402
from device_bench.host import cpu_model_name  # noqa: E402
from device_bench.table_adapt import adapted_table  # noqa: E402
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
OFFLINE_TITLE = (
    "Latency table few-shot adaptation, simulated from tables ({source} to {target}, "
    "pools {pools}, held-out {held} seed {seed}, noise {noise:.0%})"
)
MODEL_ROWS = {"groups": "per-group scales (`--model groups`)",
              "layers": "per-layer model (`--model layers`)",
              AUTO: "lower leave-one-out error (`--model auto`, default)"}  # fmt: skip


def scores(predicted: list[float], measured: list[float]) -> dict:
    errors = [abs(p / m - 1) for p, m in zip(predicted, measured, strict=True)]
    return {
        "within_5": sum(e <= 0.05 for e in errors) / len(errors),
        "within_10": sum(e <= 0.10 for e in errors) / len(errors),
        "rmspe": math.sqrt(sum(e * e for e in errors) / len(errors)),
    }


def mean_scores(many: list[dict]) -> dict:
    return {k: statistics.fmean(s[k] for s in many) for k in many[0]}


def model_rows(source, pools, held, ms, ns, per_network_s=None) -> list[tuple]:
    """Rows (name, N, scores, cost) for the baseline and each adapt model fitted on the first
    N networks of each pool (scores averaged over pools), the adapted *table* scored on `held`;
    `ms`: the measured ms of every network by its encoding."""
    held_ms = [ms[a.encode()] for a in held]
    rows = []
    for n in ns:
        if n > min(len(pool) for pool in pools):
            continue
        fits = [pool[:n] for pool in pools]
        baseline = []
        for fit_archs in fits:
            common = fit_correction([source.sum_ms(a) for a in fit_archs],
                                    [ms[a.encode()] for a in fit_archs])  # fmt: skip
            baseline.append(scores([common.apply(source.sum_ms(a)) for a in held], held_ms))
        rows.append(("one scale + offset", n, mean_scores(baseline), ""))
        for name in (*MODELS, AUTO):
            names = tuple(MODELS) if name == AUTO else (name,)
            started, results, chosen = time.perf_counter(), [], []
            for fit_archs in fits:
                try:
                    fit, _ = fit_best(source, fit_archs, [ms[a.encode()] for a in fit_archs], names)
                except AdaptError:
                    break
                chosen.append(fit.model.name)
                table = adapted_table(source, fit, {})
                results.append(scores([table.predict_ms(a) for a in held], held_ms))
            if not results:
                rows.append(
                    (MODEL_ROWS[name], n, None, "refused: fewer networks than coefficients")
                )
                continue
            fit_s = (time.perf_counter() - started) / len(fits)
            cost = "-" if per_network_s is None else f"{n * per_network_s + fit_s:.0f} s"
            label = MODEL_ROWS[name]
            if name == AUTO:
                label += ": chose " + ", ".join(
                    f"{c} {chosen.count(c)}x" for c in sorted(set(chosen))
                )
            rows.append((label, n, mean_scores(results), cost))
    return rows


def markdown(rows) -> str:
    lines = [
        "| model | N fitted | within +-5% | within +-10% | RMSPE | cost |",
        "|---|---|---|---|---|---|",
    ]
    for name, n, s, cost in rows:
        if s is None:
            lines.append(f"| {name} | {n} | - | - | - | {cost} |")
            continue
        lines.append(
            f"| {name} | {n} | {s['within_5']:.0%} | {s['within_10']:.0%} | {s['rmspe']:.1%} "
            f"| {cost} |"
        )
    return "\n".join(lines)


def offline(args, source, space) -> None:
    """Every network's latency from the `--offline` table: no timing."""
    target = LatencyTable.load(args.offline)
    seeds = [int(v) for v in args.pool_seeds.split(",")]
    pools = [sample_archs(space, args.pool, seed) for seed in seeds]
    held = sample_archs(space, args.held_out, args.held_out_seed)
    rng = random.Random(args.noise_seed)
    ms = {  # the same network keeps its latency (and its noise) in every pool
        a.encode(): target.predict_ms(a) * (1 + rng.gauss(0, args.noise))
        for a in [*held, *(a for p in pools for a in p)]
    }
    as_is = scores([source.predict_ms(a) for a in held], [ms[a.encode()] for a in held])
    rows = [("source table as is", "-", as_is, "-"),
            *model_rows(source, pools, held, ms, [int(v) for v in args.ns.split(",")])]  # fmt: skip
    table_md = markdown(rows)
    print(table_md)
    load = os.getloadavg()[0]
    notes = (
        f'**Simulated from tables, nothing timed**: the "measured" latency of each network is '
        f"`{args.offline}`'s prediction ({target.precision} files; a full build of the target "
        f"device)"
        + (
            f" times a Gaussian measurement noise of {args.noise:.1%} (relative sd, seed "
            f"{args.noise_seed})"
            if args.noise
            else ""
        )  # fmt: skip
        + f". Source: `{args.table}` ({source.precision}). Held-out: {args.held_out} "
        f"networks (seed {args.held_out_seed}); fit pools of {args.pool} networks, seeds "
        f"{args.pool_seeds} (each N fits the first N of a pool; scores are the mean over the "
        f"pools). Each adapt row scores the table `pearl tables adapt --model NAME` writes from "
        f"those N networks. 1-min load average {load:.2f} (irrelevant: no timing)."
    )
    print(notes)
    if args.write:
        command = "python bench/table_adapt.py " + " ".join(sys.argv[1:])
        title = OFFLINE_TITLE.format(
            source=Path(args.table).name, target=args.offline.name, pools=args.pool_seeds,
            held=args.held_out, seed=args.held_out_seed, noise=args.noise,
        )  # fmt: skip
        write_section(title, command, table_md, notes=notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default="latency_tables/host_tflite_mnas-cifar_32.csv")
    parser.add_argument("--work-dir", type=Path, help="measuring runs: cache and state")
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
    parser.add_argument(
        "--offline", type=Path, default=None,
        help="time nothing: take every network's latency from this table (a full build of the "
        "target)",
    )  # fmt: skip
    parser.add_argument("--pool-seeds", default="2024", help="--offline: fit pools' seeds")
    parser.add_argument(
        "--noise",
        type=float,
        default=0.0,
        help="--offline: relative sd of a Gaussian noise on each latency",
    )
    parser.add_argument("--noise-seed", type=int, default=0)  # fmt: skip
    parser.add_argument("--write", action="store_true", help="write BENCHMARKS.md")
    args = parser.parse_args()

    source = LatencyTable.load(ROOT / args.table)
    precision = args.precision or source.precision
    space = space_from_header(source.space)
    if args.offline is not None:
        offline(args, source, space)
        return
    if args.work_dir is None:
        parser.error("--work-dir is needed to time networks (or use --offline TABLE)")
    if args.pool_seeds != "2024" or args.noise:
        parser.error("--pool-seeds and --noise go with --offline (a real run times one pool)")
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

    as_is = scores([source.predict_ms(a) for a in held], [values[a.encode()] for a in held])
    rows = [("source table as is", "-", as_is, "-"),
            *model_rows(source, [pool], held, values, [int(v) for v in args.ns.split(",")],
                        per_network_s)]  # fmt: skip
    held_ms = [values[a.encode()] for a in held]
    if args.rebuilt is not None:
        rebuilt = LatencyTable.load(args.rebuilt)
        rebuilt.check_precision(precision, "--precision")
        rows.append((f"full rebuild (`{args.rebuilt.name}`)", "all layers",
                     scores([rebuilt.predict_ms(a) for a in held], held_ms),
                     f"{rebuilt.header['build_seconds']:.0f} s (build_seconds)"))  # fmt: skip
    loads = run.state["load"]
    table_md = markdown(rows)
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
        f"Source: `{args.table}` ({source.precision} files; built on "
        f"{source.fingerprint.get('cpu')}, 1 thread, XNNPACK). Device: host:tflite on this "
        f"machine ({cpu_model_name()}, {cores} cores), timing {target}. "
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
