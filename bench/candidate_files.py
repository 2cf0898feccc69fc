"""Seconds per latency-only candidate file: litert-torch conversion vs the direct writer, and
the timing ratio of the two files on host:tflite.

Usage: python bench/candidate_files.py [--n 20] [--seed 0] [--space mnas-cifar]

The same `--n` random archs of the space (seeded) are made both ways, one arch at a time:

- litert-torch: `models.export.latency_artifact` into an empty cache (build the module, convert,
  check, write the bundle), in this process after one unmeasured warm-up conversion;
- direct: `device_bench.direct_files.write_direct` (write_network + atomic write), and the fp16
  and int8 files derived from it (`direct_bytes`; int8 without calibration).

Every pair is compared op by op (`graph_differences`), then both files are timed on host:tflite
side by side (`HostTFLiteBackend`, alternating which goes first); the ratio is of min_ms
(the ranking statistic).  Reports medians and min-max, and the load average.
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
from _report import median_and_range, publish, seconds_rows  # noqa: E402

from device_bench.direct_files import direct_bytes, graph_differences, write_direct  # noqa: E402
from device_bench.host import HostTFLiteBackend  # noqa: E402
from models.export import latency_artifact  # noqa: E402
from models.space import get_space  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--space", default="mnas-cifar")
    parser.add_argument(
        "--from-index", type=int, default=0, help="skip the first archs (a run cut short)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    space = get_space(args.space)
    rng = random.Random(args.seed)
    archs = [space.sample(rng) for _ in range(args.n)][args.from_index :]
    load_before = os.getloadavg()
    seconds = {"litert": [], "direct": [], "direct-fp16": [], "direct-int8": []}
    ratios, mismatches = [], []
    backend = HostTFLiteBackend()
    with tempfile.TemporaryDirectory() as tmp:
        latency_artifact(space.sample(random.Random(-1)), "tflite", Path(tmp) / "warm")
        for i, arch in enumerate(archs, start=args.from_index):
            started = time.perf_counter()
            real = latency_artifact(arch, "tflite", Path(tmp) / "litert")
            seconds["litert"].append(time.perf_counter() - started)
            started = time.perf_counter()
            direct = write_direct(Path(tmp) / "direct", arch, "tflite")
            seconds["direct"].append(time.perf_counter() - started)
            for fmt in ("tflite-fp16", "tflite-int8"):
                started = time.perf_counter()
                direct_bytes(arch, fmt)
                seconds[f"direct-{fmt[7:]}"].append(time.perf_counter() - started)
            differences = graph_differences(direct.read_bytes(), real.read_bytes())
            if differences:
                mismatches.append((arch.encode(), differences))
            pair = [direct, real] if i % 2 == 0 else [real, direct]
            timed = {path: backend.measure(path).min_ms for path in pair}
            ratios.append(timed[direct] / timed[real])
            print(
                f"{i}: litert {seconds['litert'][-1]:.2f} s, direct {seconds['direct'][-1]:.3f} s,"
                f" ratio {ratios[-1]:.3f}, {'MISMATCH' if differences else 'same graph'}",
                flush=True,
            )
    load_after = os.getloadavg()

    names = {
        "litert": "fp32, litert-torch (`latency_artifact`, warm process)",
        "direct": "fp32, direct (`write_direct`)",
        "direct-fp16": "fp16, direct + ai-edge-quantizer",
        "direct-int8": "int8, direct + ai-edge-quantizer (fixed ranges, no calibration)",
    }
    rows = seconds_rows("file", seconds, names)
    speedup = statistics.median(seconds["litert"]) / statistics.median(seconds["direct"])
    ratio, ratio_spread = median_and_range(ratios, 3)
    within = sum(abs(r - 1) <= 0.05 for r in ratios) / len(ratios)
    rows.append(
        f"| host:tflite min_ms, direct / litert file (timed side by side) | ratio {ratio:.3f} "
        f"| {ratio_spread} | {len(ratios)} |"
    )
    table = "\n".join(rows)
    notes = (
        f"{len(archs)} random `{args.space}` archs (seed {args.seed}, numbers "
        f"{args.from_index}-{args.n - 1}), the same archs both ways. "
        f"Direct is {speedup:.0f}x faster per fp32 file (ratio of medians); "
        f"graphs identical op by op (ops, tensor shapes and types, options) for "
        f"{len(archs) - len(mismatches)} of {len(archs)}"
        + (f" (mismatches: {[m[0] for m in mismatches]})" if mismatches else "")
        + f". Timing ratio within +-5% for {within:.0%} of archs (both files measured one after "
        "the other in this process, order alternating; the default `MeasureSettings`, 1 thread). "
        f"Goal: <= 0.5 s per candidate latency file. 1-min load average {load_before[0]:.1f} "
        f"before, {load_after[0]:.1f} after (2 cores shared with other jobs: absolute seconds "
        "are under load; the ratios were measured side by side in the same run)."
    )
    publish(
        "Candidate latency files: litert-torch vs direct", table, notes, write=not args.no_write
    )


if __name__ == "__main__":
    main()
