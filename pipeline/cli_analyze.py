"""`pearl analyze RUN_DIR... --out DIR`: AKD's analyses over search folders
(`pipeline.analysis`)."""

from __future__ import annotations

from pathlib import Path

import click


def _latency_range(_context, _param, value):
    if value is None:
        return None
    try:
        low, high = (float(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not LO,HI (two numbers in ms, e.g. 1.0,2.5)"
        ) from None
    if not 0 <= low < high:
        raise click.BadParameter(f"{value!r}: need 0 <= LO < HI")
    return low, high


@click.command("analyze")
@click.argument(
    "run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path)
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="folder for analysis.md, figures/ and the CSVs (outside the run folders)",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="name of each run, in order (repeat once per RUN_DIR; default: the folder names)",
)
@click.option(
    "--stages",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="equal slices of the generations",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=2),
    default=100,
    show_default=True,
    help="students per run in the operator-probability comparison (Fig. 8)",
)
@click.option(
    "--latency-range",
    metavar="LO,HI",
    callback=_latency_range,
    help="only students with LO <= latency <= HI ms in Fig. 8 (default: all)",
)
@click.option(
    "--winning-ratio",
    "winning_per_stage",
    type=click.IntRange(min=0),
    default=0,
    help="train N students per stage of the first (KD-reward) and second (CE-reward) "
    "RUN_DIR with KD and with CE; Table 4's winning ratio (resumable)",
)
@click.option(
    "--epochs",
    "winning_epochs",
    type=click.IntRange(min=1),
    default=None,
    help="epochs of those trainings (default: the KD search's proxy.epochs)",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="which students --winning-ratio samples"
)
@click.option("--no-progress", is_flag=True, help="no progress bar")
def analyze_command(
    run_dirs,
    out_dir,
    labels,
    stages,
    top_k,
    latency_range,
    winning_per_stage,
    winning_epochs,
    seed,
    no_progress,
) -> None:
    """Compare searches as AKD does (Figs. 4-8, Table 4): write OUT/analysis.md with figures
    and CSVs.  RUN_DIRs: `pearl search` or `pearl run` folders of one search space."""
    from models.teacher_loading import TeacherError
    from pipeline.analysis.report import write_analysis
    from pipeline.analysis.runs import AnalysisError
    from pipeline.data import DataError
    from pipeline.search_setup import SearchError
    from pipeline.store import StoreError

    try:
        path = write_analysis(
            run_dirs,
            out_dir,
            labels=labels,
            stages=stages,
            top_k=top_k,
            latency_range=latency_range,
            winning_per_stage=winning_per_stage,
            winning_epochs=winning_epochs,
            seed=seed,
            progress=not no_progress,
            log=lambda message: click.echo(message, err=True),
        )
    except (AnalysisError, StoreError, DataError, SearchError, TeacherError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(path)
