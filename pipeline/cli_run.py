"""`pearl run` (search -> final training -> export -> re-timing -> report, resumable) and
`pearl report RUN_DIR`.  Torch and the converters are imported only when a stage runs."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import click

from pipeline.cli_common import check_device, default_run_dir, device_option, run_folder_options
from pipeline.config import CONFIG_FILE_NAME, ConfigError, load_config
from pipeline.config_toml import merge, parse_overrides


@click.command("run")
@run_folder_options(
    config_help="TOML config with the search sections and [train] / [export] "
    "(configs/quickstart.toml)",
    resume_help="continue the run in this folder: finished stages are skipped",
    set_example="train.epochs=3",
)
@device_option(None, "where every stage trains (compute.device; may change on --resume)")
def run_command(config_path, out_dir, resume_dir, settings, as_json, no_progress, device) -> None:
    """Search the student, train it (and a baseline) with KD and CE, export and re-time the
    bundle, and write report.md: one command, resumable stage by stage."""
    from pipeline.run import run_all
    from pipeline.run_config import RUN_SECTIONS, RunConfig, run_config_with_absolute_paths

    if (config_path is None) == (resume_dir is None):
        raise click.UsageError("give either --config FILE (a new run) or --resume RUN_DIR")
    if resume_dir is not None and (out_dir is not None or settings):
        raise click.UsageError(
            "--resume continues RUN_DIR with its saved config; drop --out/--set (--device may "
            "change)"
        )
    # [compute] is outside the config hash, so --device may also change on --resume
    device_override = {"compute": {"device": device}} if device else {}
    try:
        if resume_dir is not None:
            run_dir = resume_dir
            config = load_config(
                run_dir / CONFIG_FILE_NAME, device_override, RunConfig, RUN_SECTIONS
            )
        else:
            overrides = merge(parse_overrides(settings), device_override)
            config = load_config(config_path, overrides, RunConfig, RUN_SECTIONS)
            config = run_config_with_absolute_paths(config, config_path.parent)
            run_dir = out_dir or default_run_dir(config_path)
        check_device(config.compute.device)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None

    def log(message: str) -> None:
        click.echo(message, err=True)

    summary = _run_stages(run_all, config, run_dir, resume_dir is not None, log, not no_progress)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"run folder: {summary['run_dir']}")
    for label, per_loss in summary["final"].items():
        scores = ", ".join(f"{loss} {100 * top1:.2f}%" for loss, top1 in per_loss.items() if top1)
        click.echo(f"{label}: test top-1 {scores}")
    click.echo(f"bundles: {', '.join(summary['bundles'].values())}")
    click.echo(f"report: {summary['report']}")


def _run_stages(run_all, config, run_dir, resume: bool, log, progress) -> dict:
    """`run_all` in the locked run folder; a failure is a clear message (and a run that failed
    before writing anything leaves no folder)."""
    from models.teacher_loading import TeacherError
    from pipeline.data import DataError
    from pipeline.layout import RunLayout
    from pipeline.lock import LockHeldError, folder_lock
    from pipeline.run import RunError, discard_unstarted_run, prepare_run_dir
    from pipeline.search import SearchError
    from pipeline.stop import StopRequested, disk_full_message, stop_on_signals
    from pipeline.store import StoreError, store_error_message
    from pipeline.training import TrainingError

    try:
        with stop_on_signals(), folder_lock(run_dir, log):
            try:
                prepare_run_dir(config, run_dir, resume=resume)
            except RunError as error:  # refused: nothing was written
                raise click.ClickException(str(error)) from None
            return run_all(config, run_dir, log=log, progress=progress)
    except LockHeldError as error:
        raise click.ClickException(str(error)) from None
    except StopRequested as stop:
        log(f"{stop}; finished stages are kept: continue with `pearl run --resume {run_dir}`")
        raise click.exceptions.Exit(stop.exit_status) from None
    except (OSError, sqlite3.Error) as error:  # a full disk, or the search's store broke
        store = RunLayout(run_dir).search.store
        full = disk_full_message(error, store, f"`pearl run --resume {run_dir}`")
        if full is not None:
            raise click.ClickException(full) from None
        if isinstance(error, OSError):
            raise
        raise click.ClickException(store_error_message(store, error)) from None
    except (RunError, SearchError, DataError, TeacherError, TrainingError, StoreError) as error:
        if discard_unstarted_run(run_dir):
            raise click.ClickException(
                f"{error}\n(nothing was run; {run_dir} was removed)"
            ) from None
        raise click.ClickException(
            f"{error}\n(finished stages are kept: continue with `pearl run --resume {run_dir}`)"
        ) from None


@click.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report_command(run_dir: Path) -> None:
    """Write RUN_DIR/report.md with figures (a `pearl run` or `pearl search` folder)."""
    from pipeline.run_report import ReportError, write_run_report
    from pipeline.store import StoreError

    try:
        click.echo(write_run_report(run_dir))
    except (ReportError, StoreError) as error:
        raise click.ClickException(str(error)) from None
