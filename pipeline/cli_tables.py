"""`pearl tables build` and `pearl tables validate`: latency lookup tables for a search space.

Results go to stdout (the table path and a summary, or the validation report), progress and
logs to stderr.  torch and the runtimes are imported only when a command runs.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path

import click

from device_bench.adapt_model import DEFAULT_MODEL as DEFAULT_ADAPT_MODEL
from device_bench.adapt_model import MODEL_CHOICES as ADAPT_MODEL_CHOICES
from latency_tables.identity import PRECISIONS
from models.space import SPACE_DEFAULTS

CACHE_OPTION = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where converted layer and network files are kept (shared by all devices; "
    "default: $PEARL_CACHE_DIR, else ~/.cache/pearl)",
)


def _file_maker_option(flag: str, default: str, help: str):
    """--converter / --networks: how .tflite files are made, by the direct TFLite writer
    (`device_bench.layer_writer`) or by litert-torch itself."""
    choices = click.Choice(["direct", "litert"])
    return click.option(flag, type=choices, default=default, show_default=True, help=help)


NETWORKS_OPTION = _file_maker_option(
    "--networks",
    "litert",
    "how whole networks are made: real litert-torch exports, or the direct writer's "
    "identical graphs (seconds instead of minutes each on a loaded machine)",
)
CONVERTER_OPTION = _file_maker_option(
    "--converter",
    "direct",
    "how layer files are made: direct TFLite writer (litert-torch's graph, op for op) "
    "or litert-torch itself",
)


@click.group("tables")
def tables_group() -> None:
    """Build latency lookup tables on a device, and check them against whole networks."""


@contextmanager
def _progress():
    """The pearl progress bar; yields a `Progress` callback for `device_bench`."""
    from pipeline.progress import progress_bar

    bar = progress_bar()

    def phase(description: str, total: int):
        task = bar.add_task(description, total=max(total, 1))
        if total == 0:
            bar.update(task, completed=1)
        return lambda n: bar.advance(task, n)

    with bar:
        yield phase


def _check_spec(spec: str) -> None:
    """Tables are measured from .tflite files: a host:tflite or adb: device."""
    from device_bench.spec import BackendSpec

    try:
        device = BackendSpec.parse(spec)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--device") from None
    if device.artifact_format != "tflite":
        raise click.BadParameter(
            f"{spec} cannot time the .tflite layer and network files a table is measured "
            "from: use host:tflite, adb:SERIAL or adb:HOST:PORT",
            param_hint="--device",
        )


def _output_for(out: Path, spec: str, several: bool) -> Path:
    if not several:
        return out
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)
    return out.with_name(f"{out.stem}.{safe}{out.suffix or '.csv'}")


@tables_group.command("build")
@click.option(
    "--device",
    "specs",
    multiple=True,
    required=True,
    help="device to measure on (host:tflite, adb:SERIAL, ...); repeat for several devices "
    "(one table each, measured one device after the other; layer files are converted once)",
)
@click.option(
    "--space",
    "space_name",
    type=click.Choice(sorted(SPACE_DEFAULTS)),
    required=True,
    help="search space whose layer variants to measure",
)
@click.option("--input", "input_size", type=click.IntRange(min=8), default=None,
              help="input resolution (default: the space's)")  # fmt: skip
@click.option("--classes", "num_classes", type=click.IntRange(min=1), default=None,
              help="class count (default: the space's)")  # fmt: skip
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="table file to write (CSV with a header block)")  # fmt: skip
@click.option("--passes", type=click.IntRange(min=1), default=3, show_default=True,
              help="measurement passes (fresh processes, shuffled order)")  # fmt: skip
@click.option("--max-passes", type=click.IntRange(min=1), default=6, show_default=True,
              help="adaptive: passes for files without 2 agreeing fast-mode timings")  # fmt: skip
@click.option("--calibrate", type=click.IntRange(min=1), default=20, show_default=True,
              help="random whole networks measured to fit the sum correction")  # fmt: skip
@click.option("--calibration-seed", type=int, default=1001, show_default=True)
@CONVERTER_OPTION
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="parallel litert-torch conversion processes")  # fmt: skip
@NETWORKS_OPTION
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32",
              show_default=True, help="time the layers' and networks' fp32, fp16 or int8 files "
              "(the table serves searches with the same latency.precision)")  # fmt: skip
@CACHE_OPTION
def build_command(
    specs, space_name, input_size, num_classes, out, cache_dir, **build_options
) -> None:
    """Measure every layer variant of a search space on a device and write its table.

    Resumable: progress is kept in OUT.state.json (rewritten atomically after every batch);
    run the same command again to continue after an interruption.
    """
    from device_bench.measurement import MeasurementError
    from device_bench.table_build import BuildOptions, build_table
    from models.space import get_space
    from pipeline.lock import LockHeldError, output_lock
    from pipeline.stop import disk_full_message

    for spec in specs:
        _check_spec(spec)
    space = get_space(space_name, input_size, num_classes)
    # --passes, --calibrate, --calibration-seed, --converter, --jobs, --networks, --precision
    options = BuildOptions(**build_options)

    def log(message: str) -> None:
        click.echo(message, err=True)

    for spec in specs:
        path = _output_for(out, spec, len(specs) > 1)
        try:
            with output_lock(path, log), _progress() as progress:
                table = build_table(
                    spec, space, path, options=options, cache_dir=cache_dir,
                    progress=progress, log=log,
                )  # fmt: skip
        except MeasurementError as err:
            raise click.ClickException(f"{spec}: {err}") from None
        except LockHeldError as err:
            raise click.ClickException(str(err)) from None
        except OSError as err:
            full = disk_full_message(err, path, "the same command (finished layers are kept)")
            if full is None:
                raise
            raise click.ClickException(full) from None
        c = table.correction
        click.echo(
            f"{path}\t{spec}\t{table.precision}\t{len(table.entries)} entries\t"
            f"scale {c.scale:.4f}\t"
            f"offset {c.offset_ms:.4f} ms\tfit RMSPE {c.fit.get('fit_rmspe', math.nan):.2%}"
        )


@tables_group.command("validate")
@click.option("--table", "table_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), required=True, help="table file")  # fmt: skip
@click.option("--device", "spec", required=True, help="device the table was built on")
@click.option("--n", "n", type=click.IntRange(min=1), default=50, show_default=True,
              help="random archs of the table's space to measure")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--passes", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--max-passes", type=click.IntRange(min=1), default=5, show_default=True,
              help="adaptive: passes for networks lacking 2 agreeing fast timings")  # fmt: skip
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="keep measurements here and resume from them")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print the report as one JSON object")
@NETWORKS_OPTION
@CACHE_OPTION
def validate_command(
    table_path, spec, n, seed, passes, max_passes, state_path, as_json, networks, cache_dir
) -> None:
    """Measure N random whole networks and compare them with the table's predictions:
    share within +-5% and +-10%, RMSPE, worst cases."""
    from device_bench.measurement import MeasurementError
    from device_bench.table_build import validate_table
    from latency_tables.table import LatencyTable, TableError

    _check_spec(spec)
    try:
        table = LatencyTable.load(table_path)
        if table.upgrade_note:
            click.echo(table.upgrade_note, err=True)
        with _progress() as progress:
            report = validate_table(
                table, spec, n, seed, passes=passes, cache_dir=cache_dir,
                state_path=state_path, progress=progress, networks=networks,
                max_passes=max(max_passes, passes),
            )  # fmt: skip
    except (TableError, MeasurementError) as err:
        raise click.ClickException(str(err)) from None
    for warning in report["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(
        f"{report['n']} {report['precision']} networks: {report['within_5']:.1%} within +-5%, "
        f"{report['within_10']:.1%} within +-10%, RMSPE {report['rmspe']:.2%}, "
        f"mean error {report['mean_error']:+.2%}"
    )
    modes = report["modes"]
    if modes:
        slow = f", slow {modes['slow_ms']:.3f} ms" if modes["slow_ms"] is not None else ""
        click.echo(
            f"speed modes (reference network): fast {modes['fast_ms']:.3f} ms{slow}; "
            f"{modes['fast_share']:.0%} of {modes['batches']} batches fast; "
            f"{report['passes_run']} passes"
        )
    for row in report["worst"]:
        click.echo(
            f"  {row['error']:+.2%}  predicted {row['predicted_ms']:.3f} ms  measured "
            f"{row['measured_ms']:.3f} ms  {row['arch']}"
        )


@tables_group.command("adapt")
@click.option("--from", "source_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), required=True, help="table built on another device")  # fmt: skip
@click.option("--device", "spec", required=True, help="the device to adapt it to")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="adapted table to write")  # fmt: skip
@click.option("--n", "n", type=click.IntRange(min=3), default=25, show_default=True,
              help="random whole networks measured on the device")  # fmt: skip
@click.option("--seed", type=int, default=2024, show_default=True)
@click.option("--passes", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--max-passes", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="precision of the files the new table predicts (the networks timed are "
              "these files); default: the source table's")  # fmt: skip
@click.option("--model", type=click.Choice(ADAPT_MODEL_CHOICES), default=DEFAULT_ADAPT_MODEL,
              show_default=True, help="layers: per op group a scale and a slope in the "
              "layer's resolution, pooling shortcuts apart (needs N >= its coefficients, ~15); "
              "groups: one scale per op group; auto: the one with the lower leave-one-out "
              "error")  # fmt: skip
@NETWORKS_OPTION
@CACHE_OPTION
def adapt_command(
    source_path, spec, out, n, seed, passes, max_passes, precision, model, networks, cache_dir
):
    """Fit a table for DEVICE from a table of another device (or precision) and N whole
    networks measured on DEVICE (a per-layer scale model; minutes instead of a full build).
    Resumable."""
    from device_bench.adapt_model import AdaptError
    from device_bench.measurement import MeasurementError
    from device_bench.table_adapt import adapt_table
    from latency_tables.table import LatencyTable, TableError
    from pipeline.lock import LockHeldError, output_lock

    _check_spec(spec)
    try:
        source = LatencyTable.load(source_path)
        if source.upgrade_note:
            click.echo(source.upgrade_note, err=True)
        with output_lock(out, lambda m: click.echo(m, err=True)), _progress() as progress:
            table, fit = adapt_table(
                source, spec, out, n=n, seed=seed, passes=passes,
                max_passes=max(max_passes, passes), networks=networks, cache_dir=cache_dir,
                progress=progress, precision=precision, model=model,
            )  # fmt: skip
    except (TableError, MeasurementError, LockHeldError, AdaptError) as err:
        raise click.ClickException(str(err)) from None
    coefficients = ", ".join(f"{c} {v:.3f}" for c, v in fit.coefficients.items())
    click.echo(
        f"{out}\t{spec}\t{table.precision}\t{len(table.entries)} entries\tmodel {fit.model.name}: "
        f"{coefficients}\toffset {fit.offset_ms:.4f} ms\tfit RMSPE {fit.rmspe:.2%} on "
        f"{fit.networks} networks"
    )
