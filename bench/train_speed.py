"""Training images/s of `pearl train`'s loop against a plain torchvision-style reference loop.

Usage: python bench/train_speed.py [--repeats 3] [--images 1024] [--threads 1]

Same model (mobilenet_v2_0.5 at 32 px, CIFAR-10), same optimiser (SGD, Nesterov momentum 0.9),
same batch size and losses (ce, and kd with a resnet20 teacher run on every batch):

- pearl: `pipeline.training.train` (in-memory uint8 images, crop + flip for the whole batch in
  one gather, channels-last), its measured training-loop images/s;
- reference: `torch.utils.data.DataLoader` over a Dataset returning PIL images through
  RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize (num_workers=0), model in
  the default contiguous layout.

Runs are interleaved (pearl-ce, reference-ce, pearl-kd, reference-kd, repeated); the table gives
medians, the min-max spread and the ratio of medians, plus the load average.  One unmeasured
batch of each loop runs first (allocator and oneDNN primitive caches).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

from models.baselines import resolve_arch  # noqa: E402
from models.builder import build  # noqa: E402
from models.normalisation import CIFAR10_MEAN, CIFAR10_STD  # noqa: E402
from models.teachers import cifar_resnet  # noqa: E402
from pipeline.data import default_data_dir, load_npz  # noqa: E402
from pipeline.losses import cross_entropy, hinton_kd  # noqa: E402
from pipeline.training import TrainSettings, train  # noqa: E402

MODEL = "mobilenet_v2_0.5"


def pearl_images_per_s(arrays, test, loss: str, teacher, batch_size: int, threads: int) -> float:
    settings = TrainSettings(
        model=MODEL, epochs=1, batch_size=batch_size, loss=loss, warmup_epochs=0
    )
    with tempfile.TemporaryDirectory() as run_dir:
        metrics = train(
            settings, arrays, test, run_dir, teacher=teacher, progress=False, threads=threads
        )
    return metrics["curve"][0]["train_images_per_s"]


class _PilDataset(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def reference_images_per_s(arrays, loss: str, teacher, batch_size: int) -> float:
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        ]
    )
    loader = torch.utils.data.DataLoader(
        _PilDataset(arrays.images, arrays.labels, transform),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=0,
    )
    torch.manual_seed(0)
    model = build(resolve_arch(MODEL, 32, 10)).train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True
    )
    seen = 0
    started = time.perf_counter()
    for x, y in loader:
        logits = model(x)
        if loss == "kd":
            with torch.no_grad():
                target = teacher(x)
            value = hinton_kd(logits, target, y)
        else:
            value = cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        seen += len(y)
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=1024, help="training images per run")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both loops")
    parser.add_argument("--no-write", action="store_true", help="print only, keep BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_arrays, test_arrays = load_npz(default_data_dir() / "cifar10_small.npz")
    arrays = train_arrays.take(np.arange(args.images))
    test = test_arrays.take(np.arange(100))
    teacher = cifar_resnet("resnet20").eval()

    modes = {
        "pearl ce": lambda: pearl_images_per_s(
            arrays, test, "ce", None, args.batch_size, args.threads
        ),
        "reference ce": lambda: reference_images_per_s(arrays, "ce", None, args.batch_size),
        "pearl kd": lambda: pearl_images_per_s(
            arrays, test, "kd", teacher, args.batch_size, args.threads
        ),
        "reference kd": lambda: reference_images_per_s(arrays, "kd", teacher, args.batch_size),
    }
    warm_arrays = arrays.take(np.arange(args.batch_size))
    for loss, loss_teacher in (("ce", None), ("kd", teacher)):  # allocator and oneDNN caches
        pearl_images_per_s(warm_arrays, test, loss, loss_teacher, args.batch_size, args.threads)
        reference_images_per_s(warm_arrays, loss, loss_teacher, args.batch_size)
    speeds: dict[str, list[float]] = {name: [] for name in modes}
    load_before = os.getloadavg()
    for repeat in range(args.repeats):
        for name, run in modes.items():
            speeds[name].append(run())
            print(f"repeat {repeat + 1} {name}: {speeds[name][-1]:.1f} images/s", file=sys.stderr)
    load_after = os.getloadavg()

    rows = [
        "| loop | loss | images/s (median) | spread (min-max) | pearl / reference "
        "(ratio of medians) | per-repeat ratios (median, min-max) |"
    ]
    rows.append("|---|---|---|---|---|---|")
    for loss in ("ce", "kd"):
        pearl = statistics.median(speeds[f"pearl {loss}"])
        reference = statistics.median(speeds[f"reference {loss}"])
        pairs = zip(speeds[f"pearl {loss}"], speeds[f"reference {loss}"], strict=True)
        paired = [a / b for a, b in pairs]
        for loop, median in (("pearl", pearl), ("reference", reference)):
            values = speeds[f"{loop} {loss}"]
            ratio = paired_text = ""
            if loop == "pearl":
                ratio = f"{pearl / reference:.2f}x"
                paired_text = (
                    f"{statistics.median(paired):.2f}x ({min(paired):.2f}-{max(paired):.2f})"
                )
            rows.append(
                f"| {loop} | {loss} | {median:.1f} | {min(values):.1f}-{max(values):.1f} "
                f"| {ratio} | {paired_text} |"
            )
    table = "\n".join(rows)
    notes = (
        f"{MODEL} at 32 px on {args.images} cifar10_small training images per run, batch "
        f"{args.batch_size}, {args.threads} torch thread(s), {args.repeats} interleaved repeats; "
        "kd runs a resnet20 teacher on every batch in both loops. Reference: DataLoader "
        "(num_workers=0) over PIL images with RandomCrop(32, 4), RandomHorizontalFlip, "
        "ToTensor, Normalize, contiguous NCHW model. Load average (1, 5, 15 min) before "
        f"{tuple(round(v, 1) for v in load_before)}, after "
        f"{tuple(round(v, 1) for v in load_after)}: the 2 cores are shared with other jobs."
    )
    print(table)
    print(notes)
    if not args.no_write:
        command = "python bench/train_speed.py " + " ".join(sys.argv[1:])
        write_section(
            "Training speed: pearl train vs a reference loop", command.strip(), table, notes=notes
        )


if __name__ == "__main__":
    main()
