"""The pattern of KDAS's Table 2 (Kang et al., AAAI 2020) on CIFAR-10: an ensemble of N
independently trained backbones as the teacher; the backbone trained with cross-entropy, with KD
from the ensemble (logit average) and with oracle KD; a hand-made deeper ResNet of about twice
the backbone's parameters with oracle KD; and, when `--searched` names one, the KDAS-searched
network (<= 2x memory) with oracle KD.  Every student row trains for the same epochs, with the
same recipe, on the same images; KD and OD use KDAS's T = 3, lambda = 0 (alpha = 1).

Columns: test top-1 (mean over student seeds; binomial standard error of one run on the test
images; the range over seeds when there are several), parameters, and latency of the fp32
.tflite on this machine's LiteRT (host:tflite, 1 thread, median).  The teacher's member,
ensemble and oracle accuracy come first.  Everything trains through `pipeline.training` into
`--work` (resumable: rerun the same command after a kill).  Writes its table to BENCHMARKS.md.

    PYTHONPATH=. python bench/kdas_table2.py --data ../shared/data/cifar10_small.npz \\
        --epochs 3 --members 3 --train-images 2000 --test-images 1000
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import write_section  # noqa: E402

TITLE = "KDAS Table 2 pattern: ensemble teacher, KD vs oracle KD, deeper and searched students"


def parse_args(argv=None) -> argparse.Namespace:
    data_default = Path(os.environ.get("PEARL_DATA", "../shared/data")) / "cifar10_small.npz"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=data_default)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of every student row")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="default: --epochs")
    parser.add_argument("--members", type=int, default=5, help="ensemble size (KDAS: 5)")
    parser.add_argument("--teacher", default=None, help="an existing teacher spec instead")
    parser.add_argument("--backbone", default="resnet20")
    parser.add_argument("--deeper", default="resnet32", help="hand-made network of ~2x memory")
    parser.add_argument(
        "--searched",
        default=None,
        metavar="ARCH_OR_RUN_DIR",
        help="the KDAS-searched network: an arch string, or a run folder (its first winner)",
    )
    parser.add_argument("--seeds", default="0", help="student seeds, comma-separated")
    parser.add_argument("--train-images", type=int, default=None)
    parser.add_argument("--test-images", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("bench_runs/kdas_table2"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args(argv)


def searched_arch(text: str) -> str:
    """An arch string as given, or the first winner of a `pearl run` folder."""
    from models.files import read_json
    from pipeline.layout import RunLayout

    if not Path(text).is_dir():
        return text
    winners = read_json(RunLayout(Path(text)).winners) or []
    archs = [w["arch"] for w in winners if w.get("arch")]
    if not archs:
        raise SystemExit(f"--searched {text}: no winners.json with an arch in that run folder")
    return archs[0]


def recipe(args, *, model: str, loss: str, seed: int, epochs: int):
    from pipeline.losses import KDAS_ALPHA, KDAS_TEMPERATURE
    from pipeline.training import TrainSettings

    return TrainSettings(
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_epochs=min(1, epochs - 1),
        seed=seed,
        model=model,
        loss=loss,
        temperature=KDAS_TEMPERATURE,
        alpha=KDAS_ALPHA,
    )


def run_info(args) -> dict:
    return {
        "data": {
            "path": str(args.data),
            "train_limit": args.train_images,
            "test_limit": args.test_images,
        },
        "command": "bench/kdas_table2.py",
    }


def teacher_spec(args, train, test) -> str:
    """The ensemble: trained here (members seeded 100, 101, ...) unless --teacher gives one;
    its statistics written beside it."""
    from models.ensembles import write_ensemble
    from pipeline.ensemble_training import member_checkpoint, member_jobs, train_members
    from pipeline.final_jobs import FinalTrainData

    if args.teacher:
        return args.teacher
    folder = args.work / "teacher"
    seeds = list(range(100, 100 + args.members))
    epochs = args.teacher_epochs or args.epochs
    settings = recipe(args, model=args.backbone, loss="ce", seed=0, epochs=epochs)
    jobs = member_jobs(
        settings, seeds, folder, {**run_info(args), "teacher": None}, threads=args.threads
    )
    train_members(jobs, FinalTrainData(train, test), progress=False, log=_log)
    spec = folder / "ensemble.json"
    write_ensemble(spec, [member_checkpoint(folder, s) for s in seeds], command="kdas_table2")
    return str(spec)


def _slug(model: str) -> str:
    """A file-name-safe label: the network's name, or ``searched`` for an arch string."""
    return model if model.replace("_", "").replace(".", "").isalnum() else "searched"


def _cell(model: str) -> str:
    """The network's table cell: an arch string's pipes escaped (a bare one splits the row),
    a long one cut (the notes give it whole)."""
    shown = model if len(model) < 40 else f"{model[:37]}..."
    return "`" + shown.replace("|", "\\|") + "`"


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def train_row(args, label, model, loss, seed, teacher, train, test) -> dict:
    from pipeline.training import STATE_FILE
    from pipeline.training import train as train_model

    folder = args.work / f"{label}-{loss}-seed{seed}"
    _log(f"{label} with {loss}, seed {seed} -> {folder}")
    return train_model(
        recipe(args, model=model, loss=loss, seed=seed, epochs=args.epochs),
        train,
        test,
        folder,
        teacher=teacher if loss != "ce" else None,
        resume=(folder / STATE_FILE).is_file(),
        run_info={**run_info(args), "teacher": args.teacher_spec if loss != "ce" else None},
        progress=False,
        threads=args.threads,
    )


def host_latency_ms(model_name: str, input_size: int, num_classes: int, folder: Path) -> float:
    """Median latency of the fp32 .tflite of the network (initial weights: latency does not
    depend on them) on host:tflite, 1 thread."""
    from device_bench.backends import backend_from_spec
    from device_bench.host import MeasureSettings
    from models.export.tflite import convert_fp32
    from models.files import atomic_write
    from models.teacher_loading import build_model

    path = folder / f"{_slug(model_name)}.tflite"
    if not path.is_file():
        network = build_model(model_name, num_classes=num_classes, input_size=input_size).eval()
        atomic_write(path, convert_fp32(network, input_size))
    return backend_from_spec("host:tflite", MeasureSettings(threads=1)).measure(path).median_ms


def main(argv=None) -> None:
    import statistics

    from models.ensembles import member_specs
    from models.quiet import set_quiet
    from pipeline.ensemble_stats import ensemble_statistics, member_logits
    from pipeline.report_ensemble import statistics_markdown
    from pipeline.report_text import binomial_se_pp, markdown_table
    from pipeline.training import input_statistics, load_teacher_for

    args = parse_args(argv)
    set_quiet(True)  # the converter's start-up noise, as `pearl` hides it
    started, load_before = time.time(), os.getloadavg()
    train, test = load_limited(args)
    mean, std = input_statistics(train)
    args.work.mkdir(parents=True, exist_ok=True)
    args.teacher_spec = teacher_spec(args, train, test)
    size, classes = int(train.images.shape[1]), train.num_classes
    teacher = load_teacher_for(args.teacher_spec, train, mean, std)
    stats = ensemble_statistics(
        member_logits(args.teacher_spec, test, mean=mean, std=std), test.labels
    )

    rows = [
        ("backbone", args.backbone, "ce"),
        ("backbone", args.backbone, "kd"),
        ("backbone", args.backbone, "od"),
        ("hand-made deeper", args.deeper, "od"),
    ]
    if args.searched:
        rows.append(("KDAS-searched", searched_arch(args.searched), "od"))
    seeds = [int(s) for s in args.seeds.split(",")]
    table = []
    for label, model, loss in rows:
        runs = [
            train_row(args, _slug(model), model, loss, seed, teacher, train, test) for seed in seeds
        ]
        top1s = [100 * run["top1"] for run in runs]
        mean_top1 = statistics.mean(top1s)
        spread = f" (range {min(top1s):.2f}-{max(top1s):.2f})" if len(top1s) > 1 else ""
        latency = host_latency_ms(model, size, classes, args.work)
        table.append(
            (
                label,
                _cell(model),
                loss.upper(),
                f"{mean_top1:.2f} ± {binomial_se_pp(mean_top1 / 100, len(test)):.2f}{spread}",
                f"{runs[0]['params'] / 1e6:.3f}M",
                f"{latency:.3f}",
            )
        )
        _log(f"{label} {model[:40]} {loss}: top-1 {mean_top1:.2f}%, {latency:.3f} ms")

    header = ("row", "network", "loss", "test top-1 % ± s.e.", "params", "host:tflite ms")
    load_after = os.getloadavg()
    notes = [
        f"Data `{args.data}`: {len(train)} training and {len(test)} test images; every student "
        f"row {args.epochs} epochs (batch {args.batch_size}, lr {args.lr}, cosine, KD/OD at "
        f"T = 3, alpha = 1); student seeds: {args.seeds}; {args.threads} torch thread(s).",
        f"Teacher `{args.teacher_spec}`: {stats['members']} members, "
        + (
            "given with --teacher:"
            if args.teacher
            else f"{args.backbone} trained here for {args.teacher_epochs or args.epochs} epochs "
            "each (seeds 100, 101, ...), same recipe, cross-entropy:"
        ),
        "",
        statistics_markdown(stats, [Path(m).name for m in member_specs(args.teacher_spec)]),
        "",
        "Latency: fp32 .tflite, LiteRT on this machine, 1 thread, median of the timed runs.",
        f"Load average (1/5/15 min) before {tuple(round(v, 2) for v in load_before)}, after "
        f"{tuple(round(v, 2) for v in load_after)}: the machine was shared, timings are "
        f"loaded-machine timings. Wall time {time.time() - started:.0f} s.",
    ]
    if args.searched:
        notes.append(f"KDAS-searched network (from `--searched {args.searched}`): `{rows[-1][1]}`.")
    else:
        notes.append(
            "The KDAS-searched row is left out: no `--searched ARCH_OR_RUN_DIR` was given "
            "(a `pearl run` folder of a KDAS search, e.g. configs/kdas_quickstart.toml)."
        )
    markdown = markdown_table(header, table)
    print(markdown)
    print("\n".join(notes))
    if not args.no_write:
        command = shlex.join(
            ["PYTHONPATH=.", "python", "bench/kdas_table2.py", *(argv or sys.argv[1:])]
        )
        write_section(TITLE, command, markdown, notes="\n".join(notes))


def load_limited(args):
    import numpy as np

    from pipeline.data import load_dataset

    train, test = load_dataset(args.data)
    if args.train_images:
        train = train.take(np.arange(min(args.train_images, len(train))))
    if args.test_images:
        test = test.take(np.arange(min(args.test_images, len(test))))
    return train, test


if __name__ == "__main__":
    main()
