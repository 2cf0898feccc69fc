"""Seconds per int8 latency file without calibration (fixed ranges) vs calibrated, and the
timing ratio of the two files on host:tflite.

Usage: python bench/int8_files.py [--n 10] [--seed 0] [--space mnas-cifar]

The same `--n` random archs of the space (seeded), each made both ways from the same direct
fp32 graph (`layer_writer.write_network`):

- fast: `device_bench.direct_files.direct_bytes(arch, "tflite-int8")` (write_network +
  `quantize_int8_for_timing`: every activation range fixed, no calibration interpreter);
- calibrated: write_network + `quantize_int8` on the 8 seeded N(0, 1) images latency-only
  int8 files were calibrated on before (`models.export.cache.latency_calibration`).

Every pair is compared op by op (`graph_differences`), then both files are timed on host:tflite
side by side (`HostTFLiteBackend`, alternating which goes first); the ratio is of min_ms (the
ranking statistic).  Reports medians and min-max, and the load average.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import median_and_range, publish, seconds_rows  # noqa: E402

from device_bench.direct_files import direct_bytes, graph_differences  # noqa: E402
from device_bench.host import HostTFLiteBackend  # noqa: E402
from device_bench.layer_writer import write_network  # noqa: E402
from models.export import tflite  # noqa: E402
from models.export.cache import LATENCY_CALIBRATION_IMAGES, latency_calibration  # noqa: E402
from models.space import get_space  # noqa: E402

NAMES = {  # the two ways, as the table names them
    "fast": "fixed ranges, no calibration (`direct_bytes`, what the search now times)",
    "calibrated": "calibrated on 8 seeded images (`quantize_int8`, before)",
}


def calibrated_bytes(arch) -> bytes:
    fp32 = write_network(arch)
    return tflite.quantize_int8(fp32, latency_calibration(arch, LATENCY_CALIBRATION_IMAGES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--space", default="mnas-cifar")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    space = get_space(args.space)
    rng = random.Random(args.seed)
    archs = [space.sample(rng) for _ in range(args.n)]
    makers = {
        "fast": lambda arch: direct_bytes(arch, "tflite-int8"),
        "calibrated": calibrated_bytes,
    }
    makers["fast"](space.sample(random.Random(-1)))  # imports and first-call set-up, unmeasured
    load_before = os.getloadavg()
    seconds = {name: [] for name in makers}
    ratios, mismatches = [], []
    backend = HostTFLiteBackend()
    with tempfile.TemporaryDirectory() as tmp:
        for i, arch in enumerate(archs):
            paths = {}
            order = list(makers) if i % 2 == 0 else list(reversed(makers))
            for name in order:
                started = time.perf_counter()
                data = makers[name](arch)
                seconds[name].append(time.perf_counter() - started)
                paths[name] = Path(tmp) / f"{i}-{name}.tflite"
                paths[name].write_bytes(data)
            differences = graph_differences(
                paths["fast"].read_bytes(), paths["calibrated"].read_bytes()
            )
            if differences:
                mismatches.append((arch.encode(), differences))
            timed = {name: backend.measure(paths[name]).min_ms for name in order}
            ratios.append(timed["fast"] / timed["calibrated"])
            print(
                f"{i}: fast {seconds['fast'][-1]:.3f} s, calibrated "
                f"{seconds['calibrated'][-1]:.3f} s, min_ms {timed['fast']:.3f} vs "
                f"{timed['calibrated']:.3f} (ratio {ratios[-1]:.3f}), "
                f"{'MISMATCH' if differences else 'same graph'}",
                flush=True,
            )
    load_after = os.getloadavg()

    rows = seconds_rows("int8 latency file", seconds, NAMES)
    ratio, ratio_spread = median_and_range(ratios, 3)
    rows.append(
        f"| host:tflite min_ms, fast / calibrated file (side by side) | ratio {ratio:.3f} "
        f"| {ratio_spread} | {len(ratios)} |"
    )
    within = sum(abs(r - 1) <= 0.05 for r in ratios) / len(ratios)
    notes = (
        f"{len(archs)} random `{args.space}` archs (seed {args.seed}), both files made from the "
        "same direct fp32 graph (seconds include `write_network`). Graphs identical op by op "
        f"(ops, tensor shapes and types, options) for {len(archs) - len(mismatches)} of "
        f"{len(archs)}"
        + (f" (mismatches: {[m[0] for m in mismatches]})" if mismatches else "")
        + f". Timing ratio within +-5% for {within:.0%} of archs (both files timed one after "
        "the other in this process, order alternating; default `MeasureSettings`, 1 thread). "
        "Goal (issue 19): <= 0.5 s per latency file. 1-min load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after, on {os.cpu_count()} cores "
        "shared with other jobs (absolute seconds follow the load; the ratios are side by side)."
    )
    publish(
        "Fast int8 latency files: fixed ranges vs calibrated", "\n".join(rows), notes,
        write=not args.no_write,
    )  # fmt: skip


if __name__ == "__main__":
    main()
