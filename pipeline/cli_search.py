"""`pearl search`: the KD-guided architecture search (AKD), resumable after a kill.

    pearl search --config configs/quickstart.toml [--out RUN_DIR] [--set proxy.epochs=3 ...]
    pearl search --resume RUN_DIR [--max-candidates N] [--max-hours H]

Progress goes to stderr; the result (best arch per target, Pareto front, files written) to
stdout, as text or ``--json``.  Torch and the converters are imported only when a search runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipeline.cli_common import default_run_dir, run_folder_options
from pipeline.config import (
    CONFIG_FILE_NAME,
    ConfigError,
    load_config,
    may_change_on_resume,
    parse_overrides,
    with_absolute_paths,
)
from pipeline.registry import CONTROLLERS, LOSSES
from pipeline.run_config import RUN_SECTIONS, RunConfig


def _overrides(options: dict, settings: tuple[str, ...]) -> dict:
    overrides = parse_overrides(settings)
    flags = {
        ("search", "max_candidates"): options.get("max_candidates"),
        ("search", "max_hours"): options.get("max_hours"),
        ("search", "seed"): options.get("seed"),
        ("controller", "name"): options.get("controller"),
        ("proxy", "loss"): options.get("loss"),
        ("latency", "backends"): options.get("latency"),
    }
    for (section, key), value in flags.items():
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    return overrides


@click.command("search")
@run_folder_options(
    config_help="TOML config (see configs/quickstart.toml)",
    resume_help="continue the search in this run folder (after a kill or with a bigger budget)",
    set_example="proxy.epochs=3",
)
@click.option("--max-candidates", type=click.IntRange(min=0), default=None, help="budget")
@click.option("--max-hours", type=click.FloatRange(min=0), default=None, help="budget")
@click.option("--seed", type=click.IntRange(min=0), default=None)
@click.option(
    "--controller",
    type=click.Choice(CONTROLLERS.names),
    default=None,
)
@click.option("--loss", type=click.Choice(LOSSES.names), default=None, help="proxy loss")
@click.option(
    "--latency",
    default=None,
    metavar="SPEC[,SPEC...]",
    help="latency backend chain, best first: adb:SERIAL, table:FILE, host:tflite, host:onnx",
)
def search_command(
    config_path, out_dir, resume_dir, settings, as_json, no_progress, **options
) -> None:
    """Search the student that distils best from the teacher within the latency target."""
    if (config_path is None) == (resume_dir is None):
        raise click.UsageError("give either --config FILE (a new search) or --resume RUN_DIR")
    if resume_dir is not None and out_dir is not None:
        raise click.UsageError("--out is for a new search; --resume continues RUN_DIR in place")
    overrides = _overrides(options, settings)
    try:
        if resume_dir is not None:
            saved = resume_dir / CONFIG_FILE_NAME
            if not saved.is_file():
                raise click.ClickException(
                    f"{resume_dir} has no {CONFIG_FILE_NAME}: not a pearl search run folder"
                )
            changed = {(s, k) for s, values in overrides.items() for k in values}
            fixed = {(s, k) for s, k in changed if not may_change_on_resume(s, k)}
            if fixed:
                names = ", ".join(sorted(f"{s}.{k}" for s, k in fixed))
                raise click.UsageError(
                    f"cannot change {names} when resuming (the stored results depend on them); "
                    "only the budget (--max-candidates, --max-hours), [compute], [ray] and "
                    "search.executor may change"
                )
            config = load_config(saved, overrides)
            run_dir = resume_dir
        else:
            # a `pearl run` config works too: its [train] / [export] sections are not used here
            run_config = load_config(config_path, overrides, RunConfig, RUN_SECTIONS)
            config = with_absolute_paths(run_config.search_config(), config_path.parent)
            run_dir = out_dir or default_run_dir(config_path)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None

    summary = _run(config, run_dir, resume=resume_dir is not None, progress=not no_progress)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(_text(summary))


def _run(config, run_dir: Path, *, resume: bool, progress: bool) -> dict:
    from models.teacher_loading import TeacherError
    from pipeline.data import DataError
    from pipeline.lock import LockHeldError, folder_lock
    from pipeline.search import SearchError

    def log(message: str) -> None:
        click.echo(message, err=True)

    log(f"{'resuming' if resume else 'starting'} search in {run_dir}")
    try:
        with folder_lock(run_dir, log):
            return _search(config, run_dir, resume, progress, log)
    except (DataError, TeacherError, SearchError, LockHeldError) as error:
        raise click.ClickException(str(error)) from None


def _search(config, run_dir: Path, resume: bool, progress: bool, log) -> dict:
    from pipeline.search import Search, build_setup

    setup = build_setup(config, log)
    try:
        search = Search(config, run_dir, setup, resume=resume, log=log, show_progress=progress)
        return search.run()
    finally:
        setup.close()


def _text(summary: dict) -> str:
    cost = summary["cost"]
    lines = [
        f"run folder: {summary['run_dir']}",
        f"candidates: {summary['candidates']} ({summary['distinct_archs']} distinct archs, "
        f"{summary['generations']} generations)",
    ]
    for entry in summary["best"]:
        if entry.get("arch") is None:
            lines.append(f"target {cost} <= {entry['target']:g}: no scored candidate")
            continue
        latency = (
            f", latency {entry['latency_ms']:.3f} ms ({entry['latency_spec']})"
            if entry.get("latency_ms") is not None
            else ""
        )
        where = (
            f"best within {cost} <= {entry['target']:g}"
            if entry["within_target"]
            else f"nothing within {cost} <= {entry['target']:g}; best reward"
        )
        lines.append(
            f"{where}: accuracy "
            f"{100 * entry['accuracy']:.2f}%{latency}, {entry['macs'] / 1e6:.1f}M MACs, "
            f"{entry['params'] / 1e6:.2f}M params, reward {entry['reward']:.4f}"
        )
        lines.append(f"  {entry['arch']}")
    lines.append(f"Pareto front ({len(summary['pareto_front'])} archs):")
    for row in summary["pareto_front"]:
        lines.append(f"  {100 * row['accuracy']:6.2f}%  {cost} {row[cost]:.4g}  {row['key']}")
    lines.append(
        "files: candidates.csv, pareto.csv, pareto.png, best_arch.json, best_arch.txt, "
        "results.sqlite, config.toml"
    )
    return "\n".join(lines)
