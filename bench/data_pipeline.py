"""Training-epoch throughput of `pipeline.batches.BatchLoader` against a torchvision-style
per-image pipeline (PIL image -> RandomCrop(32, padding=4) -> RandomHorizontalFlip -> ToTensor
-> Normalize, through a DataLoader with num_workers=0), on the same images in the same run,
alternating between the two so that machine load hits both alike.  Writes BENCHMARKS.md.

    python bench/data_pipeline.py [--data PATH.npz] [--repeats 7] [--batch-size 128] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch
from _report import write_section
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from models.normalisation import CIFAR10_MEAN, CIFAR10_STD
from pipeline.batches import BatchLoader
from pipeline.data import DATA_DIR_ENV, ImageArrays, default_data_dir, load_npz

TITLE = "Data pipeline: one CIFAR training epoch"


class PilImages(Dataset):
    """What torchvision.datasets.CIFAR10 does per item: wrap the uint8 array as a PIL image and
    run the transform on it."""

    def __init__(self, arrays: ImageArrays, transform) -> None:
        self.images, self.labels, self.transform = arrays.images, arrays.labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def reference_loader(arrays: ImageArrays, batch_size: int, seed: int) -> DataLoader:
    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        ]
    )
    return DataLoader(
        PilImages(arrays, transform),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )


def images_per_second(batches: Iterable) -> float:
    count = 0
    start_s = time.perf_counter()
    for _, labels in batches:
        count += len(labels)
    return count / (time.perf_counter() - start_s)


def with_threads(count: int, run: Callable[[], float]) -> float:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        return run()
    finally:
        torch.set_num_threads(previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(default_data_dir() / "cifar10_small.npz"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md")
    args = parser.parse_args()

    train, _ = load_npz(args.data)
    ours = BatchLoader(train, args.batch_size, train=True, seed=0)
    reference = reference_loader(train, args.batch_size, seed=0)
    default_threads = torch.get_num_threads()
    runs = {
        "ours": lambda: images_per_second(ours),
        "ours_1_thread": lambda: with_threads(1, lambda: images_per_second(ours)),
        "reference": lambda: images_per_second(reference),
    }
    for run in runs.values():  # warm-up: allocator, PIL and torchvision code paths
        run()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    load_before = os.getloadavg()[0]
    for repeat in range(args.repeats):
        ours.set_epoch(repeat)
        order = list(runs) if repeat % 2 == 0 else list(reversed(runs))  # cancel drift
        for name in order:
            rates[name].append(runs[name]())
    load_after = os.getloadavg()[0]

    median = {name: statistics.median(values) for name, values in rates.items()}
    rows = [
        (f"`BatchLoader`, {default_threads} torch threads (default)", "ours"),
        ("`BatchLoader`, 1 torch thread", "ours_1_thread"),
        (
            "reference: torchvision per-image PIL transforms, `DataLoader(num_workers=0)`",
            "reference",
        ),
    ]
    table = "\n".join(
        [
            "| pipeline | median images/s | min-max images/s | speedup |",
            "|---|---:|---:|---:|",
            *(
                f"| {label} | {median[name]:,.0f} | {min(rates[name]):,.0f}-{max(rates[name]):,.0f}"
                f" | {median[name] / median['reference']:.1f}x |"
                for label, name in rows
            ),
        ]
    )
    notes = (
        f"{len(train):,} training images of `{os.path.basename(args.data)}`, batch "
        f"{args.batch_size}, random crop (pad 4) + horizontal flip + normalise, "
        f"{args.repeats} interleaved epochs per pipeline after one warm-up; speedup = ratio of "
        "medians. The reference is in effect single-threaded (per-image tensors are below "
        f"torch's parallel grain size). torch {torch.__version__}, numpy {np.__version__}; "
        f"1-min load average {load_before:.1f} before, {load_after:.1f} after (other processes "
        "share this machine)."
    )
    print(table, notes, sep="\n\n")
    if not args.no_write:
        env = (
            f"{DATA_DIR_ENV}={shlex.quote(os.environ[DATA_DIR_ENV])} "
            if DATA_DIR_ENV in os.environ
            else ""
        )
        command = env + shlex.join(["python", *sys.argv])
        print(f"\nwrote {write_section(TITLE, command, table, notes=notes)}")


if __name__ == "__main__":
    main()
