"""Same budget, three searches: KD-guided reward (AKD), cross-entropy reward (conventional NAS),
and random search; which finds the best *distilled* student within the latency target?

Usage: nice -n 5 python bench/search_experiment.py --teacher SPEC [--candidates 6]
       [--batch 3] [--seeds 0,1] [--target-ms 0.25]

Every search uses the quickstart space and proxy (mini-train / mini-val of cifar10_small, KD with
T = 1, alpha = 0.9) and host latency (``--latency``) with the soft MnasNet reward.  `kd-ppo` and
`ce-ppo` are PPO searches whose proxy loss is KD or CE; `random` samples uniformly, scored by KD.
The outcome per search is the distilled mini-val accuracy of the best arch within the target: for
the KD-scored searches it is the proxy accuracy itself; the CE search's winner (chosen by its CE
accuracy) is distilled afterwards with exactly the same KD proxy.  The seed drives both the
controller and the proxy's batches; seed-to-seed spread is the noise estimate.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = {"kd-ppo": ("kd", "ppo"), "ce-ppo": ("ce", "ppo"), "random": ("kd", "random")}


def run_one(base, method: str, seed: int, scratch: Path) -> dict:
    from models.arch import Arch
    from pipeline.proxy import train_candidate
    from pipeline.search import Search, build_setup
    from pipeline.search_setup import load_splits, proxy_teacher

    loss, controller = METHODS[method]
    config = dataclasses.replace(
        base,
        proxy=dataclasses.replace(base.proxy, loss=loss),
        controller=dataclasses.replace(base.controller, name=controller),
        search=dataclasses.replace(base.search, seed=seed),
    )
    started = time.perf_counter()
    setup = build_setup(config, log=lambda m: print(m, file=sys.stderr))
    try:
        search = Search(
            config, scratch / f"{method}-{seed}", setup, resume=False, show_progress=False
        )
        summary = search.run()
    finally:
        setup.close()
    best = next((b for b in summary["best"] if b.get("arch")), None)
    result = {"method": method, "seed": seed, "wall_s": time.perf_counter() - started}
    if best is None:
        return {**result, "accuracy": None, "latency_ms": None, "search_accuracy": None}
    distilled = best["accuracy"]
    if loss == "ce":  # distil the CE winner with the same KD proxy
        kd_config = dataclasses.replace(config, proxy=dataclasses.replace(config.proxy, loss="kd"))
        mini_train, mini_val = load_splits(kd_config)
        teacher, _, _ = proxy_teacher(kd_config, mini_train)
        distilled = train_candidate(
            Arch.decode(best["arch"]),
            mini_train,
            mini_val,
            kd_config.proxy,
            teacher,
            seed=kd_config.search.seed,
        ).accuracy
    return {
        **result,
        "accuracy": distilled,
        "search_accuracy": best["accuracy"],
        "latency_ms": best["latency_ms"],
        "key": best["key"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="teacher spec (a Pearl checkpoint)")
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--target-ms", type=float, default=None)
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument(
        "--latency",
        default="host:onnx",
        help="latency backend (default host:onnx: its export costs seconds, a .tflite ~45 s "
        "on this busy machine, which would double the experiment)",
    )
    args = parser.parse_args()

    import torch

    from pipeline.config import load_config
    from pipeline.config_paths import with_absolute_paths

    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = {
        "teacher": {"spec": args.teacher},
        "search": {"max_candidates": args.candidates, "batch_size": args.batch, "max_hours": 0},
        "data": {"train_images": args.train_images},
        "latency": {"backends": [args.latency]},
    }
    if args.target_ms:
        overrides["reward"] = {"target": args.target_ms}
    base = with_absolute_paths(load_config(REPO / "configs" / "quickstart.toml", overrides), REPO)
    torch.set_num_threads(base.proxy.threads or os.cpu_count())
    results, loads = [], [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as scratch:
        for seed in seeds:
            for method in METHODS:  # interleaved: machine drift hits every method
                results.append(run_one(base, method, seed, Path(scratch)))
                loads.append(os.getloadavg()[0])
                print(results[-1], file=sys.stderr)
                # written after every search, so an interrupted experiment keeps what it did
                report(args, base, results, loads, len(seeds) * len(METHODS))


def report(args, base, results: list, loads: list, planned: int) -> None:
    rows = [
        "| method | seed | best distilled mini-val acc within target | its latency (ms) | "
        "search's own score | wall s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.1f}%"
        own = "-" if r["search_accuracy"] is None else f"{100 * r['search_accuracy']:.1f}%"
        latency = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.3f}"
        rows.append(
            f"| {r['method']} | {r['seed']} | {acc} | {latency} | {own} | {r['wall_s']:.0f} |"
        )
    summary = []
    for method in METHODS:
        values = [r["accuracy"] for r in results if r["method"] == method and r["accuracy"]]
        if values:
            summary.append(
                f"{method} {100 * statistics.mean(values):.1f}% "
                f"(range {100 * min(values):.1f}-{100 * max(values):.1f})"
            )
    notes = (
        f"Budget {args.candidates} candidates per search ({args.batch} per generation), seeds "
        f"{args.seeds}; quickstart space and proxy with {base.data.train_images} mini-train and "
        f"{base.data.val_images} mini-val images, {base.proxy.epochs} epochs; latency target "
        f"{base.reward.target} ms on {args.latency} (1 thread, median), soft reward. Teacher "
        f"`{Path(args.teacher).name}`. Mean over seeds: {'; '.join(summary)}. Noise: the "
        "seed-to-seed range above, and mini-val has "
        f"{base.data.val_images} images, so one image is {100 / base.data.val_images:.1f} "
        "points and the binomial standard error near 30% accuracy is about "
        f"{100 * (0.3 * 0.7 / base.data.val_images) ** 0.5:.1f} points. With so few candidates "
        "PPO gets one or two updates, so it can barely differ from random; treat differences "
        f"smaller than the seed-to-seed range as noise. {len(results)} of {planned} planned "
        "searches done. 1-min load average "
        f"{min(loads):.1f}-{max(loads):.1f} (machine shared with other jobs; run under nice)."
    )
    table = "\n".join(rows)
    print(table, file=sys.stderr)
    command = (
        f"nice -n 5 python bench/search_experiment.py --teacher {args.teacher} --candidates "
        f"{args.candidates} --batch {args.batch} --seeds {args.seeds} --train-images "
        f"{args.train_images} --latency {args.latency}"
        + (f" --target-ms {args.target_ms}" if args.target_ms else "")
    )
    write_section(
        "Search experiment: KD reward vs CE reward vs random", command, table, notes=notes
    )


if __name__ == "__main__":
    main()
