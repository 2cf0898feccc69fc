"""Does torch.compile speed up a CPU training step?  Eager vs compiled, side by side.

Usage: python bench/train_compile.py [--steps 8] [--threads 1] [--write]

The same student as `bench/train_speed.py` (mobilenet_v2_0.5 at 32 px, CIFAR-10 classes, batch
128, channels-last, SGD with Nesterov momentum, cross-entropy), two identical copies from one
seed: one eager, one wrapped in `torch.compile` (default inductor backend).  The first compiled
step (compilation included) is timed on its own; then the two steps alternate, `--steps` each,
on the same random batch.  Issue 19 asks for final training >= 2.5x a plain DataLoader loop on
the CPU; `bench/train_phases.py` shows 98-99% of a step is the model's forward and backward, so
compilation (kernel fusion) is the remaining lever that keeps the arithmetic: this measures it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]
from _report import median_and_range, publish  # noqa: E402

from models.baselines import resolve_arch  # noqa: E402

MODEL = "mobilenet_v2_0.5"
BATCH = 128
TITLE = "Training step: eager vs torch.compile (CPU)"


def make_step(compiled: bool):
    """A training-step closure over its own model copy (seed 0) and optimiser."""
    torch.manual_seed(0)
    model = resolve_arch(MODEL, 32, 10).build(0.2).to(memory_format=torch.channels_last).train()
    optimiser = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    forward = torch.compile(model) if compiled else model
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 3, 32, 32, generator=generator)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (BATCH,), generator=generator)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> float:
        started = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        loss_fn(forward(x), y).backward()
        optimiser.step()
        return time.perf_counter() - started

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="write BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    eager, compiled = make_step(False), make_step(True)
    first_compiled_s = compiled()
    eager()  # warm the eager path's oneDNN primitive cache too
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.steps):
        times["eager"].append(eager())
        times["compiled"].append(compiled())
    load_after = os.getloadavg()
    rows = [
        "| step | median ms | min-max ms | eager / this (ratio of medians) |",
        "|---|---:|---|---:|",
    ]
    eager_median = statistics.median(times["eager"])
    for name, values in times.items():
        median, spread = median_and_range([v * 1e3 for v in values], 0)
        rows.append(f"| {name} | {median:.0f} | {spread} | {eager_median / (median / 1e3):.2f}x |")
    notes = (
        f"{MODEL} at 32 px, batch {BATCH}, channels-last, {args.threads} torch thread(s), "
        f"cross-entropy, {args.steps} steps of each, alternating. First compiled step "
        f"(compilation included): {first_compiled_s:.1f} s. 1-min load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (2 cores)."
    )
    publish(TITLE, "\n".join(rows), notes, write=args.write)


if __name__ == "__main__":
    main()
