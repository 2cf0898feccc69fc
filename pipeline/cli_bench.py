"""`pearl bench MODEL`: time a .tflite or .onnx file on a latency backend (host runtimes now;
phones and tables later).  The result goes to stdout, progress to stderr.

Runtimes are imported only when a model is actually timed, so `pearl --help` stays light.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from device_bench.backends import (
    SPEC_SUFFIX,
    VALID_FORMS,
    BackendNotAvailableError,
    backend_from_spec,
    default_spec_for,
)
from device_bench.cache import MeasurementCache, default_cache_path, measure_cached
from device_bench.host import MeasureSettings
from device_bench.measurement import MeasurementError


@click.command("bench")
@click.argument(
    "model_path",
    metavar="MODEL.tflite|MODEL.onnx",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--device",
    "spec",
    default=None,
    help="latency backend: host:tflite or host:onnx (default: chosen by the file's suffix)",
)
@click.option(
    "--runs",
    type=click.IntRange(min=1),
    default=None,
    help=f"most timed invokes (default {MeasureSettings().max_runs})",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=MeasureSettings().threads,
    show_default=True,
    help="runtime threads",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option(
    "--no-cache",
    is_flag=True,
    help=f"always time, never read or write the cache ({default_cache_path()})",
)
def bench_command(model_path: Path, spec, runs, threads, as_json, no_cache) -> None:
    """Time one model file; print median, p90, std (ms) and the number of runs.

    Timing repeats rounds of invokes until the round medians agree within 2% (or a cap on
    runs / seconds is hit).  Results are cached by file hash + device fingerprint + settings.
    """
    if spec is None:
        spec = default_spec_for(model_path.name)
        if spec is None:
            raise click.BadParameter(
                f"cannot tell which runtime times {model_path.name!r}: expected a .tflite or "
                "an .onnx file",
                param_hint="MODEL",
            )
    defaults = MeasureSettings()
    max_runs = runs if runs is not None else defaults.max_runs
    settings = dataclasses.replace(
        defaults, max_runs=max_runs, min_runs=min(defaults.min_runs, max_runs), threads=threads
    )
    try:
        backend = backend_from_spec(spec, settings)
    except BackendNotAvailableError as err:
        raise click.BadParameter(str(err), param_hint="--device") from None
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--device") from None
    suffix = SPEC_SUFFIX.get(backend.spec)
    if suffix and model_path.suffix.lower() != suffix:
        other = default_spec_for(model_path.name)
        hint = f"; use --device {other}" if other else ""
        raise click.UsageError(
            f"--device {backend.spec} times {suffix} files, but {model_path.name} is not one{hint}"
        )

    cache = None if no_cache else MeasurementCache()
    click.echo(f"timing {model_path} on {backend.spec} ({threads} thread(s)) ...", err=True)
    try:
        measurement, cached = measure_cached(backend, model_path, cache)
    except MeasurementError as err:
        raise click.ClickException(str(err)) from None
    if cached:
        click.echo(f"from cache {cache.path} (use --no-cache to time again)", err=True)
    elif measurement.spread > settings.spread_target and measurement.runs >= settings.max_runs:
        click.echo("note: stopped at --runs before the round medians settled", err=True)

    result = {
        **measurement.to_dict(),
        "cached": cached,
        "backend": backend.spec,
        "threads": threads,
        "model": str(model_path),
    }
    if as_json:
        click.echo(json.dumps(result))
        return
    rows = [
        ("model", str(model_path)),
        ("backend", f"{backend.spec}, {threads} thread(s)"),
        ("median", f"{measurement.median_ms:.3f} ms"),
        ("p90", f"{measurement.p90_ms:.3f} ms"),
        ("std", f"{measurement.std_ms:.3f} ms"),
        ("min", f"{measurement.min_ms:.3f} ms"),
        ("runs", str(measurement.runs)),
        ("spread", f"{measurement.spread * 100:.1f} % (round medians, max-min / median)"),
        ("source", measurement.source),
        ("device", measurement.device),
        ("cached", "yes" if cached else "no"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")


__all__ = ["VALID_FORMS", "bench_command"]

if __name__ == "__main__":  # `python -m pipeline.cli_bench ...`, used by bench/host_spread.py
    bench_command()
