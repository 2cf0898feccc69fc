"""Proxy validity for the evidence run (issue 15): does the proxy's mini-val accuracy rank
candidates like a longer training does?

Usage: nice -n 5 python bench/proxy_rank.py [--k 6] [--baseline-width 0.75]
       [--train-images 2000] [--epochs 3] [--long-train-images 4000] [--long-epochs 6]
       [--val-images 1000] [--lr 0.1] [--loss ce] [--seed 0] [--write]

Samples `--k` archs uniformly from `mnas-cifar` (32 px) whose latency from the shipped host table
lies within 80-100% of the target (MobileNetV2-`--baseline-width` in the space, the evidence
run's target), trains each with the proxy setting and with the longer one (the search's own
`train_candidate`, one torch thread, same seed and mini-val), and reports the accuracies with
their binomial standard errors, the seconds, and Spearman's rank correlation between the two.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]  # this checkout's pipeline
from _report import publish  # noqa: E402
from evidence import TABLE, baseline_target_ms  # noqa: E402

TITLE = "Proxy validity: proxy vs longer training, rank correlation (issue 15)"


def standard_error(accuracy: float, images: int) -> float:
    """Binomial standard error of an accuracy measured on `images` images (a fraction)."""
    return (accuracy * (1 - accuracy) / images) ** 0.5


def archs_near(target_ms: float, k: int, seed: int, low: float = 0.8):
    """`k` distinct archs drawn uniformly from the space with table latency in
    [low * target, target], with their latencies (rejection sampling; the table is cheap)."""
    from latency_tables.table import LatencyTable
    from models.space import get_space

    space, table = get_space("mnas-cifar"), LatencyTable.load(TABLE)
    rng, found = random.Random(seed), {}
    for _ in range(200_000):
        arch = space.arch_from([rng.randrange(len(d.options)) for d in space.decisions()])
        latency_ms = table.predict_ms(arch)
        if low * target_ms <= latency_ms <= target_ms:
            found.setdefault(arch.key(), (arch, latency_ms))
            if len(found) == k:
                return list(found.values())
    raise SystemExit(f"found only {len(found)} archs within {low:.0%}-100% of {target_ms:.3f} ms")


def splits(args, train_images: int):
    from pipeline.config import DataConfig, ProxyConfig, SearchConfig
    from pipeline.search_setup import load_splits

    data = DataConfig(path=args.data, train_images=train_images, val_images=args.val_images)
    return load_splits(SearchConfig(data=data, proxy=ProxyConfig(loss="ce")))


def train(arch, args, train_images: int, epochs: int) -> tuple[float, float]:
    """(mini-val accuracy, seconds) of `arch` after `epochs` on the first `train_images`."""
    from pipeline.config import ProxyConfig, SearchConfig, TeacherConfig
    from pipeline.proxy import train_candidate
    from pipeline.search_setup import proxy_teacher

    mini_train, mini_val = splits(args, train_images)
    settings = ProxyConfig(loss=args.loss, epochs=epochs, batch_size=64, lr=args.lr, threads=1)
    teacher = None
    if args.loss != "ce":
        config = SearchConfig(proxy=settings, teacher=TeacherConfig(spec=args.teacher))
        teacher = proxy_teacher(config, mini_train)[0]
    result = train_candidate(
        arch, mini_train, mini_val, settings, teacher, seed=args.seed, compute=None
    )
    return result.accuracy, result.seconds


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=6, help="archs sampled near the target")
    parser.add_argument("--baseline-width", type=float, default=0.75)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--long-train-images", type=int, default=4000)
    parser.add_argument("--long-epochs", type=int, default=6)
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--loss", default="ce", help="proxy loss: ce or kd")
    parser.add_argument("--teacher", default="builtin:resnet20_cifar10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10.npz"))
    parser.add_argument("--write", action="store_true", help="write BENCHMARKS.md's section")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    baseline, target_ms = baseline_target_ms(args.baseline_width)
    loads, rows, proxy, long = [os.getloadavg()], [], [], []
    started = time.perf_counter()
    archs = archs_near(target_ms, args.k, args.seed)
    # every proxy first, so an early look at the log says whether the proxy is above chance
    short = [train(arch, args, args.train_images, args.epochs) for arch, _ in archs]
    for index, (short_acc, short_s) in enumerate(short):
        print(f"arch {index}: proxy {100 * short_acc:.1f}% in {short_s:.0f} s", file=sys.stderr)
    for index, ((arch, latency_ms), (short_acc, short_s)) in enumerate(
        zip(archs, short, strict=True)
    ):
        long_acc, long_s = train(arch, args, args.long_train_images, args.long_epochs)
        proxy.append(short_acc)
        long.append(long_acc)
        loads.append(os.getloadavg())
        se = [100 * standard_error(a, args.val_images) for a in (short_acc, long_acc)]
        rows.append(
            f"| {index} | {latency_ms:.3f} | {arch.cost().macs / 1e6:.1f} | "
            f"{100 * short_acc:.1f} ± {se[0]:.1f} | {short_s:.0f} | "
            f"{100 * long_acc:.1f} ± {se[1]:.1f} | {long_s:.0f} |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    rho = spearman(proxy, long)
    table = "\n".join(
        [
            "| arch | latency (ms) | MMACs | proxy acc (%) ± s.e. | proxy s | longer acc (%) "
            "± s.e. | longer s |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"Spearman rank correlation, proxy vs longer: {rho:+.2f} over {args.k} archs.",
        ]
    )
    notes = (
        f"{args.k} archs drawn uniformly from `mnas-cifar` (seed {args.seed}) with table latency "
        f"within 80-100% of the target {target_ms:.3f} ms (MobileNetV2-{args.baseline_width} in "
        f"the space, `{TABLE.name}`). Proxy: {args.epochs} epochs on {args.train_images} "
        f"mini-train images; longer: {args.long_epochs} epochs on {args.long_train_images} "
        f"(x{args.long_epochs * args.long_train_images / (args.epochs * args.train_images):.0f} "
        f"image-epochs); loss {args.loss}, batch 64, peak lr {args.lr}, 1 warm-up epoch, cosine, "
        f"one torch thread; both scored on the same {args.val_images} mini-val images of "
        f"`{Path(args.data).name}` (s.e. = binomial). Wall time "
        f"{(time.perf_counter() - started) / 60:.1f} min; 1-min load average "
        f"{min(x[0] for x in loads):.1f}-{max(x[0] for x in loads):.1f} (2 cores shared with "
        "other jobs; seconds are under that load)."
    )
    publish(TITLE, table, notes, write=args.write)


if __name__ == "__main__":
    main()
