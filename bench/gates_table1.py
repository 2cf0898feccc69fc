"""The pattern of Gu & Tresp's Table 1 on CIFAR-10: students found inside one teacher by gates
under {NP, KD} search losses x {unweighted, FLOPs-weighted, latency-weighted} L1 terms, each
extracted at the same MAC target, then trained from scratch with KD (tau = 4, lambda = 0.1 on
the CE term: alpha = 0.9) and with CE alone, same epochs; plus a hand-shrunk teacher of about
the same MACs as the baseline.

Columns: gate steps to reach the target, the student's MACs and parameters, test top-1 after
each final training (binomial standard error of one run on the test images) and its latency on
this machine's LiteRT (host:tflite, 1 thread, through the search's latency chain: the fastest
timed run of an fp32 .tflite with initial weights).  Everything goes through Pearl's own code:
`pipeline.gates.engine.GateEngine` (with `pipeline.gates.latency` for the latency weights),
`pipeline.training.train` and `pipeline.latency_chain.LatencyChain`.  Resumable: each search
writes ``--work/search-LOSS-WEIGHTING.json`` and each training its folder; rerun the same
command after a kill.  Writes its table to BENCHMARKS.md.

    PYTHONPATH=. python bench/gates_table1.py --data ../shared/data/cifar10_small.npz \\
        --epochs 2 --train-images 1000 --test-images 1000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import publish  # noqa: E402
from bench.kdas_table2 import load_limited  # noqa: E402

TITLE = "Gu & Tresp Table 1 pattern: gate-searched students, NP vs KD, weightings"
# ResNet-20 shrunk by hand (every width ~0.7x): 19.5 MMACs, the quickstart's baseline
HAND_SHRUNK = "resnetw:in32_cls10|w11p0_11.11.11|w22p5_22.22.22|w45p11_45.45.45"


def parse_args(argv=None) -> argparse.Namespace:
    data_default = Path(os.environ.get("PEARL_DATA", "../shared/data")) / "cifar10_small.npz"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=data_default)
    parser.add_argument("--teacher", default="builtin:resnet20_cifar10")
    parser.add_argument("--target-mmacs", type=float, default=20.0)
    parser.add_argument("--weightings", default="uniform,flops,latency")
    parser.add_argument("--lambda2", type=float, default=1.0, help="as the quickstart")
    parser.add_argument("--max-steps", type=int, default=600, help="gate step budget")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of every final training")
    parser.add_argument("--train-images", type=int, default=None)
    parser.add_argument("--test-images", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--baseline", default=HAND_SHRUNK, help="hand-shrunk teacher")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("bench_runs/gates_table1"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args(argv)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def search_student(args, loss, weighting, teacher_parts, train, chain) -> dict:
    """Gate search until the network left has at most --target-mmacs MACs (or the budget is
    spent); its result is stored in the work folder and read back on a rerun."""
    import torch

    from models.files import atomic_write_json, read_json
    from pipeline.batches import BatchLoader
    from pipeline.gates.config import GatesConfig
    from pipeline.gates.engine import GateEngine

    path = args.work / f"search-{loss}-{weighting}.json"
    done = read_json(path)
    if done:
        return done
    teacher, payload, network = teacher_parts
    settings = GatesConfig(
        target_mmacs=args.target_mmacs,
        loss=loss,
        weighting=weighting,
        lambda2=args.lambda2,
        batch_size=args.batch_size,
        max_steps=args.max_steps,
    )
    torch.manual_seed(0)
    engine = GateEngine(network, teacher.state_dict(), settings)
    if weighting == "latency":
        engine.use_latency(latency_fit(args, engine.helper, chain))
    loader = BatchLoader(
        train,
        args.batch_size,
        train=True,
        seed=0,
        mean=payload.get("mean") or (0.4914, 0.4822, 0.4465),
        std=payload.get("std") or (0.2470, 0.2435, 0.2616),
    )
    target = int(args.target_mmacs * 1e6)
    started = time.perf_counter()
    engine.advance(loader, teacher, args.max_steps, lambda: engine.shrunk().cost().macs <= target)
    point = engine.record()
    result = {
        "loss": loss,
        "weighting": weighting,
        "arch": engine.shrunk().encode(),
        "steps": point.step,
        "reached": point.macs <= target,
        "seconds": round(time.perf_counter() - started, 1),
    }
    _log(f"search {loss}/{weighting}: {point.macs / 1e6:.2f} MMACs at step {point.step}")
    atomic_write_json(path, result)
    return result


def latency_fit(args, helper, chain):
    """The per-group latency fit of the teacher (`pipeline.gates.latency`), timed once."""
    from pipeline.gates.latency import stored_fit

    path = args.work / "latency_fit.json"
    return stored_fit(path, helper, lambda network: chain.measure(network).latency_ms, _log)


def train_student(args, label, arch, loss, teacher, train, test) -> dict:
    from pipeline.training import STATE_FILE, TrainSettings
    from pipeline.training import train as train_model

    settings = TrainSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_epochs=0,
        seed=0,
        model=arch,
        loss=loss,
        temperature=4.0,
        alpha=0.9,
    )
    folder = args.work / f"train-{label}-{loss}"
    _log(f"training {label} with {loss} -> {folder}")
    return train_model(
        settings,
        train,
        test,
        folder,
        teacher=teacher if loss != "ce" else None,
        resume=(folder / STATE_FILE).is_file(),
        run_info={"command": "bench/gates_table1.py", "teacher": args.teacher},
        progress=False,
        threads=args.threads,
    )


def main(argv=None) -> None:
    from models.network import decode_network
    from models.quiet import set_quiet
    from models.teacher_loading import load_checkpoint, resolve_checkpoint_path
    from pipeline.gates.method import width_network
    from pipeline.latency_chain import LatencyChain
    from pipeline.report_text import binomial_se_pp, markdown_table
    from pipeline.training import input_statistics, load_teacher_for

    args = parse_args(argv)
    set_quiet(True)  # the converter's start-up noise, as `pearl` hides it
    started, load_before = time.time(), os.getloadavg()
    train, test = load_limited(args)
    args.work.mkdir(parents=True, exist_ok=True)
    teacher, payload = load_checkpoint(resolve_checkpoint_path(args.teacher))
    network = width_network(payload["model"], payload["input_size"], payload["num_classes"])
    chain = LatencyChain(["host:tflite"], export_cache_dir=args.work / "exports", threads=1)
    weightings = [w for w in args.weightings.split(",") if w]
    searches = [
        search_student(args, loss, w, (teacher.eval(), payload, network), train, chain)
        for loss in ("np", "kd")
        for w in weightings
    ]
    rows = [(f"search {s['loss'].upper()}, {s['weighting']}", s) for s in searches]
    rows.append(("hand-shrunk teacher", {"arch": args.baseline, "steps": None}))
    rows.insert(0, ("teacher (not retrained)", {"arch": network.encode(), "steps": None}))
    mean, std = input_statistics(train)
    kd_teacher = load_teacher_for(args.teacher, train, mean, std)
    table = []
    for label, found in rows:
        arch = found["arch"]
        student = decode_network(arch)
        cost = student.cost()
        latency = chain.measure(student).latency_ms
        slug = label.split(" (")[0].replace(" ", "-").replace(",", "")
        trained = (
            {"ce": None, "kd": None}
            if label.startswith("teacher")
            else {
                loss: train_student(args, slug, arch, loss, kd_teacher, train, test)
                for loss in ("kd", "ce")
            }
        )

        def top1(result) -> str:
            if result is None:
                return "-"
            value = 100 * result["top1"]
            return f"{value:.2f} ± {binomial_se_pp(value / 100, len(test)):.2f}"

        steps = found["steps"]
        reached = found.get("reached", True)
        table.append(
            (
                label,
                "-" if steps is None else f"{steps}" + ("" if reached else " (not reached)"),
                f"{cost.macs / 1e6:.2f}",
                f"{cost.params / 1e3:.1f}k",
                top1(trained["kd"]),
                top1(trained["ce"]),
                f"{latency:.3f}",
            )
        )
        _log(f"{label}: {table[-1]}")
    header = (
        "student", "gate steps", "MMACs", "params", "top-1 % KD ± s.e.", "top-1 % CE ± s.e.",
        "host:tflite ms",
    )  # fmt: skip
    load_after = os.getloadavg()
    notes = [
        f"Teacher `{args.teacher}` ({network.cost().macs / 1e6:.2f} MMACs). Data `{args.data}`: "
        f"{len(train)} training images (gate steps and final training) and {len(test)} test "
        f"images. Gate search: target {args.target_mmacs} MMACs, eta 0.01, lambda2 "
        f"{args.lambda2} (1000x the paper's, as the quickstart), tau 4, batch {args.batch_size}, "
        f"at most {args.max_steps} steps, from the teacher's weights. Final training from "
        f"scratch, {args.epochs} epochs (batch {args.batch_size}, lr {args.lr}, cosine), KD at "
        "tau = 4, alpha = 0.9 (lambda = 0.1 on CE), CE alone; seed 0, one run per cell.",
        "Latency: fp32 .tflite with initial weights, LiteRT on this machine, 1 thread, the "
        "fastest timed run (the latency chain's ranking number). Latency weights: "
        "`pipeline.gates.latency` (each gate group thinned by half, ms per channel), "
        f"`{args.work / 'latency_fit.json'}`.",
        f"Load average (1/5/15 min) before {tuple(round(v, 2) for v in load_before)}, after "
        f"{tuple(round(v, 2) for v in load_after)}: the machine was shared, timings are "
        f"loaded-machine timings. Wall time {time.time() - started:.0f} s (a rerun reuses "
        "finished searches and trainings).",
    ]
    publish(TITLE, markdown_table(header, table), "\n".join(notes), write=not args.no_write)


if __name__ == "__main__":
    main()
