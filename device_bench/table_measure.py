"""The measurement protocol of latency tables: passes of fresh processes over shuffled files.

On a shared machine the speed drifts in stretches of seconds, so one long timing of each file
in turn mixes that drift into the table.  Instead every file is timed briefly, many times:

* a *pass* times every file once, in a shuffled order (seeded by the pass number), in batches,
  each batch in a fresh Python process (`python -m device_bench.measure_worker`), so no file is
  always timed right after the same neighbour or always early in a warm process;
* the passes are repeated (3 by default) and combined per file: the fastest invoke over all
  passes (``min_ms``, the statistic tables predict from), the median of the pass medians, and
  the spread of the per-pass minima (recorded per row).

Clock: on ``host:tflite`` each invoke is timed with the CPU time of the invoking thread
(``CLOCK_THREAD_CPUTIME_ID``), not wall time.  With one runtime thread XNNPACK computes on the
caller's thread, so on an idle machine the two agree; on a shared machine wall time adds every
moment the process waits for a core, thread CPU time does not (BENCHMARKS.md, "Latency table
accuracy (host:tflite)").  Other backends (phones) use their own wall-clock timing
(`LatencyBackend.measure`).

A batch process reads ``{"spec", "settings", "paths"}`` as JSON on stdin and prints the
device's fingerprint (``{"fingerprint"}``), then one JSON line per file
(``{"path", "measurement", "load"}`` or ``{"path", "error"}``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from device_bench.host import MeasureSettings
from device_bench.measurement import Measurement, MeasurementError, relative_spread

# Short timings per visit: the protocol gets its robustness from repeated visits, not length.
LAYER_SETTINGS = MeasureSettings(
    warmup_runs=3,
    min_runs=10,
    max_runs=200,
    min_seconds=0.01,
    max_seconds=0.5,
    round_size=5,
    window_rounds=2,
    spread_target=0.05,
)
# whole networks: the same visits, a little longer and a tighter spread
NETWORK_SETTINGS = dataclasses.replace(
    LAYER_SETTINGS, min_seconds=0.05, max_seconds=2.0, spread_target=0.03
)
HOST_CLOCK = "thread_cpu"  # how host:tflite invokes are timed (see the module docstring)
DEFAULT_PASSES = 3
DEFAULT_BATCH = 200


def run_batch(
    spec: str,
    settings: MeasureSettings,
    paths: Sequence[str],
    on_result: Callable[[str, Measurement | None, str], None],
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Time `paths` in one fresh process; `on_result(path, measurement, error)` per file.
    Returns the fingerprint of the device that timed them (also for an empty `paths`)."""
    request = json.dumps({"spec": spec, "settings": settings.to_dict(), "paths": list(paths)})
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(
        [sys.executable, "-m", "device_bench.measure_worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(request)
    process.stdin.close()
    seen = set()
    fingerprint: dict[str, Any] | None = None
    for line in process.stdout:
        if not line.startswith("{"):
            continue
        result = json.loads(line)
        if "fingerprint" in result:
            fingerprint = result["fingerprint"]
            continue
        seen.add(result["path"])
        if "error" in result:
            on_result(result["path"], None, result["error"])
        else:
            on_result(result["path"], Measurement.from_dict(result["measurement"]), "")
    code = process.wait(timeout=timeout_s)
    stderr = process.stderr.read() if process.stderr else ""
    if code != 0 or len(seen) != len(paths) or fingerprint is None:
        tail = "\n".join(stderr.strip().splitlines()[-10:])
        raise MeasurementError(
            f"measurement process for {spec} exited with code {code} after {len(seen)} of "
            f"{len(paths)} files; its last output:\n{tail}"
        )
    return fingerprint


def combine(passes: Sequence[Measurement]) -> dict:
    """One table entry (as `latency_tables.table.Entry` fields) from per-pass measurements."""
    if not passes:
        raise ValueError("no passes to combine")
    minima = [m.min_ms for m in passes]
    return {  # rounded to 1 ns / 0.01%: beyond the timer's meaning, and shorter files
        "min_ms": round(min(minima), 6),
        "median_ms": round(statistics.median(m.median_ms for m in passes), 6),
        "p90_ms": round(statistics.median(m.p90_ms for m in passes), 6),
        "std_ms": round(statistics.median(m.std_ms for m in passes), 6),
        "runs": sum(m.runs for m in passes),
        "passes": len(passes),
        "pass_spread": round(relative_spread(minima), 4),
    }
