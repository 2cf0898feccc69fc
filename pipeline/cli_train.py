"""`pearl teacher train` and `pearl train`: full-schedule training of a teacher or of a final
student (see `pipeline.training`).  torch is imported only when a command runs."""

from __future__ import annotations

import functools
import shlex
import shutil
from pathlib import Path

import click

from models.files import atomic_path
from pipeline.cli_common import check_device, device_option
from pipeline.lock import folder_lock
from pipeline.registry import LOSSES

_LOSS_HELP = "ce: cross-entropy; kd: Hinton KD; od: oracle KD for an ensemble teacher (KDAS eq. 4)"
# options of both commands that are `pipeline.train_settings.TrainRecipe` fields by that name
_RECIPE_OPTIONS = (
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "schedule",
    "seed",
)


def _output_option(help_text: str):
    return click.option(
        "-o", "--output", type=click.Path(path_type=Path), required=True, help=help_text
    )


def _common_options(function):
    """Options both training commands take."""
    options = [
        click.option(
            "--data",
            "data_path",
            type=click.Path(path_type=Path),
            required=True,
            help="dataset: .npz, cifar-10-batches-py folder, or train/+test/ image folders",
        ),
        click.option("--epochs", type=click.IntRange(min=1), required=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True),
        click.option(
            "--lr",
            type=click.FloatRange(min=0, min_open=True),
            default=0.1,
            show_default=True,
            help="peak learning rate (after warm-up)",
        ),
        click.option(
            "--wd",
            "weight_decay",
            type=click.FloatRange(min=0),
            default=5e-4,
            show_default=True,
            help="weight decay",
        ),
        click.option(
            "--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.9, show_default=True
        ),
        click.option("--nesterov/--no-nesterov", default=True, show_default=True),
        click.option("--warmup-epochs", type=click.IntRange(min=0), default=1, show_default=True),
        click.option(
            "--schedule",
            type=click.Choice(["cosine", "step"]),
            default="cosine",
            show_default=True,
            help="step: lr x0.1 at 50% and 75% of the epochs",
        ),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True),
        click.option(
            "--threads",
            type=click.IntRange(min=1),
            default=None,
            help="torch threads [default: all usable cores; on a machine busy with other "
            "jobs 1 is often several times faster]",
        ),
        click.option(
            "--train-images",
            type=click.IntRange(min=1),
            default=None,
            help="use only the first N training images (quick runs)",
        ),
        click.option(
            "--test-images",
            type=click.IntRange(min=1),
            default=None,
            help="evaluate on only the first N test images",
        ),
        click.option(
            "--resume",
            is_flag=True,
            help="continue the run in the output folder (starts it if there is none)",
        ),
        device_option("auto", "where to train: auto picks cuda, then mps, then cpu"),
        click.option(
            "--amp/--no-amp",
            default=True,
            show_default=True,
            help="mixed precision on a CUDA GPU (bf16 where supported, else fp16); never on CPU",
        ),
        click.option("--quiet", is_flag=True, help="no progress bar"),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _command_line() -> str:
    """The running command with every option that differs from its default, spelled out
    (what reproduces the run; --resume and --quiet do not change the result and are left out)."""
    context = click.get_current_context()
    words = ["pearl", *context.command_path.split()[1:]]
    options = []
    for param in context.command.params:
        value = context.params.get(param.name)
        if isinstance(param, click.Argument):
            words.append(str(value))
        elif param.name in ("resume", "quiet") or value is None or value == param.default:
            continue
        elif getattr(param, "is_flag", False):
            flag = param.opts[-1] if value else (param.secondary_opts or [""])[-1]
            options += [flag] if flag else []
        else:
            options += [max(param.opts, key=len), str(value)]
    return shlex.join(words + options)


def _load_data(data_path: Path, train_images: int | None, test_images: int | None):
    import numpy as np

    from pipeline.data import load_dataset

    train, test = load_dataset(data_path)
    if train_images is not None:
        train = train.take(np.arange(min(train_images, len(train))))
    if test_images is not None:
        test = test.take(np.arange(min(test_images, len(test))))
    return train, test


def _clear_errors(function):
    """Bad data, teacher or settings -> a one-line click error instead of a traceback."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        from models.teacher_loading import TeacherError
        from pipeline.data import DataError
        from pipeline.device import DeviceError
        from pipeline.lock import LockHeldError
        from pipeline.stop import disk_full_message
        from pipeline.training import TrainingError

        try:
            return function(*args, **kwargs)
        except (DataError, TeacherError, TrainingError, DeviceError, LockHeldError) as error:
            raise click.ClickException(str(error)) from None
        except OSError as error:
            full = disk_full_message(error, Path(), "the same command and --resume")
            if full is None:
                raise
            raise click.ClickException(full) from None

    return wrapper


def _settings(model, loss, temperature, alpha, dropout, opts):
    """The `TrainSettings` the command's options describe."""
    from pipeline.training import TrainSettings

    return TrainSettings(
        **{name: opts[name] for name in _RECIPE_OPTIONS},
        warmup_epochs=min(opts["warmup_epochs"], opts["epochs"]),
        model=model,
        loss=loss,
        temperature=temperature,
        alpha=alpha,
        dropout=dropout,
    )


def _data_info(data_path: Path, opts) -> dict:
    """What the run records about its data (compared on resume)."""
    data_info = {"path": str(data_path)}
    if opts["train_images"] or opts["test_images"]:
        data_info.update(train_limit=opts["train_images"], test_limit=opts["test_images"])
    return data_info


def _run(model, output_dir, data_path, loss, teacher_spec, temperature, alpha, dropout, opts):
    from pipeline.config import ComputeConfig
    from pipeline.training import input_statistics, load_teacher_for, train

    settings = _settings(model, loss, temperature, alpha, dropout, opts)
    train_arrays, test_arrays = _load_data(data_path, opts["train_images"], opts["test_images"])
    teacher = None
    if teacher_spec:
        teacher = load_teacher_for(teacher_spec, train_arrays, *input_statistics(train_arrays))
    data_info = _data_info(data_path, opts)
    return train(
        settings,
        train_arrays,
        test_arrays,
        output_dir,
        teacher=teacher,
        resume=opts["resume"],
        run_info={"data": data_info, "teacher": teacher_spec, "command": _command_line()},
        progress=not opts["quiet"],
        threads=opts["threads"],
        compute=ComputeConfig(device=opts["device"], amp=opts["amp"]),
    )


def _summary(metrics: dict) -> str:
    line = (
        f"{metrics['model'] if '|' not in metrics['model'] else 'arch'}: test top-1 "
        f"{100 * metrics['top1']:.2f}%, top-5 {100 * metrics['top5']:.2f}% after "
        f"{metrics['epochs_done']} epochs, {metrics['train_images_per_s']:.0f} training images/s"
    )
    if metrics.get("teacher"):
        line += f"; teacher top-1 {100 * metrics['teacher']['top1']:.2f}% on the same split"
    return line


@click.group("teacher")
def teacher_group() -> None:
    """Train teachers to distil from."""


@teacher_group.command("train")
@click.option(
    "--model",
    "model",
    required=True,
    help="resnet20/32/44/56/110 (CIFAR ResNets), densenet<L>_<k> (DenseNet-BC, e.g. "
    "densenet40_12), a baseline name or an arch string",
)
@_output_option(
    "checkpoint to write (the run's state lives in OUTPUT.run/); with --seeds, a folder for "
    "the members and ensemble.json"
)
@click.option(
    "--seeds",
    default=None,
    metavar="S,S,...",
    help="train an ensemble: one member per seed (e.g. 0,1,2,3,4 or 0-4), written with "
    "OUTPUT/ensemble.json and the ensemble's statistics",
)
@click.option(
    "--executor",
    type=click.Choice(["inprocess", "ray"]),
    default="inprocess",
    show_default=True,
    help="with --seeds: ray trains the members as parallel Ray tasks",
)
@click.option(
    "--ray-address",
    default="",
    help='with --executor ray: "" starts a local Ray; "auto", HOST:PORT or ray://HOST:PORT '
    "joins a cluster",
)
@click.option(
    "--gpus-per-member",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="with --executor ray: GPUs each member's task holds (fractions share a GPU)",
)
@_common_options
@_clear_errors
def teacher_train_command(
    model: str, output: Path, data_path: Path, seeds, executor, ray_address, gpus_per_member, **opts
) -> None:
    """Train a teacher network with cross-entropy and write it as a Pearl checkpoint, or with
    --seeds an ensemble of independently seeded copies and its spec file."""
    if executor != "ray" and (ray_address or gpus_per_member):
        raise click.UsageError("--ray-address and --gpus-per-member go with --executor ray")
    if seeds is not None:
        from pipeline.cli_ensemble import ray_config, train_ensemble

        ray = ray_config(ray_address, gpus_per_member, opts) if executor == "ray" else None
        return train_ensemble(model, output, data_path, seeds, ray, opts)
    if executor != "inprocess":
        raise click.UsageError("--executor ray runs the members of an ensemble: add --seeds")
    run_dir = Path(f"{output}.run")
    check_device(opts["device"])  # before the lock makes any folder
    with folder_lock(run_dir):
        metrics = _run(model, run_dir, data_path, "ce", None, 1.0, 0.9, 0.2, opts)
        if metrics["finished"]:
            from pipeline.training import MODEL_FILE

            with atomic_path(output) as temporary:
                shutil.copyfile(run_dir / MODEL_FILE, temporary)
    click.echo(f"{_summary(metrics)} -> {output}")


@click.command("train")
@click.argument("arch_text", metavar="ARCH_OR_BASELINE")
@click.option(
    "--teacher",
    "teacher_spec",
    default=None,
    help="checkpoint path, builtin:NAME, torchvision:NAME=WEIGHTS, an ensemble spec file "
    "(DIR/ensemble.json of `pearl teacher train --seeds`), or a comma-separated ensemble of "
    "these (needed for kd and od)",
)
@click.option(
    "--loss",
    type=click.Choice(LOSSES.names),
    default="kd",
    show_default=True,
    help=_LOSS_HELP,
)
@click.option(
    "--T",
    "temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="KD temperature",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1),
    default=0.9,
    show_default=True,
    help="weight of the KD term (1 - alpha weights the label term)",
)
@click.option(
    "--dropout",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.2,
    show_default=True,
    help="classifier dropout",
)
@_output_option("run folder: model.pt, metrics.json, config.json, state.pt")
@_common_options
@_clear_errors
def train_command(
    arch_text, teacher_spec, loss, temperature, alpha, dropout, output, data_path, **opts
) -> None:
    """Train a student (baseline name or arch string; input size and classes come from the
    data) on the full schedule, with KD from a teacher or plain cross-entropy."""
    if LOSSES[loss].needs_teacher and not teacher_spec:
        raise click.UsageError(f"--loss {loss} needs --teacher (or use --loss ce)")
    check_device(opts["device"])  # before the lock makes any folder
    with folder_lock(output):
        metrics = _run(
            arch_text, output, data_path, loss, teacher_spec, temperature, alpha, dropout, opts
        )
    click.echo(f"{_summary(metrics)} -> {output / 'metrics.json'}")
