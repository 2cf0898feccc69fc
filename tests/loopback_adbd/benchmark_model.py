"""The loopback device's `benchmark_model`: a host stand-in for TFLite's tool (test double).

It really loads the pushed ``.tflite`` in LiteRT's Interpreter (XNNPACK, ``--num_threads``),
runs the warm-up and the timed phase with the tool's loop rule (at least N runs *and* at least
S seconds, never beyond M seconds) and prints what the real tool prints, in its format: the
``INFO:`` parameter lines, ``Loaded model``, ``Initialized session in X ms.``, one ``Running
benchmark for at least ...`` line and one ``count= first= curr= min= max= avg= std= p5= median=
p95=`` line per phase, the ``Inference timings in us: ...`` summary, a memory line; errors as
``ERROR: ...`` on stderr followed by ``Benchmarking failed.`` and exit status 1.  The statistics
are computed here, independently of pearl's parser, with the tool's arithmetic (integer
microseconds, truncated population std, percentile = sorted[n * p / 100]).

Run by the loopback shell as ``python benchmark_model.py --graph=... ...`` with
$LOOPBACK_SANDBOX / $LOOPBACK_DEVICE_TMP (path mapping) and $LOOPBACK_FAULT (ok, crash,
garbage, hang, load_error).
"""

from __future__ import annotations

import math
import os
import resource
import signal
import sys
import time

KNOWN = {
    "graph": "",
    "num_threads": "-1",
    "warmup_runs": "1",
    "warmup_min_secs": "0.5",
    "num_runs": "50",
    "min_secs": "1",
    "max_secs": "150",
    "use_gpu": "false",
    "use_xnnpack": "true",
    "enable_op_profiling": "false",
}


def info(text: str) -> None:
    print(f"INFO: {text}", flush=True)


def error(text: str) -> None:
    print(f"ERROR: {text}", file=sys.stderr, flush=True)


def fail(text: str) -> int:
    error(text)
    error("Benchmarking failed.")
    return 1


def stat_line(samples_us: list[int], percentiles: bool = True) -> str:
    if not samples_us:
        return "count=0"
    count = len(samples_us)
    ordered = sorted(samples_us)
    p5, p95 = ordered[count * 5 // 100], ordered[count * 95 // 100]
    pct = f" p5={p5} median={ordered[count // 2]} p95={p95}" if percentiles else ""
    if ordered[0] == ordered[-1]:
        return f"count={count} curr={samples_us[-1]}" + ("(all same)" if count > 1 else "") + pct
    avg = sum(samples_us) / count
    variance = int(sum(v * v for v in samples_us) / count - avg * avg)
    std = int(math.sqrt(max(variance, 0)))
    return (
        f"count={count} first={samples_us[0]} curr={samples_us[-1]} min={ordered[0]} "
        f"max={ordered[-1]} avg={avg:.6g} std={std}" + pct
    )


def run_phase(invoke, min_runs: int, min_secs: float, max_secs: float) -> list[int]:
    info(
        f"Running benchmark for at least {min_runs} iterations and at least {min_secs:g} "
        f"seconds but terminate if exceeding {max_secs:g} seconds."
    )
    clock = time.perf_counter_ns
    start = clock()
    min_finish, max_finish = start + int(min_secs * 1e9), start + int(max_secs * 1e9)
    samples: list[int] = []
    now = start
    while (len(samples) < min_runs or now < min_finish) and now <= max_finish:
        began = clock()
        invoke()
        now = clock()
        samples.append((now - began) // 1000)
    info(stat_line(samples))
    print(flush=True)
    return samples


def _work(op, tensors) -> int:
    """A rough operation count of one op: output elements, times the weights per output
    channel for convolutions and fully connected layers."""
    out = tensors[op["outputs"][0]]["shape"]
    elements = 1
    for dim in out:
        elements *= max(int(dim), 1)
    if (
        op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
        and len(op["inputs"]) > 1
    ):
        weights = tensors[op["inputs"][1]]["shape"]
        per_channel = 1
        for dim in weights:
            per_channel *= max(int(dim), 1)
        elements *= max(per_channel // max(int(out[-1]), 1), 1)
    return elements


def print_op_profile(interpreter, timed_us: list[int]) -> None:
    """The regular runs' profile in the tool's newer layout.  TEST DOUBLE: the op list, types
    and names are the model's own (node index = TFLite op index, name = first output tensor,
    as the tool prints them without XNNPACK); the per-op times are the measured average
    inference split by each op's share of `_work`, not a per-op measurement."""
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    works = [_work(op, tensors) for op in ops]
    total_ms = (sum(timed_us) / len(timed_us) / 1000) if timed_us else 0.0
    shares = [w / sum(works) for w in works]
    info("Operator-wise Profiling Info for Regular Benchmark Runs:")
    print("=" * 30 + " Run Order " + "=" * 30)
    header = f"{'[node type]':>48}{'[first]':>17}{'[avg ms]':>16}{'[%]':>15}{'[cdf%]':>16}"
    print(header + f"{'[mem KB]':>18}{'[times called]':>22}  [Name]")
    rows = []
    cdf = 0.0
    for op, share in zip(ops, shares, strict=True):
        cdf += share * 100
        name = tensors[op["outputs"][0]]["name"]
        rows.append(
            (
                share,
                f"{op['op_name']:>48}{total_ms * share:>17.3f}{total_ms * share:>16.3f}"
                f"{share * 100:>14.3f}%{{cdf:>15.3f}}%{0.0:>18.3f}{1:>17}"
                f"       [{name}]:{op['index']}",
            )
        )
        print(rows[-1][1].format(cdf=cdf))
    print()
    print("=" * 30 + " Top by Computation Time " + "=" * 30)
    print(header + f"{'[mem KB]':>18}{'[times called]':>22}  [Name]")
    cdf = 0.0
    for share, row in sorted(rows, key=lambda item: -item[0])[:10]:
        cdf += share * 100
        print(row.format(cdf=cdf))
    print()
    by_type: dict[str, list[float]] = {}
    for op, share in zip(ops, shares, strict=True):
        by_type.setdefault(op["op_name"], []).append(share)
    print(f"Number of nodes executed: {len(ops)}")
    print("=" * 30 + " Summary by node type " + "=" * 30)
    print(
        f"{'[Node type]':>48}{'[count]':>17}{'[avg ms]':>17}{'[avg %]':>17}{'[cdf %]':>16}"
        f"{'[mem KB]':>15}{'[times called]':>22}"
    )
    cdf = 0.0
    for kind, parts in sorted(by_type.items(), key=lambda item: -sum(item[1])):
        cdf += sum(parts) * 100
        print(
            f"{kind:>48}{len(parts):>17}{total_ms * sum(parts):>17.3f}{sum(parts) * 100:>16.3f}%"
            f"{cdf:>15.3f}%{0.0:>15.3f}{len(parts):>17}"
        )
    print()
    print(f"Timings (microseconds): {stat_line(timed_us, percentiles=False)}")
    print("Memory (bytes): count=0")
    print(f"{len(ops)} nodes observed")
    print(flush=True)


def main(argv: list[str]) -> int:
    fault = os.environ.get("LOOPBACK_FAULT", "ok")
    flags = dict(KNOWN)
    unconsumed = []
    for arg in argv:
        name, sep, value = arg.removeprefix("--").partition("=")
        if arg.startswith("--") and sep and name in KNOWN:
            flags[name] = value
        else:
            unconsumed.append(arg)
    info("STARTING!")
    if unconsumed:
        print(f"WARN: Unconsumed cmdline flags: {' '.join(unconsumed)}", flush=True)
    if fault == "garbage":
        print("\x1b[31m#@!? random bytes 0x7f3a\nlorem ipsum count=? (no stats)", flush=True)
        return 0
    threads = int(flags["num_threads"])
    info("Log parameter values verbosely: [0]")
    info(f"Min num runs: [{flags['num_runs']}]")
    info(f"Min runs duration (seconds): [{flags['min_secs']}]")
    info(f"Max runs duration (seconds): [{flags['max_secs']}]")
    info(f"Num threads: [{threads}]")
    info(f"Min warmup runs: [{flags['warmup_runs']}]")
    info(f"Min warmup runs duration (seconds): [{flags['warmup_min_secs']}]")
    graph = flags["graph"]
    info(f"Graph: [{graph}]")
    if flags["use_gpu"] == "true":
        info("Use gpu: [1]")
    profiling = flags["enable_op_profiling"] == "true"
    if profiling:
        info("Enable op profiling: [1]")
    info(f"#threads used for CPU inference: [{threads}]")
    if fault == "hang":
        time.sleep(3600)
        return 0
    if fault == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if not graph:
        return fail("Please specify the name of your TF Lite input file with --graph")
    device_tmp = os.environ["LOOPBACK_DEVICE_TMP"]
    host_path = graph
    if graph.startswith(device_tmp + "/"):
        host_path = os.path.join(os.environ["LOOPBACK_SANDBOX"], graph[len(device_tmp) + 1 :])
    if not os.path.isfile(host_path):
        return fail(f"Could not open '{graph}'.")
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    started = time.perf_counter_ns()  # Init: model load + interpreter build, as the tool's
    try:
        if fault == "load_error":
            raise ValueError("bad flatbuffer")
        resolver = {}
        if flags["use_xnnpack"] == "false":
            from ai_edge_litert.interpreter import OpResolverType

            resolver["experimental_op_resolver_type"] = (
                OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
        interpreter = Interpreter(model_path=host_path, num_threads=max(threads, 1), **resolver)
    except ValueError:
        error("The model is not a valid Flatbuffer buffer")
        return fail(f"Failed to mmap model {graph}")
    info(f"Loaded model {graph}")
    if flags["use_gpu"] == "true":
        error("GPU acceleration is not available on the loopback device.")
        return fail("Failed to apply GPU delegate.")
    if flags["use_xnnpack"] != "false":
        info("Created TensorFlow Lite XNNPACK delegate for CPU.")
    info(f"The input model file size (MB): {os.path.getsize(host_path) / 1e6:.6g}")
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(
            detail["index"], rng.standard_normal(detail["shape"]).astype(detail["dtype"])
        )
    init_us = (time.perf_counter_ns() - started) // 1000
    info(f"Initialized session in {init_us / 1000:.6g}ms.")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    warmup = run_phase(
        interpreter.invoke,
        int(flags["warmup_runs"]),
        float(flags["warmup_min_secs"]),
        float(flags["max_secs"]),
    )
    timed = run_phase(
        interpreter.invoke,
        int(flags["num_runs"]),
        float(flags["min_secs"]),
        float(flags["max_secs"]),
    )
    warm_avg = sum(warmup) / len(warmup) if warmup else 0.0
    timed_avg = sum(timed) / len(timed) if timed else 0.0
    info(
        f"Inference timings in us: Init: {init_us}, First inference: "
        f"{warmup[0] if warmup else 0}, Warmup (avg): {warm_avg:.6g}, "
        f"Inference (avg): {timed_avg:.6g}"
    )
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info(
        "Memory footprint delta from the start of the tool (MB): "
        f"init={rss_before:.6g} overall={rss_after:.6g}"
    )
    if profiling:
        print_op_profile(interpreter, timed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
