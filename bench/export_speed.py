"""How long exporting one candidate takes, per format, cold and warm, and what each speed-up buys.

Usage: python bench/export_speed.py [--n 8] [--cold 3] [--ab 4] [--data PATH.npz] [--no-write]

* cold: a fresh worker process per model without warm-up (what a one-shot `pearl export` pays):
  process start + imports, then the first model.
* warm: one `ExportWorker` (imports and a tiny warm-up conversion once), then `--n` random
  mnas-cifar archs (32 px) and mobilenet_v2 at 224 px, every format.  The first `--cold` archs
  are the same ones the cold runs export.
* BN folding: fp32 TFLite conversion of `--ab` archs with and without folding BatchNorm into
  the convs first (in this process, alternating).
* cache: `latency_artifact` miss, hit, and an int8 file derived from the cached fp32 file.

Real images from cifar10_small: 300 training images calibrate int8, 32 test images check parity.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

from models.baselines import baseline  # noqa: E402
from models.export import ExportOptions, ExportWorker  # noqa: E402
from models.normalisation import CIFAR10_MEAN, CIFAR10_STD  # noqa: E402
from models.space import get_space  # noqa: E402
from pipeline.data import default_data_dir, load_npz  # noqa: E402

TITLE = "Export: seconds per model and format"
FORMATS = ("tflite", "tflite-fp16", "tflite-int8", "onnx")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def export_one(worker, arch, out, data, formats=FORMATS) -> dict[str, float]:
    """Seconds per format (from the metadata) and for the whole bundle (wall clock)."""
    train, test = data
    start = time.perf_counter()
    meta = worker.export_bundle(
        arch,
        out,
        options=ExportOptions(formats=formats, overwrite=True),
        parity_images=test.images[:32],
        calibration_images=train.images[:300],
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )
    seconds = {fmt: meta["files"][fmt]["export_seconds"] for fmt in formats}
    seconds["bundle"] = time.perf_counter() - start
    seconds["checks"] = seconds["bundle"] - sum(seconds[f] for f in formats)
    return seconds


def bn_folding_ab(archs) -> dict[str, list[float]]:
    import litert_torch

    from models.builder import build
    from models.export import prepare, tflite

    litert_torch.config.show_progress = False
    fold = prepare.fold_batch_norms
    times: dict[str, list[float]] = {"folded": [], "not folded": [], "first": []}
    start = time.perf_counter()
    tflite.convert_fp32(build(archs[0]).eval(), archs[0].input_size)  # first-call set-up
    times["first"].append(time.perf_counter() - start)
    for arch in archs:
        model = build(arch).eval()
        for label, folding in (("not folded", lambda m: m), ("folded", fold)):
            prepare.fold_batch_norms = folding
            try:
                start = time.perf_counter()
                tflite.convert_fp32(model, arch.input_size)
                times[label].append(time.perf_counter() - start)
            finally:
                prepare.fold_batch_norms = fold
        log(
            f"BN A/B {arch.key()}: folded {times['folded'][-1]:.1f} s, "
            f"not folded {times['not folded'][-1]:.1f} s"
        )
    return times


def row(scenario: str, what: str, values: list[float]) -> str:
    median = statistics.median(values)
    spread = f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else "-"
    return f"| {scenario} | {what} | {median:.2f} | {spread} | {len(values)} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="random 32 px archs exported warm")
    parser.add_argument("--cold", type=int, default=3, help="models exported cold")
    parser.add_argument("--ab", type=int, default=4, help="archs in the BN-folding A/B")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    data = load_npz(args.data or default_data_dir() / "cifar10_small.npz")
    space = get_space("mnas-cifar")
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(max(args.n, args.cold, args.ab))]
    scratch = Path(tempfile.mkdtemp(prefix="pearl-export-bench-"))
    rows = ["| scenario | what | median s | min-max s | n |", "|---|---|---:|---:|---:|"]
    try:
        cold_start, cold_runs = [], []
        for index in range(args.cold):
            worker = ExportWorker(warm_up=False)
            cold_start.append(worker.start())
            cold_runs.append(export_one(worker, archs[index], scratch / f"cold{index}", data))
            worker.close()
            log(f"cold {index}: start {cold_start[-1]:.1f} s, {cold_runs[-1]}")

        worker = ExportWorker(warm_up=True)
        warm_start = worker.start()
        log(f"warm worker ready in {warm_start:.1f} s")
        warm_runs = []
        for index in range(args.n):
            warm_runs.append(export_one(worker, archs[index], scratch / f"warm{index}", data))
            log(f"warm {index}: {warm_runs[-1]}")
        big = [
            export_one(worker, baseline("mobilenet_v2", 224, 1000), scratch / f"mbv2_{i}", data)
            for i in range(2)
        ]
        log(f"mobilenet_v2 224: {big}")

        cache = scratch / "cache"
        miss = time.perf_counter()
        worker.latency_artifact(archs[0], "tflite", cache)
        miss = time.perf_counter() - miss
        hits = []
        for _ in range(5):
            start = time.perf_counter()
            worker.latency_artifact(archs[0], "tflite", cache)
            hits.append(time.perf_counter() - start)
        derived = time.perf_counter()
        worker.latency_artifact(archs[0], "tflite-int8", cache)
        derived = time.perf_counter() - derived
        worker.close()

        ab = bn_folding_ab(archs[: args.ab])

        rows.append(row("cold (new process, first model)", "process start + imports", cold_start))
        for what in (*FORMATS, "checks", "bundle"):
            rows.append(row("cold (new process, first model)", what, [r[what] for r in cold_runs]))
        rows.append(
            row(
                "cold (new process, first model)",
                "start to bundle written",
                [s + r["bundle"] for s, r in zip(cold_start, cold_runs, strict=True)],
            )
        )
        rows.append(row("warm worker", "start + imports + warm-up conversion", [warm_start]))
        for what in (*FORMATS, "checks", "bundle"):
            rows.append(
                row(f"warm, {args.n} random 32 px archs", what, [r[what] for r in warm_runs])
            )
        same = [r["bundle"] for r in warm_runs[: args.cold]]
        rows.append(row(f"warm, the {args.cold} cold archs", "bundle", same))
        for what in (*FORMATS, "checks", "bundle"):
            rows.append(row("warm, mobilenet_v2 224 px", what, [r[what] for r in big]))
        rows.append(row("fp32 TFLite conversion, first in this process", "arch 0", ab["first"]))
        rows.append(row("fp32 TFLite conversion, same arch again", "arch 0", ab["folded"][:1]))
        for label in ("folded", "not folded"):
            rows.append(row(f"fp32 TFLite conversion, BN {label}", f"{args.ab} archs", ab[label]))
        rows.append(row("latency cache (`latency_artifact`)", "miss: fp32 export", [miss]))
        rows.append(row("latency cache (`latency_artifact`)", "hit", hits))
        rows.append(
            row("latency cache (`latency_artifact`)", "int8 derived from cached fp32", [derived])
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    table = "\n".join(rows)
    print(table)
    folded, plain = statistics.median(ab["folded"]), statistics.median(ab["not folded"])
    notes = (
        "Per-format seconds are the conversion/quantisation of that file (fp16 and int8 are "
        "derived from the fp32 flatbuffer, so the shared litert-torch conversion is counted in "
        "`tflite`); `checks` = PyTorch reference, parity runs on 32 real CIFAR images for every "
        "file, delegation report and writing; `bundle` = wall clock of the whole request. "
        "int8 = calibration on 300 real images + quantisation. "
        f"BN folding: median {plain:.1f} s -> {folded:.1f} s per conversion. "
        "The warm worker saves the process start + imports and the first-conversion set-up "
        "(compare the two `arch 0` rows) on every model after the first; per-model numbers of "
        "the cold and warm runs otherwise overlap within this machine's run-to-run noise. "
        "Archs are random mnas-cifar samples (seed 0), 2 torch threads, interleaving only "
        "within the BN A/B; the machine is shared with other jobs, so spreads are wide."
    )
    if not args.no_write:
        command = f"python bench/export_speed.py --n {args.n} --cold {args.cold} --ab {args.ab}"
        write_section(TITLE, command, table, notes=notes)


if __name__ == "__main__":
    main()
