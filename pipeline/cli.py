"""The `pearl` command.  Each command group lives in its own `pipeline/cli_*.py` module; this
file only assembles them, so `pearl --help` imports no heavy library."""

from __future__ import annotations

import click

from models.quiet import set_quiet
from pipeline.cli_analyze import analyze_command
from pipeline.cli_arch import arch_group
from pipeline.cli_bench import bench_command
from pipeline.cli_common import plain_warnings
from pipeline.cli_devices import devices_command
from pipeline.cli_ensemble import teacher_stats_command
from pipeline.cli_export import export_command
from pipeline.cli_run import report_command, run_command
from pipeline.cli_search import search_command
from pipeline.cli_tables import tables_group
from pipeline.cli_train import teacher_group, train_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pearl")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="show what the libraries underneath print (TensorFlow/LiteRT logs, oneDNN, torch "
    "deprecations), hidden by default",
)
def cli(verbose: bool) -> None:
    """Pearl: find, distil and ship the student network that learns best from your teacher
    and fits your phone's latency budget."""
    set_quiet(not verbose)
    plain_warnings()


cli.add_command(analyze_command)
cli.add_command(arch_group)
cli.add_command(bench_command)
cli.add_command(devices_command)
cli.add_command(export_command)
cli.add_command(report_command)
cli.add_command(run_command)
cli.add_command(search_command)
cli.add_command(tables_group)
teacher_group.add_command(teacher_stats_command)
cli.add_command(teacher_group)
cli.add_command(train_command)


def main() -> None:
    cli()
