"""Ensemble teachers on the command line: ``pearl teacher train --seeds`` (the members, the
spec file, the statistics; `pipeline.ensemble_training`) and ``pearl teacher stats SPEC``
(member / ensemble / oracle accuracy and the KDAS Table 5 shares; `pipeline.ensemble_stats`)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli_common import check_device, device_option
from pipeline.cli_train import _clear_errors, _command_line, _data_info, _load_data, _settings
from pipeline.lock import folder_lock


def ray_config(address: str, gpus_per_member: float, opts):
    """The `RayConfig` of ``--executor ray``: each member holds ``--threads`` CPUs (default 1)
    and `gpus_per_member` GPUs."""
    from pipeline.config import ConfigError, RayConfig

    try:
        return RayConfig(
            address=address,
            cpus_per_candidate=opts["threads"] or 1,
            gpus_per_candidate=gpus_per_member,
        )
    except ConfigError as error:
        raise click.UsageError(str(error)) from None


def train_ensemble(model: str, folder: Path, data_path: Path, seeds_text: str, ray, opts) -> None:
    """The body of ``pearl teacher train --seeds``; `ray`: None (in-process) or the
    `RayConfig` of the Ray executor (`ray_config`)."""
    from models.ensembles import SPEC_FILE, write_ensemble
    from pipeline.config import ComputeConfig
    from pipeline.ensemble_training import (
        check_resumable,
        member_checkpoint,
        member_jobs,
        parse_seeds,
    )
    from pipeline.final_jobs import FinalTrainData

    try:
        seeds = parse_seeds(seeds_text)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--seeds") from None
    if opts["seed"] != 0:
        raise click.UsageError("give either --seed (one teacher) or --seeds (an ensemble)")
    if folder.suffix in (".pt", ".json"):
        raise click.BadParameter(
            f"with --seeds, -o is a folder (it gets the members and {SPEC_FILE}), not {folder}",
            param_hint="-o",
        )
    check_device(opts["device"])  # before the lock makes any folder
    command = _command_line()
    with folder_lock(folder):
        train_arrays, test_arrays = _load_data(data_path, opts["train_images"], opts["test_images"])
        jobs = member_jobs(
            _settings(model, "ce", 1.0, 0.9, 0.2, opts),
            seeds,
            folder,
            {"data": _data_info(data_path, opts), "teacher": None, "command": command},
            threads=opts["threads"],
            compute=ComputeConfig(device=opts["device"], amp=opts["amp"]),
        )
        check_resumable(jobs, opts["resume"])
        data = FinalTrainData(train_arrays, test_arrays)
        results = _members_or_error(jobs, data, ray, not opts["quiet"])
        if not all(metrics.get("finished") for metrics in results.values()):
            raise click.ClickException("not every member finished; rerun with --resume")
        spec = folder / SPEC_FILE
        write_ensemble(spec, [member_checkpoint(folder, s) for s in seeds], command=command)
        table = _statistics(str(spec), data_path, test_arrays, "test", opts["device"])
    click.echo(table)
    click.echo(f"ensemble of {len(seeds)} x {model} -> {spec}")


def _members_or_error(jobs, data, ray_config, progress: bool) -> dict:
    from pipeline.ensemble_training import train_members
    from pipeline.ray_executor import RayExecutorError

    def log(line: str) -> None:
        click.echo(line, err=True)

    try:
        return train_members(jobs, data, ray_config=ray_config, progress=progress, log=log)
    except RayExecutorError as error:
        raise click.ClickException(str(error)) from None


def _statistics(spec: str, data_path: Path, arrays, split: str, device: str) -> str:
    """Compute the statistics of teacher `spec` on `arrays`; write them beside the spec when it
    is one ensemble file; the markdown tables (and where they went) to print."""
    from models.ensembles import is_ensemble_file, member_specs
    from pipeline.device import resolve_device
    from pipeline.ensemble_stats import (
        ensemble_statistics,
        member_logits,
        statistics_markdown,
        write_statistics,
    )
    from pipeline.training import input_statistics

    mean, std = input_statistics(arrays)
    logits = member_logits(spec, arrays, mean=mean, std=std, device=str(resolve_device(device)))
    stats = ensemble_statistics(logits, arrays.labels)
    stats.update(spec=spec, data=str(data_path), split=split)
    names = [Path(member).name for member in member_specs(spec)]
    table = statistics_markdown(stats, names)
    if is_ensemble_file(spec) and "," not in spec:
        json_path, md_path = write_statistics(spec, stats, names)
        table += f"\n\n(written to {json_path} and {md_path})"
    else:
        table += "\n\n(printed only: the files are written beside a single ensemble spec file)"
    return table


@click.command("stats")
@click.argument("spec", metavar="TEACHER_SPEC")
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    required=True,
    help="dataset the members were trained for",
)
@click.option(
    "--split",
    type=click.Choice(["test", "train"]),
    default="test",
    show_default=True,
    help="KDAS's Table 5 counts training images; accuracies are usually quoted on test",
)
@click.option("--images", type=click.IntRange(min=1), default=None, help="only the first N images")
@device_option("auto", "where to compute the logits")
@_clear_errors
def teacher_stats_command(spec: str, data_path: Path, split: str, images, device: str) -> None:
    """Each member's top-1, the ensemble's (logit average), its oracle accuracy (an image
    counts when any member gets it right) and the share of images by number of correct members
    (KDAS Table 5).  For an ensemble spec file, also written beside it as NAME.stats.json and
    NAME.stats.md."""
    check_device(device)
    train_arrays, test_arrays = _load_data(data_path, images, images)
    arrays = test_arrays if split == "test" else train_arrays
    click.echo(_statistics(spec, data_path, arrays, split, device))
