"""How long sampling, counting and building 1,000 random candidates takes.

Usage: python bench/arch_throughput.py [--n 1000] [--repeats 3]

Stages, timed separately per space and repeated (spaces interleaved, medians reported):
sample = draw choices + make the Arch; encode = canonical string + key; count = MACs and params
from the Arch alone; build = construct and initialise the PyTorch module.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import median_and_range, write_section  # noqa: E402

from models.builder import build  # noqa: E402
from models.costs import arch_cost  # noqa: E402
from models.space import get_space  # noqa: E402
from pipeline.run_report import markdown_table  # noqa: E402


def time_stages(space_name: str, count: int, seed: int) -> dict[str, float]:
    space = get_space(space_name)
    rng = random.Random(seed)
    seconds = {}
    start = time.perf_counter()
    archs = [space.sample(rng) for _ in range(count)]
    seconds["sample"] = time.perf_counter() - start
    start = time.perf_counter()
    keys = [arch.key() for arch in archs]
    seconds["encode+key"] = time.perf_counter() - start
    start = time.perf_counter()
    costs = [arch_cost(arch) for arch in archs]
    seconds["count"] = time.perf_counter() - start
    start = time.perf_counter()
    for arch in archs:
        build(arch)
    seconds["build"] = time.perf_counter() - start
    assert len(set(keys)) == count and all(c.params > 0 for c in costs)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    spaces = ("mnas-cifar", "mnas-imagenet")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in spaces}
    for repeat in range(args.repeats):
        for name in spaces:
            runs[name].append(time_stages(name, args.n, seed=repeat))
            print(f"repeat {repeat + 1}/{args.repeats} {name}: {runs[name][-1]}", file=sys.stderr)
    header = ("space", "stage", f"median s per {args.n}", "min-max s", "median us per candidate")
    rows = []
    for name in spaces:
        for stage in runs[name][0]:
            median_s, range_s = median_and_range([run[stage] for run in runs[name]], 3)
            rows.append((name, stage, f"{median_s:.3f}", range_s, f"{median_s / args.n * 1e6:.0f}"))
    table = markdown_table(header, rows)
    print(table)
    command = f"python bench/arch_throughput.py --n {args.n} --repeats {args.repeats}"
    notes = (
        f"{args.repeats} repeats, spaces interleaved, torch threads 2. `build` includes weight "
        "initialisation; `count` is the analytic count from the Arch (no module, no forward)."
    )
    write_section("Sample, count and build random candidates", command, table, notes=notes)


if __name__ == "__main__":
    main()
