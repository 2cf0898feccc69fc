"""What a KD-guided candidate evaluation costs relative to a cross-entropy one.

Usage: python bench/kd_cost.py [--repeats 3] [--epochs 1] [--images 2000] [--teacher resnet56]

Three ways to train the same student on the same proxy task, interleaved and repeated:
ce (plain cross-entropy), kd-online (the teacher runs on every batch, as AKD does) and
kd-cached (teacher logits of the search's shared augmented batches computed once; see
pipeline/proxy.py). The one-off cost of filling the cache is reported separately: a search
pays it once, not per candidate. Issue target: kd-cached <= 1.15x ce.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import median_and_range, write_section  # noqa: E402

from models.baselines import resolve_arch  # noqa: E402
from models.teachers import cifar_resnet  # noqa: E402
from pipeline.batches import BatchLoader  # noqa: E402
from pipeline.config import ProxyConfig  # noqa: E402
from pipeline.data import default_data_dir, load_npz, split_train_val  # noqa: E402
from pipeline.proxy import CachedTeacher, OnlineTeacher, train_candidate  # noqa: E402
from pipeline.run_report import markdown_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--teacher", default="resnet56")
    parser.add_argument("--student", default="mobilenet_v2_0.35")
    args = parser.parse_args()
    torch.set_num_threads(2)
    train, _ = load_npz(default_data_dir() / "cifar10_small.npz")
    subset = train.take(torch.arange(args.images).numpy())
    mini_train, mini_val = split_train_val(subset, 0.2, seed=0)
    arch = resolve_arch(args.student, 32, 10)
    teacher = cifar_resnet(args.teacher).eval().to(memory_format=torch.channels_last)
    kd = ProxyConfig(epochs=args.epochs, warmup_epochs=min(1, args.epochs))
    ce = ProxyConfig(epochs=args.epochs, warmup_epochs=min(1, args.epochs), loss="ce")

    start = time.perf_counter()
    loader = BatchLoader(mini_train, kd.batch_size, train=True, seed=0)
    cached = CachedTeacher.compute(teacher, loader, args.epochs)
    fill_seconds = time.perf_counter() - start

    modes = {
        "ce": lambda: train_candidate(arch, mini_train, mini_val, ce),
        "kd-cached": lambda: train_candidate(arch, mini_train, mini_val, kd, cached),
        "kd-online": lambda: train_candidate(
            arch, mini_train, mini_val, kd, OnlineTeacher(teacher)
        ),
    }
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    for repeat in range(args.repeats):
        for name, run in modes.items():
            seconds[name].append(run().seconds)
            print(f"repeat {repeat + 1} {name}: {seconds[name][-1]:.1f} s", file=sys.stderr)
    ce_median_s = statistics.median(seconds["ce"])
    rows = []
    for name, values in seconds.items():
        median_s, range_s = median_and_range(values, 1)
        rows.append((name, f"{median_s:.1f}", range_s, f"{median_s / ce_median_s:.2f}x"))
    table = markdown_table(("mode", "median s per candidate", "min-max s", "ratio to ce"), rows)
    print(table)
    notes = (
        f"Student `{args.student}` (32x32, CIFAR layout), teacher `{args.teacher}` "
        f"(untrained weights: cost does not depend on them), {len(mini_train)} mini-train "
        f"images, {args.epochs} epoch(s), batch 128, 2 torch threads, {args.repeats} interleaved "
        f"repeats. Filling the teacher-logit cache once cost {fill_seconds:.1f} s (paid once per "
        "search, shared by all candidates). Issue target: kd-cached <= 1.15x ce."
    )
    command = (
        f"python bench/kd_cost.py --repeats {args.repeats} --epochs {args.epochs} "
        f"--images {args.images} --teacher {args.teacher}"
    )
    write_section("KD-guided vs cross-entropy candidate cost", command, table, notes=notes)


if __name__ == "__main__":
    main()
