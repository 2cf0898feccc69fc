"""`pearl search`: the KD-guided architecture search (AKD), resumable after a kill.

    pearl search --config configs/quickstart.toml [--out RUN_DIR] [--set proxy.epochs=3 ...]
    pearl search --resume RUN_DIR [--max-candidates N] [--max-hours H]

Progress goes to stderr; the result (best arch per target, Pareto front, files written) to
stdout, as text or ``--json``.  Torch and the converters are imported only when a search runs.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import click

from pipeline.cli_common import check_device, default_run_dir, device_option, run_folder_options
from pipeline.config import CONFIG_FILE_NAME, SECTIONS, ConfigError, load_config, load_sections
from pipeline.config_hash import may_change_on_resume
from pipeline.config_paths import with_absolute_paths
from pipeline.config_toml import merge, parse_overrides, read_toml
from pipeline.registry import CONTROLLERS, LOSSES
from pipeline.run_config import RUN_SECTIONS
from pipeline.winners import limits_text


def _search_part(config_path: Path, overrides: dict):
    """The search sections of a config file; a `pearl run` config works too: its [train] and
    [export] sections are for the later stages, not read here (a CE-only search needs no
    teacher even when [train] would want one)."""
    raw = read_toml(config_path)
    for section in set(RUN_SECTIONS) - set(SECTIONS):
        raw.pop(section, None)
    return load_sections(merge(raw, overrides))


def _overrides(options: dict, settings: tuple[str, ...]) -> dict:
    overrides = parse_overrides(settings)
    flags = {
        ("search", "max_candidates"): options.get("max_candidates"),
        ("search", "max_hours"): options.get("max_hours"),
        ("search", "seed"): options.get("seed"),
        ("controller", "name"): options.get("controller"),
        ("proxy", "loss"): options.get("loss"),
        ("latency", "backends"): options.get("latency"),
        ("compute", "device"): options.get("device"),
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
@device_option(None, "where candidates train (compute.device; may change on --resume)")
@click.option(
    "--repair",
    "repair_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="check RUN_DIR's results store in full, rebuild it from evaluations.jsonl if it is "
    "damaged (saying what was lost), then resume (--resume does this when the store is "
    "unreadable)",
)
def search_command(
    config_path, out_dir, resume_dir, repair_dir, settings, as_json, no_progress, **options
) -> None:
    """Search the student that distils best from the teacher within the latency target."""
    if repair_dir is not None and resume_dir is not None:
        raise click.UsageError("--repair RUN_DIR resumes RUN_DIR after the repair; drop --resume")
    resume_dir = resume_dir or repair_dir
    if (config_path is None) == (resume_dir is None):
        raise click.UsageError("give either --config FILE (a new search) or --resume RUN_DIR")
    if resume_dir is not None and out_dir is not None:
        raise click.UsageError("--out is for a new search; --resume continues RUN_DIR in place")
    overrides = _overrides(options, settings)
    try:
        if resume_dir is not None:
            config, run_dir = _resume_config(resume_dir, overrides), resume_dir
        else:
            config = with_absolute_paths(_search_part(config_path, overrides), config_path.parent)
            run_dir = out_dir or default_run_dir(config_path)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    check_device(config.compute.device)

    mode = "repair" if repair_dir else "resume" if resume_dir else "new"
    summary = _run(config, run_dir, mode=mode, progress=not no_progress)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(_text(summary))


def _resume_config(resume_dir: Path, overrides: dict):
    """The saved config of `resume_dir` with the overrides a resume may change."""
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
    return load_config(saved, overrides)


def _run(config, run_dir: Path, *, mode: str, progress: bool) -> dict:
    """The search in the locked run folder (`mode`: new, resume or repair); every failure is a
    clear message, never a traceback."""
    from models.teacher_loading import TeacherError
    from pipeline.data import DataError
    from pipeline.layout import SearchLayout
    from pipeline.lock import LockHeldError, folder_lock
    from pipeline.search import SearchError
    from pipeline.stop import StopRequested, disk_full_message, stop_on_signals
    from pipeline.store import StoreError, store_error_message

    def log(message: str) -> None:
        click.echo(message, err=True)

    log(f"{'starting' if mode == 'new' else 'resuming'} search in {run_dir}")
    try:
        with stop_on_signals(), folder_lock(run_dir, log):
            return _search(config, run_dir, mode, progress, log)
    except StopRequested as stop:
        resume = f"continue with `pearl search --resume {run_dir}`"
        if not SearchLayout(run_dir).store.is_file():
            resume = "nothing was stored yet: start the search again"
        log(f"{stop} (the write in progress was finished); {resume}")
        raise click.exceptions.Exit(stop.exit_status) from None
    except (DataError, TeacherError, SearchError, LockHeldError, StoreError) as error:
        raise click.ClickException(str(error)) from None
    except (OSError, sqlite3.Error) as error:  # a full disk, or the store broke meanwhile
        store = SearchLayout(run_dir).store
        full = disk_full_message(error, store, f"`pearl search --resume {run_dir}`")
        if full is not None:
            raise click.ClickException(full) from None
        if isinstance(error, OSError):
            raise
        raise click.ClickException(store_error_message(store, error)) from None


def _search(config, run_dir: Path, mode: str, progress: bool, log) -> dict:
    from pipeline.layout import SearchLayout
    from pipeline.repair import open_store
    from pipeline.search import Search, build_setup

    if mode == "repair":  # a full check now; the search below opens the repaired store
        log(f"checking {SearchLayout(run_dir).store} in full ...")
        open_store(SearchLayout(run_dir), log, full=True).close()
    setup = build_setup(config, log)
    try:
        resume = mode != "new"
        search = Search(config, run_dir, setup, resume=resume, log=log, show_progress=progress)
        with search:
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
        if "within_memory" in entry:  # memory budgets (KDAS's M, reward.max_memory_mb)
            if entry["within_memory"]:
                where += f" and {limits_text(entry)}"
            else:
                where += f" (no arch has {limits_text(entry)}: budget left out)"
        memory = entry.get("memory_mb")
        memory = "" if memory is None else f", {memory:.2f} MB memory ({entry['memory_source']})"
        lines.append(
            f"{where}: accuracy "
            f"{100 * entry['accuracy']:.2f}%{latency}, {entry['macs'] / 1e6:.1f}M MACs, "
            f"{entry['params'] / 1e6:.2f}M params{memory}, reward {entry['reward']:.4f}"
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
