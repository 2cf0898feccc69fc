"""Where one training step's time goes on the CPU: pearl's loop vs the reference DataLoader loop
(`bench/train_speed.py`), phase by phase.

Usage: python bench/train_phases.py [--steps 6] [--batch-size 128] [--threads 1]

Each step of both loops is cut into phases timed with perf_counter (on the CPU every op runs
synchronously, so a phase's time is its own): data (the next batch), teacher (kd: the teacher's
forward), forward, loss, backward (zero_grad + backward), optimizer step, host reads (pearl: the
losses read back at each tenth of an epoch; reference: none).  The same mobilenet_v2_0.5
student, batch and optimiser as `bench/train_speed.py`; pearl uses `pipeline.batches.BatchLoader`
and a channels-last model, the reference torchvision transforms over PIL images and a
contiguous model.  Loops interleaved step by step after one unmeasured step each; medians per
phase.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import publish  # noqa: E402
from train_speed import MODEL, _PilDataset  # noqa: E402

from models.baselines import resolve_arch  # noqa: E402
from models.builder import build  # noqa: E402
from models.normalisation import CIFAR10_MEAN, CIFAR10_STD  # noqa: E402
from models.teachers import cifar_resnet  # noqa: E402
from pipeline.batches import BatchLoader  # noqa: E402
from pipeline.data import default_data_dir, load_npz  # noqa: E402
from pipeline.losses import cross_entropy, hinton_kd  # noqa: E402

PHASES = ("data", "teacher", "forward", "loss", "backward", "optimizer step", "host reads")


class Loop:
    def __init__(self, name: str, batches, memory_format, teacher) -> None:
        torch.manual_seed(0)
        self.name, self.batches, self.teacher = name, batches, teacher
        self.model = build(resolve_arch(MODEL, 32, 10)).train().to(memory_format=memory_format)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True
        )
        self.times: dict[str, list[float]] = {phase: [] for phase in PHASES}
        self.losses: list[torch.Tensor] = []

    def step(self, record: bool) -> None:
        marks = [time.perf_counter()]
        x, y = next(self.batches)
        marks.append(time.perf_counter())
        target = None
        if self.teacher is not None:
            with torch.no_grad():
                target = self.teacher(x)
        marks.append(time.perf_counter())
        logits = self.model(x)
        marks.append(time.perf_counter())
        loss = hinton_kd(logits, target, y) if target is not None else cross_entropy(logits, y)
        marks.append(time.perf_counter())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(time.perf_counter())
        self.optimizer.step()
        marks.append(time.perf_counter())
        if self.name == "pearl":  # pearl keeps losses on the device, reads them now and then
            self.losses.append(loss.detach())
            if len(self.losses) % 4 == 0:
                float(torch.stack(self.losses).sum())
        marks.append(time.perf_counter())
        if record:
            for phase, (a, b) in zip(PHASES, zip(marks, marks[1:], strict=False), strict=True):
                self.times[phase].append((b - a) * 1000)


def _forever(batches):
    """The batches of `batches` (a loader), epoch after epoch."""
    while True:
        yield from batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from torchvision import transforms

    train, _ = load_npz(default_data_dir() / "cifar10_small.npz")
    arrays = train.take(np.arange(1024))
    teacher = cifar_resnet("resnet20").eval()
    load_before = os.getloadavg()
    lines = [
        "| loss | loop | " + " | ".join(PHASES) + " | step | outside the model |",
        "|---|---|" + "---:|" * (len(PHASES) + 2),
    ]
    for loss in ("ce", "kd"):
        loader = BatchLoader(arrays, args.batch_size, train=True, seed=0)
        pil = _PilDataset(
            arrays.images,
            arrays.labels,
            transforms.Compose(
                [
                    transforms.RandomCrop(32, padding=4),
                    transforms.RandomHorizontalFlip(),
                    transforms.ToTensor(),
                    transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD),
                ]
            ),
        )
        reference_loader = torch.utils.data.DataLoader(
            pil, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=0
        )
        tutor = teacher if loss == "kd" else None
        pearl_teacher = tutor and copy.deepcopy(tutor).to(memory_format=torch.channels_last)
        loops = [
            Loop("pearl", _forever(loader), torch.channels_last, pearl_teacher),
            Loop("reference", _forever(reference_loader), torch.contiguous_format, tutor),
        ]
        for step in range(args.steps + 1):
            for loop in loops:
                loop.step(record=step > 0)
        for loop in loops:
            medians = {p: statistics.median(v) for p, v in loop.times.items()}
            total = sum(medians.values())
            outside = medians["data"] + medians["loss"] + medians["optimizer step"]
            outside += medians["host reads"]
            lines.append(
                f"| {loss} | {loop.name} | "
                + " | ".join(f"{medians[p]:.1f}" for p in PHASES)
                + f" | {total:.0f} | {outside:.1f} ({outside / total:.1%}) |"
            )
    load_after = os.getloadavg()
    table = "\n".join(lines)
    notes = (
        f"Milliseconds per step (median over {args.steps} steps per loop, interleaved), "
        f"{MODEL} at 32 px, batch {args.batch_size}, {args.threads} torch thread(s); 'outside "
        "the model' = data + loss + optimizer step + host reads. 1-min load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (2 cores shared with other "
        "jobs: absolute times are under load; the loops ran side by side, step by step)."
    )
    publish("Training step: where the time goes (CPU)", table, notes, write=not args.no_write)


if __name__ == "__main__":
    main()
