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
}


def info(text: str) -> None:
    print(f"INFO: {text}", flush=True)


def error(text: str) -> None:
    print(f"ERROR: {text}", file=sys.stderr, flush=True)


def fail(text: str) -> int:
    error(text)
    error("Benchmarking failed.")
    return 1


def stat_line(samples_us: list[int]) -> str:
    if not samples_us:
        return "count=0"
    count = len(samples_us)
    ordered = sorted(samples_us)
    p5, p95 = ordered[count * 5 // 100], ordered[count * 95 // 100]
    pct = f" p5={p5} median={ordered[count // 2]} p95={p95}"
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
        interpreter = Interpreter(model_path=host_path, num_threads=max(threads, 1))
    except ValueError:
        error("The model is not a valid Flatbuffer buffer")
        return fail(f"Failed to mmap model {graph}")
    info(f"Loaded model {graph}")
    if flags["use_gpu"] == "true":
        error("GPU acceleration is not available on the loopback device.")
        return fail("Failed to apply GPU delegate.")
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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
