"""What the phone path costs per candidate beyond the timed runs, measured through the loopback
ADB device (tests/loopback_adbd), and how stably min_ms vs median_ms rank candidates.

Usage: python bench/phone_overhead.py [--candidates 6] [--repeats 4]

Part 1 (overhead): one session, then per candidate: push the new model (hash check, push,
hash check), read the temperatures, run benchmark_model (taskset, 1 thread, 5 warm-up runs,
50 timed runs), parse its output, and finally remove the models.  Each phase is timed with
perf_counter; the run's wall time is split into the tool's own timed runs (count x avg),
its init + warm-up, and the rest (process start, transport).  Connect (with RSA auth) and the
probe are timed on fresh connections.  Loopback TCP replaces USB/Wi-Fi, so push speed and
round-trip times here are lower bounds for a real phone; the rest is pearl's own cost.

Part 2 (ranking): `--candidates` models of different widths, each measured `--repeats` times
through AdbBackend (interleaved: all models, then again), comparing for min_ms and median_ms
the run-to-run spread per model and how often repeated measurements order a pair of models
differently.  Written to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402


def make_models(folder: Path, count: int) -> list[Path]:
    import torch
    from loopback_adbd import conv_net_tflite

    torch.manual_seed(0)
    widths = [16 + 4 * index for index in range(count)]  # neighbours differ by ~20-40%
    return [conv_net_tflite(folder / f"cand{i}_w{w}.tflite", w, 32) for i, w in enumerate(widths)]


def timed(call):
    start = time.perf_counter()
    value = call()
    return value, (time.perf_counter() - start) * 1000


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} | {min(values):.2f} - {max(values):.2f}"


def overhead(device, binary: Path, models: list[Path]) -> tuple[str, str]:
    from android_runner.benchmark_output import parse_benchmark_output
    from android_runner.connection import AdbConnection
    from android_runner.probe import probe_device
    from android_runner.runner import PhoneSession, RunOptions

    connect_ms, probe_ms = [], []
    for _ in range(5):
        connection, elapsed = timed(lambda: AdbConnection(device.spec).connect())
        connect_ms.append(elapsed)
        probe_ms.append(timed(lambda c=connection: probe_device(c))[1])
        connection.close()
    options = RunOptions(warmup_runs=5, warmup_min_secs=0, num_runs=50, min_secs=0, max_secs=150)
    phases: dict[str, list[float]] = {
        k: []
        for k in (
            "push new model",
            "hash check, model already there",
            "temperature read",
            "run: tool's timed runs",
            "run: tool's init + warm-up",
            "run: rest (process start, transport)",
            "parse output",
        )
    }
    sizes = []
    with PhoneSession(device.spec, binary) as session:
        _, binary_ms = timed(session.ensure_binary)
        for path in models:
            remote, push_ms = timed(lambda p=path: session.push_model(p))
            phases["push new model"].append(push_ms)
            sizes.append(path.stat().st_size)
            phases["hash check, model already there"].append(
                timed(lambda p=path: session.push_model(p))[1]
            )
            phases["temperature read"].append(timed(session.temperature_c)[1])
            argv = session.benchmark_argv(remote, options)
            result, wall_ms = timed(lambda a=argv: session.connection.run(a, timeout_s=120))
            parsed, parse_ms = timed(lambda r=result: parse_benchmark_output(r.output))
            run_ms = parsed.inference.count * parsed.inference.avg_ms
            warm_ms = parsed.init_ms + (
                parsed.warmup.count * parsed.warmup.avg_ms if parsed.warmup else 0.0
            )
            phases["run: tool's timed runs"].append(run_ms)
            phases["run: tool's init + warm-up"].append(warm_ms)
            phases["run: rest (process start, transport)"].append(wall_ms - run_ms - warm_ms)
            phases["parse output"].append(parse_ms)
        _, cleanup_ms = timed(session.cleanup)
    rows = [
        "| phase | per | median ms | min - max ms |",
        "|---|---|---|---|",
        f"| connect (TCP + CNXN + RSA auth) | session | {fmt(connect_ms)} |",
        f"| probe (getprop, cpuinfo, cpufreq, thermal) | session | {fmt(probe_ms)} |",
        f"| push benchmark_model (hash check + push) | session | {binary_ms:.2f} | - |",
    ]
    for name, values in phases.items():
        rows.append(f"| {name} | candidate | {fmt(values)} |")
    rows.append(f"| cleanup (rm models) | session | {cleanup_ms:.2f} | - |")
    pearl_ms = [
        sum(v)
        for v in zip(
            phases["push new model"],
            phases["temperature read"],
            phases["parse output"],
            strict=True,
        )
    ]
    note = (
        f"{len(models)} candidates, .tflite files of {min(sizes) / 1e3:.1f}-"
        f"{max(sizes) / 1e3:.1f} kB, benchmark_model with 5 warm-up and 50 timed runs, 1 thread. "
        f"pearl's own per-candidate cost (push + temperature read + parse) is "
        f"{statistics.median(pearl_ms):.1f} ms median; connect + probe "
        f"({statistics.median(connect_ms) + statistics.median(probe_ms):.1f} ms) is paid once "
        "per phone session. 'run: rest' is the loopback's stand-in starting a Python process and "
        "importing LiteRT (hundreds of ms); a native benchmark_model on a phone starts in tens "
        "of ms, so on a phone the per-candidate overhead is dominated by the tool's own init + "
        "warm-up and by push time over USB/Wi-Fi (size / link speed). This benchmark found two "
        "costs that are now fixed: every shell command took ~44 ms (adb-shell writes a packet "
        "as header + payload, and Nagle's algorithm waited for the peer's delayed ACK; pearl's "
        "TCP transport now sets TCP_NODELAY) and every connect ~85-130 ms (parsing the RSA key; "
        "now loaded once per process): probe 48 -> ~3 ms, hash check 44 -> ~1 ms, connect "
        "134 -> ~1.4 ms."
    )
    return "\n".join(rows), note


def kendall_disagreements(runs: list[list[float]]) -> float:
    """Fraction of (model pair, repeat pair) combinations whose order differs."""
    models = range(len(runs[0]))
    disagree = total = 0
    for a, b in itertools.combinations(range(len(runs)), 2):
        for i, j in itertools.combinations(models, 2):
            total += 1
            if (runs[a][i] - runs[a][j]) * (runs[b][i] - runs[b][j]) < 0:
                disagree += 1
    return disagree / total if total else 0.0


def ranking(device, binary: Path, models: list[Path], repeats: int) -> tuple[str, str]:
    from android_runner.runner import RunOptions
    from device_bench.phone import AdbBackend, PhoneSettings

    run = RunOptions(warmup_runs=5, warmup_min_secs=0, num_runs=50, min_secs=0.2)
    settings = PhoneSettings(run, min_invocations=1, max_invocations=1)
    results: dict[str, list[list[float]]] = {"median_ms": [], "min_ms": []}
    with AdbBackend(device.spec, settings, benchmark_model=binary) as backend:
        for repeat in range(repeats):
            order = models if repeat % 2 == 0 else list(reversed(models))
            measured = {path: backend.measure(path) for path in order}
            for stat in results:
                results[stat].append([getattr(measured[p], stat) for p in models])
            print(f"repeat {repeat + 1}/{repeats} done", file=sys.stderr)
    rows = [
        "| statistic | median run-to-run spread per model | max | pair orders that flip |",
        "|---|---|---|---|",
    ]
    for stat, runs in results.items():
        spreads = []
        for index in range(len(models)):
            values = [run[index] for run in runs]
            spreads.append((max(values) - min(values)) / statistics.median(values))
        rows.append(
            f"| {stat} | {statistics.median(spreads):.1%} | {max(spreads):.1%} "
            f"| {kendall_disagreements(runs):.1%} |"
        )
    medians = [
        statistics.median(run[i] for run in results["median_ms"]) for i in range(len(models))
    ]
    note = (
        f"{len(models)} conv nets (widths 16-{16 + 4 * (len(models) - 1)}, median latencies "
        f"{min(medians):.3f}-{max(medians):.3f} ms) measured {repeats} times each through "
        "AdbBackend on the loopback device (one benchmark_model run of >= 50 timed invokes "
        "and >= 0.2 s per measurement), repeats interleaved in alternating order. Decision "
        "(device_bench/ranking.py): measured candidates rank by min_ms, whose run-to-run "
        "spread is lower here and in 'Host latency run-to-run spread' (2.5% / 1.5% vs 14.9% / "
        "25.6% for the median); at these 20-40% latency gaps both give the same order, the "
        "spread decides for closer candidates. Tables rank by their predicted median."
    )
    return "\n".join(rows), note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    from loopback_adbd import LoopbackDevice, fake_aarch64_binary

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["PEARL_ADB_KEY"] = str(folder / "keys" / "adbkey")
        binary = folder / "benchmark_model"
        fake_aarch64_binary(binary)
        print("converting candidate models ...", file=sys.stderr)
        models = make_models(folder, args.candidates)
        with LoopbackDevice(folder / "sandbox") as device:
            table1, note1 = overhead(device, binary, models)
            print(table1)
            table2, note2 = ranking(device, binary, models, args.repeats)
            print(table2)
    load_after = os.getloadavg()
    load = f"Load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f}."
    command = (
        f"python bench/phone_overhead.py --candidates {args.candidates} --repeats {args.repeats}"
    )
    write_section(
        "Phone path overhead per candidate (loopback ADB device)",
        command,
        table1,
        notes=f"{note1} {load}",
    )
    write_section(
        "Ranking statistic: min_ms vs median_ms (loopback ADB device)",
        command,
        table2,
        notes=f"{note2} {load}",
    )


if __name__ == "__main__":
    main()
