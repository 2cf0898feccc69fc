"""GPU check of Pearl's training path (`pipeline.device`): speed, accuracy and the CUDA-only
branches (mixed precision, the fp16 loss scaler, cudnn settings) that the CPU test suite cannot
reach.  One short script, a few minutes on one H100/H200.

Usage, from the repository root of a machine with CUDA:

    PYTHONPATH=. python bench/gpu_check.py [--data .gpu_data/cifar10_small.npz] [--epochs 3]
        [--archs mobilenet_v2_0.5,mnasnet_a1] [--batch-size 256] [--output FILE]

`--data` is cifar10_small.npz or a folder holding it.  It measures, per arch (32 px, 10 classes,
proxy training with `pipeline.proxy.train_candidate`, CE, 5,000 images, `--epochs` epochs):

* candidate images/s (epochs x images / wall seconds of the whole candidate, evaluation
  included) on the CPU (all cores) and on the GPU in fp32, bf16 (the default AMP on a GPU that has
  it) and fp16 with `torch.amp.GradScaler` (forced, to run that branch), and peak GPU memory;
* mini-val accuracy, CPU against GPU for the same seed, with the spread of 3 GPU seeds (noise);
* 1 against 4 candidates sharing the GPU: 4 Python threads, each on its own CUDA stream (the Ray
  executor's variant, several processes per GPU, cannot run here: Ray is not installed);

and checks: host synchronisations per epoch of a GPU candidate (`torch.cuda.set_sync_debug_mode`;
must not grow with the steps), teacher logits computed on the GPU against the CPU (the cache
path), `pipeline.training.train` on the GPU (metrics.json's "device" entry), and
``deterministic = true`` (two runs bit-identical).

Prints markdown tables and writes them to FILE (default ``$OUT/gpu_check.md`` when $OUT is set).
Exit status: 0 all checks passed; 1 a check failed (tables still written); 2 data not found;
3 no CUDA device (nothing measured).

Imports only torch, numpy and Pearl's training code (no click, rich, ray, onnx or LiteRT).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.baselines import resolve_arch  # noqa: E402
from models.teachers import cifar_resnet  # noqa: E402
from pipeline.batches import BatchLoader  # noqa: E402
from pipeline.config import ComputeConfig, ProxyConfig  # noqa: E402
from pipeline.data import load_npz  # noqa: E402
from pipeline.device import placement  # noqa: E402
from pipeline.proxy import CachedTeacher, train_candidate  # noqa: E402
from pipeline.training import TrainSettings, train  # noqa: E402

NO_CUDA_EXIT, NO_DATA_EXIT, FAILED_EXIT = 3, 2, 1
HEAVY_MODULES = ("click", "rich", "ray", "onnx", "onnxruntime", "ai_edge_litert", "tensorflow")
GPU_SEEDS = (0, 1, 2)
SHARED_CANDIDATES = 4


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Speed, accuracy and CUDA-only branches of Pearl's training on one GPU."
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(".gpu_data/cifar10_small.npz"),
        help="cifar10_small.npz, or a folder holding it [default: %(default)s]",
    )
    parser.add_argument(
        "--archs", default="mobilenet_v2_0.5,mnasnet_a1", help="baselines/arch strings"
    )
    parser.add_argument("--epochs", type=int, default=3, help="proxy epochs [default: 3]")
    parser.add_argument("--batch-size", type=int, default=256, help="[default: 256]")
    parser.add_argument("--train-images", type=int, default=5000, help="[default: 5000]")
    parser.add_argument("--val-images", type=int, default=1000, help="[default: 1000]")
    parser.add_argument(
        "--output", type=Path, default=None, help="markdown file [default: $OUT/gpu_check.md]"
    )
    return parser.parse_args(argv)


def cuda_or_exit() -> torch.device:
    if not torch.cuda.is_available():
        why = "torch was built without CUDA" if torch.version.cuda is None else "no GPU visible"
        print(
            f"gpu_check: no CUDA device on this machine ({why}; torch {torch.__version__}); "
            "nothing to measure. Run it on a machine with an NVIDIA GPU.",
            file=sys.stderr,
        )
        sys.exit(NO_CUDA_EXIT)
    return torch.device("cuda", torch.cuda.current_device())


def load_splits(path: Path, train_images: int, val_images: int):
    path = path / "cifar10_small.npz" if path.is_dir() else path
    if not path.is_file():
        print(f"gpu_check: {path} not found; pass --data with cifar10_small.npz", file=sys.stderr)
        sys.exit(NO_DATA_EXIT)
    train_arrays, test_arrays = load_npz(path)
    return (
        train_arrays.take(np.arange(min(train_images, len(train_arrays)))),
        test_arrays.take(np.arange(min(val_images, len(test_arrays)))),
    )


class Bench:
    """The data, settings and device every measurement shares, and the checks' verdicts."""

    def __init__(self, args, device: torch.device):
        self.device = device
        self.mini_train, self.mini_val = load_splits(args.data, args.train_images, args.val_images)
        self.settings = ProxyConfig(
            loss="ce", epochs=args.epochs, batch_size=args.batch_size, lr=0.2
        )
        self.gpu = placement(ComputeConfig(device=str(device)))  # AMP as a run would pick it
        self.failures: list[str] = []

    def check(self, ok: bool, what: str) -> str:
        if not ok:
            self.failures.append(what)
        return "ok" if ok else "FAILED"

    def candidate(self, arch, compute, seed: int = 0, epochs: int | None = None):
        """``(ProxyResult, images/s, peak GPU MiB)`` of one candidate."""
        settings = self.settings if epochs is None else replace(self.settings, epochs=epochs)
        torch.cuda.reset_peak_memory_stats(self.device)
        result = train_candidate(
            arch, self.mini_train, self.mini_val, settings, seed=seed, compute=compute
        )
        images = settings.epochs * len(self.mini_train)
        peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        return result, images / result.seconds, peak_mib


# --------------------------------------------------------------------------------------------
# Measurements


def measure_arch(bench: Bench, name: str, arch) -> tuple[list, list]:
    """One speed row and one accuracy row for `arch`."""
    bench.candidate(arch, ComputeConfig(device="cpu"), epochs=1)  # warm-up: oneDNN primitives
    cpu, cpu_rate, _ = bench.candidate(arch, ComputeConfig(device="cpu"))
    fp32_gpu = replace(bench.gpu, amp_dtype=None)
    fp16_gpu = replace(bench.gpu, amp_dtype=torch.float16)
    for compute in (fp32_gpu, fp16_gpu, bench.gpu):  # warm-up: cudnn autotunes each dtype
        bench.candidate(arch, compute, epochs=1)
    fp32, fp32_rate, _ = bench.candidate(arch, fp32_gpu)
    fp16, fp16_rate, _ = bench.candidate(arch, fp16_gpu)
    runs = [bench.candidate(arch, bench.gpu, seed=seed) for seed in GPU_SEEDS]
    amp_rate = statistics.median(rate for _, rate, _ in runs)
    peak_mib = max(peak for _, _, peak in runs)
    speed = [
        name,
        f"{cpu_rate:,.0f}",
        f"{fp32_rate:,.0f}",
        f"{amp_rate:,.0f} ({bench.gpu.amp_name() or 'fp32'})",
        f"{fp16_rate:,.0f}",
        f"{amp_rate / cpu_rate:.1f}x",
        f"{peak_mib:,.0f}",
    ]
    accuracies = [result.accuracy for result, _, _ in runs]
    spread = max(accuracies) - min(accuracies)
    tolerance = max(0.03, 2 * spread)
    same_seed = runs[0][0].accuracy
    gaps = [abs(gpu - cpu.accuracy) for gpu in (same_seed, fp32.accuracy, fp16.accuracy)]
    verdict = bench.check(
        max(gaps) <= tolerance, f"{name}: GPU accuracy outside the noise of the CPU one"
    )
    accuracy = [
        name,
        f"{100 * cpu.accuracy:.1f}",
        f"{100 * fp32.accuracy:.1f}",
        f"{100 * same_seed:.1f}",
        f"{100 * fp16.accuracy:.1f}",
        f"{100 * min(accuracies):.1f}-{100 * max(accuracies):.1f}",
        f"{100 * tolerance:.1f}",
        verdict,
    ]
    return speed, accuracy


def measure_sharing(bench: Bench, name: str, arch) -> list:
    """1 candidate alone against `SHARED_CANDIDATES` at once, one thread and CUDA stream each."""
    _, alone_rate, alone_peak = bench.candidate(arch, bench.gpu)
    torch.cuda.reset_peak_memory_stats(bench.device)
    errors: list[BaseException] = []

    def one(seed: int) -> None:
        try:
            with torch.cuda.stream(torch.cuda.Stream(bench.device)):
                train_candidate(
                    arch,
                    bench.mini_train,
                    bench.mini_val,
                    bench.settings,
                    seed=seed,
                    compute=bench.gpu,
                )
        except BaseException as error:  # reported below, in the main thread
            errors.append(error)

    threads = [threading.Thread(target=one, args=(s,)) for s in range(SHARED_CANDIDATES)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    torch.cuda.synchronize(bench.device)
    seconds = time.perf_counter() - started
    images = SHARED_CANDIDATES * bench.settings.epochs * len(bench.mini_train)
    shared_rate = images / seconds
    peak_mib = torch.cuda.max_memory_allocated(bench.device) / 2**20
    verdict = bench.check(not errors, f"{name}: shared candidates failed: {errors[:1]}")
    return [
        name,
        f"{alone_rate:,.0f}",
        f"{shared_rate:,.0f}",
        f"{shared_rate / alone_rate:.2f}x",
        f"{alone_peak:,.0f}",
        f"{peak_mib:,.0f}",
        verdict,
    ]


# --------------------------------------------------------------------------------------------
# Checks


def check_syncs(bench: Bench, arch) -> list:
    """Host synchronisations per epoch of a GPU candidate, from the sync debug mode's warnings
    in a 1-epoch and a 3-epoch run (setup syncs cancel out)."""
    counts = {}
    for epochs in (1, 3):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                bench.candidate(arch, bench.gpu, epochs=epochs)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts[epochs] = sum("synchroniz" in str(w.message) for w in caught)
    per_epoch = (counts[3] - counts[1]) / 2
    steps = len(bench.mini_train) // bench.settings.batch_size
    ok = per_epoch < max(2, steps / 2)
    verdict = bench.check(ok, f"{per_epoch:g} host syncs per epoch of {steps} steps")
    return ["host syncs per epoch (bf16 candidate)", f"{per_epoch:g} for {steps} steps", verdict]


def check_teacher_logits(bench: Bench) -> list:
    """Teacher logits (the cache) on the GPU against the CPU: one epoch, resnet20."""
    torch.manual_seed(0)
    teacher = cifar_resnet("resnet20").eval()
    logits = {}
    seconds = {}
    for device in ("cpu", bench.device):
        loader = BatchLoader(
            bench.mini_train, bench.settings.batch_size, train=True, seed=0, device=device
        )
        started = time.perf_counter()
        logits[str(device)] = CachedTeacher.compute(teacher, loader, 1).per_epoch[0]
        seconds[str(device)] = time.perf_counter() - started
    cpu, gpu = logits["cpu"], logits[str(bench.device)]
    relative = ((gpu - cpu).abs().max() / cpu.abs().max()).item()
    verdict = bench.check(relative < 1e-2, f"teacher logits GPU vs CPU differ by {relative:.2g}")
    timing = f"{seconds['cpu']:.1f} s CPU, {seconds[str(bench.device)]:.1f} s GPU"
    return [
        "teacher logits GPU vs CPU (max diff / max logit)",
        f"{relative:.1e}; {timing}",
        verdict,
    ]


def check_full_training(bench: Bench, arch_text: str) -> list:
    """`pipeline.training.train`, one KD epoch with a resnet20 teacher, on the GPU."""
    torch.manual_seed(0)
    teacher = cifar_resnet("resnet20").eval()
    settings = TrainSettings(
        model=arch_text, epochs=1, batch_size=bench.settings.batch_size, loss="kd"
    )
    with tempfile.TemporaryDirectory() as run_dir:
        metrics = train(
            settings,
            bench.mini_train,
            bench.mini_val,
            run_dir,
            teacher=teacher,
            progress=False,
            compute=bench.gpu,
        )
    device = metrics["device"]
    ok = device["device"] == str(bench.device) and device["amp"] == bench.gpu.amp_name()
    verdict = bench.check(ok and metrics["finished"], f"train() on the GPU recorded {device}")
    rate = metrics["train_images_per_s"]
    return ["train() KD epoch on the GPU", f"{rate:,.0f} images/s; device {device}", verdict]


def check_deterministic(bench: Bench, arch) -> list:
    """``deterministic = true``: two GPU runs give the same losses and accuracy."""
    compute = ComputeConfig(device=str(bench.device), deterministic=True)
    try:
        first, _, _ = bench.candidate(arch, compute, epochs=1)
        second, _, _ = bench.candidate(arch, compute, epochs=1)
        same = (first.train_loss_per_epoch, first.accuracy) == (
            second.train_loss_per_epoch,
            second.accuracy,
        )
        losses = (first.train_loss_per_epoch, second.train_loss_per_epoch)
        detail = "identical" if same else f"losses {losses[0]} then {losses[1]}"
    except RuntimeError as error:  # an op without a deterministic kernel
        same, detail = False, str(error).splitlines()[0][:160]
    finally:
        placement(ComputeConfig(device=str(bench.device)))  # back to cudnn.benchmark
    verdict = bench.check(same, f"deterministic runs: {detail}")
    return ["deterministic = true, two runs", detail, verdict]


# --------------------------------------------------------------------------------------------
# Report


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def environment(bench: Bench) -> str:
    heavy = sorted(m for m in HEAVY_MODULES if m in sys.modules)
    return (
        f"GPU: {torch.cuda.get_device_name(bench.device)}; torch {torch.__version__}, CUDA "
        f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; AMP on this GPU: "
        f"{bench.gpu.amp_name() or 'none'}; CPU threads: {torch.get_num_threads()}; "
        f"{len(bench.mini_train)} training / {len(bench.mini_val)} val images, "
        f"{bench.settings.epochs} epochs, batch {bench.settings.batch_size}; heavy modules "
        f"imported: {', '.join(heavy) or 'none'}"
    )


def report(bench: Bench, archs: dict) -> str:
    speed, accuracy, sharing = [], [], []
    for name, arch in archs.items():
        print(f"gpu_check: {name} ...", file=sys.stderr)
        speed_row, accuracy_row = measure_arch(bench, name, arch)
        speed.append(speed_row)
        accuracy.append(accuracy_row)
        sharing.append(measure_sharing(bench, name, arch))
    first_name, first = next(iter(archs.items()))
    print("gpu_check: checks ...", file=sys.stderr)
    checks = [
        check_syncs(bench, first),
        check_teacher_logits(bench),
        check_full_training(bench, first.encode()),
        check_deterministic(bench, first),
    ]
    sections = [
        "# Pearl GPU check",
        environment(bench),
        "## Proxy training, candidate images/s (whole candidate, evaluation included)",
        markdown_table(
            ["arch", "CPU", "GPU fp32", "GPU AMP", "GPU fp16 + scaler", "AMP / CPU", "peak MiB"],
            speed,
        ),
        "## Mini-val top-1 % (seed 0 unless said; tolerance: max(3, 2 x seed spread) points)",
        markdown_table(
            ["arch", "CPU", "GPU fp32", "GPU AMP", "GPU fp16", "GPU AMP seeds 0-2", "tol.", ""],
            accuracy,
        ),
        f"## {SHARED_CANDIDATES} candidates sharing the GPU (threads + CUDA streams; the Ray "
        "variant needs Ray, not installed here), aggregate images/s",
        markdown_table(
            [
                "arch",
                "1 alone",
                f"{SHARED_CANDIDATES} at once",
                "gain",
                "peak MiB alone",
                f"peak MiB x{SHARED_CANDIDATES}",
                "",
            ],
            sharing,
        ),
        f"## Checks ({first_name})",
        markdown_table(["check", "result", ""], checks),
    ]
    return "\n\n".join(sections) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    device = cuda_or_exit()
    bench = Bench(args, device)
    archs = {name: resolve_arch(name, 32, 10) for name in args.archs.split(",") if name}
    started = time.perf_counter()
    text = report(bench, archs)
    text += f"\nTotal {time.perf_counter() - started:.0f} s. "
    text += ("Failed: " + "; ".join(bench.failures)) if bench.failures else "All checks passed."
    print(text)
    output = args.output
    if output is None and os.environ.get("OUT"):
        output = Path(os.environ["OUT"]) / "gpu_check.md"
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
        print(f"gpu_check: written to {output}", file=sys.stderr)
    return FAILED_EXIT if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
