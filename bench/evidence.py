"""Evidence run for issue 15: KD-reward PPO vs CE-reward PPO vs random search at equal budget,
latency from the shipped host table, then `pearl analyze` (AKD Figs. 4-8, Table 4).

Usage: nice -n 5 python bench/evidence.py --out runs/evidence [--budget 24] [--batch 4]
       [--seeds 0,1] [--train-images 1000] [--val-images 500] [--proxy-epochs 2]
       [--winning-ratio 2] [--wr-epochs 2] [--teacher builtin:resnet20_cifar10]

Every search is a real `pearl search` process on `mnas-cifar` at 32 px (the space the shipped
table `latency_tables/host_tflite_mnas-cifar_32.csv` was built for), so a candidate costs only
its proxy training.  The latency target is the table's prediction for MobileNetV2-1.0 written in
the space (CIFAR strides, ReLU like every student), so the comparison is like for like.
`kd-ppo` and `ce-ppo` are PPO searches whose proxy loss is KD or CE; `random` samples uniformly
and is scored with KD, so its rewards compare with `kd-ppo`'s.  Search efficiency: how many
candidates `kd-ppo` needed to reach the best reward `random` reached with its whole budget.

Search folders are kept in --out (rerunning resumes them: `pearl search --resume`), the analyses
go to --out/analysis-*, and the summary replaces its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import itertools
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]  # this checkout's pipeline
from _report import write_section  # noqa: E402

TABLE = REPO / "latency_tables" / "host_tflite_mnas-cifar_32.csv"
METHODS = {"kd-ppo": ("kd", "ppo"), "ce-ppo": ("ce", "ppo"), "random": ("kd", "random")}
TITLE = "Evidence: KD-reward PPO vs CE-reward PPO vs random (issue 15)"


def pearl(*args: str) -> None:
    """A real `pearl` command (argument list, no shell), stderr shown; stops on failure."""
    command = [sys.executable, "-m", "pipeline", *[str(a) for a in args]]
    print("+ pearl " + " ".join(str(a) for a in args), file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)


def baseline_target_ms(width: float = 1.0) -> tuple[str, float]:
    """MobileNetV2-`width` in the space (ds first block, mb6 k3 elsewhere, base depths, identity
    skips, no SE, ReLU; channels scaled by `width`, one of the space's width multipliers, as the
    table covers only those) and its table latency."""
    from latency_tables.table import LatencyTable
    from models.arch import make_divisible
    from models.space import MOBILENET_V2_BLOCKS, get_space

    space = get_space("mnas-cifar")
    if width not in space.width_multipliers:
        raise SystemExit(
            f"--baseline-width {width}: the table covers the space's widths "
            f"{space.width_multipliers} only; pick one of them"
        )
    values = []
    for index, (channels, layers) in enumerate(MOBILENET_V2_BLOCKS):
        op = "ds" if index == 0 else "mb6"
        values += [op, 3, 0.0, "id", make_divisible(channels * width), layers]
    choices = [d.options.index(v) for d, v in zip(space.decisions(), values, strict=True)]
    arch = space.arch_from(choices)
    return arch.encode(), LatencyTable.load(TABLE).predict_ms(arch)


def write_config(path: Path, args, target_ms: float) -> Path:
    import tomli_w

    config = {
        "data": {
            "path": str(Path(args.data).resolve()),
            "train_images": args.train_images,
            "val_images": args.val_images,
        },
        "space": {
            "name": "mnas-cifar",
            "input_size": 32,
            "num_classes": 10,
            "width_multipliers": [float(w) for w in args.widths.split(",") if w],
            "layer_deltas": [int(d) for d in args.layer_deltas.split(",") if d],
        },
        "teacher": {"spec": args.teacher},
        "proxy": {"epochs": args.proxy_epochs, "batch_size": 64, "lr": args.lr, "threads": 1},
        "reward": {"preset": "soft", "cost": "latency_ms", "target": round(target_ms, 4)},
        "search": {
            "batch_size": args.batch,
            "max_candidates": args.budget,
            "max_hours": 0,
            "executor": args.executor,
        },
        "latency": {"backends": [f"table:{TABLE}"]},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(config))
    return path


def run_search(config: Path, folder: Path, method: str, seed: int) -> None:
    """The search of `method` and `seed` in `folder` (resumed when it is there)."""
    loss, controller = METHODS[method]
    if (folder / "results.sqlite").is_file():
        pearl("search", "--resume", folder, "--no-progress")
    else:
        sets = [f"proxy.loss={loss}", f"controller.name={controller}", f"search.seed={seed}"]
        pearl("search", "--config", config, "--out", folder, "--no-progress",
              *[x for s in sets for x in ("--set", s)])  # fmt: skip


def search_facts(folder: Path) -> dict:
    """Best reward, the best accuracy within the target, the rewards in proposal order and the
    search's own elapsed seconds (from its store, so a resumed search still counts them)."""
    from pipeline.analysis.runs import load_run
    from pipeline.store import ResultsStore

    run = load_run(folder)
    target = run.config.reward.target
    within = [r for r in run.scored if r.latency_ms is not None and r.latency_ms <= target]
    best = max(within, key=lambda r: r.accuracy, default=None)
    with ResultsStore(run.layout.store) as store:
        last = store.last_generation()
    return {
        "search_s": last[2] if last else None,
        "rewards": [r.reward for r in run.rows],
        "best_reward": max((r.reward for r in run.rows if r.reward is not None), default=None),
        "best_accuracy": best.accuracy if best else None,
        "best_latency_ms": best.latency_ms if best else None,
        "best_arch": best.arch if best else None,
        "distinct": len(run.scored),
        "run": run,
    }


def final_top1(args, arch_text: str, loss: str, folder: Path) -> tuple[float, float]:
    """(test top-1, seconds) of `arch_text` after a `pearl train` with `loss` on the final
    schedule in `folder` (read back when it finished before; resumed when it was cut short)."""
    from models.files import read_json

    metrics = read_json(folder / "metrics.json") if (folder / "metrics.json").is_file() else None
    if not (metrics and metrics["finished"]):
        teacher = ["--teacher", args.teacher] if loss == "kd" else []
        pearl("train", arch_text, "--loss", loss, *teacher, "-o", folder, "--data", args.data,
              "--epochs", args.final_epochs, "--batch-size", 64, "--lr", args.lr,
              "--threads", 1, "--device", "cpu", "--train-images", args.final_train_images,
              "--test-images", args.test_images, "--resume", "--quiet")  # fmt: skip
        metrics = read_json(folder / "metrics.json")
    seconds = sum(row["train_seconds"] for row in metrics["curve"])
    return metrics["top1"], seconds


def final_training(args, facts, baseline: str) -> dict:
    """Test top-1 per (student, loss): each search's best within the target (seeds in
    --final-seeds) and the baseline, each trained with KD and with CE on the same schedule."""
    students = {"mobilenetv2": baseline}
    for (method, seed), f in facts.items():
        if seed in args.final_seeds and method in args.final_methods and f["best_arch"]:
            students[f"{method}-s{seed}"] = f["best_arch"]
    jobs = [(name, arch, loss) for name, arch in students.items() for loss in ("kd", "ce")]
    with ThreadPoolExecutor(args.final_parallel) as pool:  # each a one-thread `pearl train`
        futures = {
            (name, loss): pool.submit(
                final_top1, args, arch, loss, args.out / "final" / f"{name}-{loss}"
            )
            for name, arch, loss in jobs
        }
        return {key: future.result() for key, future in futures.items()}


def separability(a, b) -> tuple[float | None, float | None]:
    """CV accuracy and mean-distance ratio between two runs' last stages (a quarter of the
    generations, or the last generation of a shorter run), through `pipeline.analysis`."""
    from pipeline.analysis.runs import encode, encoding_of
    from pipeline.analysis.stats import cv_accuracy, mean_distance_ratio

    counts, _ = encoding_of(a.space)
    stages = max(1, min(4, a.last_generation + 1, b.last_generation + 1))
    last = [encode(r.rows, counts)[r.stages(r.rows, stages) == stages - 1] for r in (a, b)]
    try:
        return cv_accuracy(*last), mean_distance_ratio(*last)
    except ValueError:  # too few samples
        return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for searches + analyses")
    parser.add_argument("--budget", type=int, default=24, help="candidates per search")
    parser.add_argument("--batch", type=int, default=4, help="candidates per PPO update")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--val-images", type=int, default=500)
    parser.add_argument("--proxy-epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.05, help="peak lr, proxy and final")
    parser.add_argument("--baseline-width", type=float, default=1.0,
                        help="MobileNetV2 width whose table latency is the target")  # fmt: skip
    parser.add_argument("--widths", default="", help="space.width_multipliers (subset; '': all)")
    parser.add_argument("--layer-deltas", default="", help="space.layer_deltas (subset; '': all)")
    parser.add_argument("--final-epochs", type=int, default=0, help="final training (0: skip)")
    parser.add_argument("--final-train-images", type=int, default=4000)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--final-seeds", default="0", help="seeds whose winners are trained")
    parser.add_argument("--final-methods", default=",".join(METHODS), help="whose winners")
    parser.add_argument("--final-parallel", type=int, default=1,
                        help="final trainings run at once (one thread each)")  # fmt: skip
    parser.add_argument("--executor", default="inprocess", choices=("inprocess", "ray"),
                        help="search.executor of every search and of the winning ratio")  # fmt: skip
    parser.add_argument("--winning-ratio", type=int, default=0, help="N per stage (0: skip)")
    parser.add_argument("--wr-seeds", default="", help="seeds with a winning ratio ('': all)")
    parser.add_argument("--wr-epochs", type=int, default=None)
    parser.add_argument("--teacher", default="builtin:resnet20_cifar10")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10.npz"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    args.final_seeds = [int(s) for s in args.final_seeds.split(",")]
    args.final_methods = args.final_methods.split(",")
    args.wr_seeds = [int(s) for s in args.wr_seeds.split(",")] if args.wr_seeds else seeds
    baseline, target_ms = baseline_target_ms(args.baseline_width)
    config = write_config(args.out / "evidence.toml", args, target_ms)
    loads, facts = [os.getloadavg()], {}
    for seed in seeds:
        for method in METHODS:  # interleaved: machine drift hits every method
            folder = args.out / f"{method}-s{seed}"
            run_search(config, folder, method, seed)
            facts[method, seed] = search_facts(folder)
            loads.append(os.getloadavg())
    for seed in seeds:
        winning = args.winning_ratio and seed in args.wr_seeds
        extra = ["--winning-ratio", args.winning_ratio] if winning else []
        extra += ["--epochs", args.wr_epochs] if winning and args.wr_epochs else []
        pearl("analyze", *[args.out / f"{m}-s{seed}" for m in METHODS],
              "--out", args.out / f"analysis-s{seed}", "--no-progress", *extra)  # fmt: skip
    if len(seeds) > 1:
        pearl("analyze", *[args.out / f"kd-ppo-s{s}" for s in seeds],
              "--out", args.out / "analysis-kd-seeds", "--no-progress")  # fmt: skip
    final = final_training(args, facts, baseline) if args.final_epochs else {}
    loads.append(os.getloadavg())
    report(args, seeds, facts, loads, baseline, target_ms, final)


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def winning_text(args, seed: int) -> str:
    """``seed S: stage 1 1/2 (+0.50), ...`` from the analysis folder of `seed`."""
    from models.files import read_json
    from pipeline.analysis.winning import summarise
    from pipeline.layout import AnalysisLayout

    layout = AnalysisLayout(args.out / f"analysis-s{seed}")
    plan, done = read_json(layout.winning_plan), read_json(layout.winning_trainings) or {}
    stages = plan["settings"]["stages"]
    result = summarise(plan["pairs"], done, "kd", stages)["stages"]
    parts = [
        f"stage {s['stage'] + 1} {s['wins']}/{s['counted']} ({_gain(s['mean_gain_pp'])})"
        for s in result
        if s["pairs"]
    ]
    return f"seed {seed}: " + ", ".join(parts)


def reading(args, facts) -> str:
    """What the numbers can say: nothing when every best student is within two binomial
    standard errors of chance (10 classes)."""
    chance, images = 0.1, args.val_images
    error = (chance * (1 - chance) / images) ** 0.5
    best = [f["best_accuracy"] for f in facts.values() if f["best_accuracy"] is not None]
    if best and max(best) <= chance + 2 * error:
        return (
            f"Reading: every search's best student scores {100 * max(best):.1f}% or less, within "
            f"two standard errors ({100 * error:.1f} points) of chance (10%): at this budget the "
            "proxy does not separate candidates, so the rewards, the efficiency number and the "
            "winning ratio are noise. This run shows the pipeline end to end; it neither "
            "supports nor refutes AKD's claim. A longer proxy (more images and epochs) and a "
            "larger budget are needed, e.g. on a GPU machine."
        )
    return (
        "Reading: compare the differences above with the seed-to-seed spread and the binomial "
        f"s.e. ({100 * error:.1f} points at chance); only larger differences mean anything."
    )


def _gain(value) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def final_text(args, seeds, facts, final, target_ms) -> list[str]:
    """The final-training table, eq. 1's gains and the seed-to-seed spread (markdown lines)."""
    if not final:
        return []
    error = lambda acc: 100 * (acc * (1 - acc) / args.test_images) ** 0.5  # noqa: E731
    latency = {f"{m}-s{s}": f["best_latency_ms"] for (m, s), f in facts.items()}
    rows = [
        "",
        f"Final training ({args.final_epochs} epochs on the first {args.final_train_images} "
        f"training images, test top-1 on the first {args.test_images} test images, ± binomial "
        "s.e.):",
        "",
        "| student | latency (ms) | KD top-1 | CE top-1 | KD - CE (points) | train s (KD+CE) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = sorted({name for name, _ in final}, key=lambda n: (n != "mobilenetv2", n))
    gain = {n: 100 * (final[n, "kd"][0] - final[n, "ce"][0]) for n in names}
    for name in names:
        (kd, kd_s), (ce, ce_s) = final[name, "kd"], final[name, "ce"]
        ms = target_ms if name == "mobilenetv2" else latency[name]
        rows.append(
            f"| {name} | {ms:.3f} | {100 * kd:.1f} ± {error(kd):.1f} | "
            f"{100 * ce:.1f} ± {error(ce):.1f} | {gain[name]:+.1f} | {kd_s + ce_s:.0f} |"
        )
    pairs = []
    for seed in args.final_seeds:
        a, n = f"kd-ppo-s{seed}", f"ce-ppo-s{seed}"
        if a in gain and n in gain:
            pairs.append(f"kd-ppo vs ce-ppo winner, seed {seed}: {gain[a] - gain[n]:+.1f}")
        if a in gain:
            pairs.append(f"kd-ppo winner vs MobileNetV2, seed {seed}: "
                         f"{gain[a] - gain['mobilenetv2']:+.1f}")  # fmt: skip
    rows += ["", f"Eq. 1 relative gain (points): {'; '.join(pairs) or '-'}."]
    spread = []
    for method in METHODS:
        kd = [
            100 * final[f"{method}-s{s}", "kd"][0]
            for s in seeds
            if (f"{method}-s{s}", "kd") in final
        ]
        if len(kd) > 1:
            spread.append(f"{method} {min(kd):.1f}-{max(kd):.1f}")
    if spread:
        rows += ["", f"Seed-to-seed spread of the winners' KD top-1 (%): {'; '.join(spread)}."]
    return rows


def report(args, seeds, facts, loads, baseline, target_ms, final) -> None:
    from pipeline.analysis.stats import candidates_to_reach

    rows = [
        "| method | seed | best reward | best mini-val acc within target | its latency (ms) | "
        "distinct archs | search s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (method, seed), f in facts.items():
        latency = "-" if f["best_latency_ms"] is None else f"{f['best_latency_ms']:.3f}"
        rows.append(
            f"| {method} | {seed} | {f['best_reward']:.4f} | {_pct(f['best_accuracy'])} | "
            f"{latency} | {f['distinct']} | {f['search_s']:.0f} |"
        )
    efficiency, separations = [], []
    for seed in seeds:
        needed = candidates_to_reach(
            facts["kd-ppo", seed]["rewards"], facts["random", seed]["best_reward"]
        )
        efficiency.append(needed)
        cv, ratio = separability(facts["kd-ppo", seed]["run"], facts["ce-ppo", seed]["run"])
        separations.append(
            f"kd-ppo vs ce-ppo, seed {seed}: CV {_pct(cv)}, distance ratio {_ratio(ratio)}"
        )
    for a, b in itertools.combinations(seeds, 2):
        cv, ratio = separability(facts["kd-ppo", a]["run"], facts["kd-ppo", b]["run"])
        separations.append(f"kd-ppo seed {a} vs {b}: CV {_pct(cv)}, ratio {_ratio(ratio)}")
    winning = [winning_text(args, seed) for seed in args.wr_seeds] if args.winning_ratio else []
    reached = [n for n in efficiency if n is not None]
    mean_text = f"mean {statistics.mean(reached):.1f}" if reached else "never reached"
    rows += [
        "",
        f"Search efficiency: candidates kd-ppo needed to reach random's best reward, per seed "
        f"{['not reached' if n is None else n for n in efficiency]} of {args.budget} "
        f"({mean_text} over the {len(reached)} seeds where it did).",
        "",
        "Separability of the last stages (a quarter of the generations, or the last one; "
        "linear discriminant, CV with up to 5 folds, 50% = inseparable): "
        f"{'; '.join(separations)}.",
    ]
    if winning:
        rows += ["", "Winning ratio (AKD Table 4, kd-ppo vs ce-ppo students; wins / pairs, mean "
                 f"eq. 1 gain in points): {'; '.join(winning)}."]  # fmt: skip
    rows += final_text(args, seeds, facts, final, target_ms)
    rows += ["", reading(args, facts)]
    load_text = f"{min(x[0] for x in loads):.1f}-{max(x[0] for x in loads):.1f}"
    notes = (
        f"Budget {args.budget} candidates per search ({args.batch} per generation), seeds "
        f"{args.seeds}; proxy {args.proxy_epochs} epochs on {args.train_images} mini-train / "
        f"{args.val_images} mini-val images of `{Path(args.data).name}`; teacher "
        f"`{args.teacher}`; latency from `{TABLE.name}` (host:tflite, 1 thread, this machine); "
        f"target {target_ms:.3f} ms = MobileNetV2-{args.baseline_width} in the space "
        f"(`{baseline[:40]}...`). "
        f"Analyses: `pearl analyze` reports in `{args.out}/analysis-s*` (and "
        f"`analysis-kd-seeds`). Noise: one mini-val image is {100 / args.val_images:.2f} points; "
        f"the binomial s.e. near 40% accuracy is "
        f"{100 * (0.4 * 0.6 / args.val_images) ** 0.5:.1f} points; proxy peak lr {args.lr}. "
        f"Searches and winning-ratio trainings on the `{args.executor}` executor; "
        f"{args.final_parallel} final training(s) at a time. "
        "Proxy validity: see the section on the rank correlation (`bench/proxy_rank.py`). "
        "1-min load average "
        f"{load_text} (2 cores shared with other jobs)."
    )
    command = " ".join(["nice -n 5 python bench/evidence.py", *sys.argv[1:]])
    table = "\n".join(rows)
    print(table, file=sys.stderr)
    write_section(TITLE, command, table, notes=notes)


if __name__ == "__main__":
    main()
