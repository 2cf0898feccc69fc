"""`pearl bench MODEL|ARCH`: time a .tflite or .onnx file, or an architecture (exported first),
on a latency backend: this machine (host:tflite, host:onnx) or a phone (adb:SERIAL,
adb:HOST:PORT).  The result goes to stdout, progress to stderr.

Runtimes, adb-shell and the exporter are imported only when used, so `pearl --help` stays light.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import click

from device_bench.backends import (
    VALID_FORMS,
    BackendNotAvailableError,
    BackendSpec,
    backend_from_spec,
)
from device_bench.cache import MeasurementCache, default_cache_path, measure_cached
from device_bench.host import MeasureSettings
from device_bench.measurement import MeasurementError
from models.cache_dir import ARTIFACTS_DIR, cache_root
from models.export.common import FORMATS

BENCHMARK_MODEL_ENV = "PEARL_BENCHMARK_MODEL"  # same name as device_bench.phone's


def _artifact_dir() -> Path:
    return cache_root() / ARTIFACTS_DIR


def _export_arch(text: str, fmt: str, input_size, num_classes) -> Path:
    """Export an arch string or baseline name once (initialisation weights) and return the
    cached file (`models.export.latency_artifact`)."""
    from models.baselines import resolve_arch

    try:
        arch = resolve_arch(text, input_size, num_classes)
    except ValueError as err:
        raise click.BadParameter(
            f"{err}. MODEL must be an existing .tflite/.onnx file, a baseline name or an arch "
            "string",
            param_hint="MODEL",
        ) from None
    from models.export import ExportError, latency_artifact

    click.echo(f"exporting {arch.key()} as {fmt} (cached in {_artifact_dir()}) ...", err=True)
    try:
        return latency_artifact(arch, fmt, _artifact_dir())
    except ExportError as err:
        raise click.ClickException(f"export of {text[:80]} failed: {err}") from None


@click.command("bench")
@click.argument("model", metavar="MODEL.tflite|MODEL.onnx|ARCH")
@click.option(
    "--device",
    "spec",
    default=None,
    help="host:tflite, host:onnx, adb:SERIAL or adb:HOST:PORT (default: host, by file suffix)",
)
@click.option(
    "--runs",
    type=click.IntRange(min=1),
    default=None,
    help=f"host: most timed invokes (default {MeasureSettings().max_runs}); phone: "
    "benchmark_model --num_runs per invocation (default 50)",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=MeasureSettings().threads,
    show_default=True,
    help="runtime threads (phone: pinned to as many big cores)",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(tuple(FORMATS)),
    default=None,
    help="file to export for an ARCH (default: onnx for host:onnx, else tflite)",
)
@click.option("--input", "input_size", type=int, default=None, help="ARCH: input size (baselines)")
@click.option("--classes", "num_classes", type=int, default=None, help="ARCH: classes (baselines)")
@click.option(
    "--benchmark-model",
    "benchmark_model",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=BENCHMARK_MODEL_ENV,
    default=None,
    help=f"phone: TFLite's benchmark_model binary for the phone's ABI (or ${BENCHMARK_MODEL_ENV})",
)
@click.option("--gpu", is_flag=True, help="phone: run with benchmark_model's GPU delegate")
@click.option(
    "--op-profile",
    is_flag=True,
    help="phone: also run benchmark_model --enable_op_profiling=true (XNNPACK off) and print "
    "the time of each layer of the arch (stem, layers, head) and of each op type",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option(
    "--no-cache",
    is_flag=True,
    help=f"always time, never read or write the cache ({default_cache_path()})",
)
def bench_command(
    model,
    spec,
    runs,
    threads,
    fmt,
    input_size,
    num_classes,
    benchmark_model,
    gpu,
    op_profile,
    as_json,
    no_cache,
) -> None:
    """Time one model; print median, p90, std and min (ms) and the number of runs.

    MODEL is a .tflite/.onnx file, or an architecture string / baseline name, which is exported
    first (once; cached).  On the host, timing repeats rounds of invokes until the round
    medians agree within 2% (or a cap is hit); on a phone, benchmark_model runs pinned to the
    big cores until its runs agree.  Results are cached by file hash + device fingerprint +
    settings.
    """
    model_path, device = _model_and_device(model, spec, fmt, input_size, num_classes)
    settings = _settings(device, runs, threads, gpu)
    options = {}
    if device.is_phone:
        options = {
            "benchmark_model": benchmark_model,
            "log": lambda message: click.echo(message, err=True),
        }
    try:
        backend = backend_from_spec(device, settings, **options)
    except (BackendNotAvailableError, ValueError) as err:
        raise click.BadParameter(str(err), param_hint="--device") from None
    except MeasurementError as err:
        raise click.ClickException(str(err)) from None
    suffix = device.file_suffix
    if suffix and model_path.suffix.lower() != suffix:
        other = BackendSpec.for_file(model_path.name)
        hint = f"; use --device {other}" if other else ""
        raise click.UsageError(
            f"--device {backend.spec} times {suffix} files, but {model_path.name} is not one{hint}"
        )

    if op_profile and not device.is_phone:
        raise click.UsageError(
            "--op-profile needs a phone (--device adb:...): it runs benchmark_model's operator "
            "profiler"
        )
    cache = None if no_cache else MeasurementCache()
    click.echo(f"timing {model_path} on {backend.spec} ({threads} thread(s)) ...", err=True)
    profile = None
    try:
        measurement, cached = measure_cached(backend, model_path, cache)
        if op_profile:
            profile = _op_profile(backend, model_path)
    except MeasurementError as err:
        raise click.ClickException(str(err)) from None
    finally:
        close = getattr(backend, "close", None)
        if close is not None:
            close()
    if cached:
        click.echo(f"from cache {cache.path} (use --no-cache to time again)", err=True)
    elif not device.is_phone and (
        measurement.spread > settings.spread_target and measurement.runs >= settings.max_runs
    ):
        click.echo("note: stopped at --runs before the round medians settled", err=True)
    result = {
        **measurement.to_dict(),
        "cached": cached,
        "backend": backend.spec,
        "threads": threads,
        "model": str(model_path),
    }
    if profile is not None:
        result["op_profile"] = profile
    if as_json:
        click.echo(json.dumps(result))
        return
    _print_measurement(result, device.is_phone)
    if profile is not None:
        click.echo("")
        click.echo(profile["text"])


def _op_profile(backend, model_path: Path) -> dict:
    """Profile `model_path` op by op on the phone and sum the ops per layer of its arch
    (the arch comes from the export's metadata.json; without one, per op type only)."""
    from device_bench.op_layers import format_layer_table, layer_times
    from device_bench.table_backend import arch_of_file

    click.echo("profiling operators (benchmark_model --enable_op_profiling=true) ...", err=True)
    measurement, profile = backend.op_profile(model_path)
    by_type = [dataclasses.asdict(row) for row in profile.by_type]
    out = {"profiled_avg_ms": profile.total_avg_ms, "by_type": by_type, "layers": None}
    lines = [f"operator profile (XNNPACK off): {profile.total_avg_ms:.3f} ms summed over ops"]
    try:
        arch = arch_of_file(model_path)
    except MeasurementError as err:
        lines.append(f"no per-layer table: {err}")
    else:
        try:
            rows = layer_times(profile, arch)
        except ValueError as err:
            lines.append(f"no per-layer table: {err}")
        else:
            out["layers"] = [dataclasses.asdict(row) for row in rows]
            lines.append(format_layer_table(rows))
    lines.append("")
    lines.append(f"{'op type':<32} {'count':>5} {'avg ms':>8} {'share':>7}")
    for row in profile.by_type:
        lines.append(f"{row.node_type:<32} {row.count:>5} {row.avg_ms:>8.3f} {row.percent:>6.2f}%")
    out["text"] = "\n".join(lines)
    out["peak_memory_mb"] = measurement.peak_memory_mb
    return out


def _model_and_device(model: str, spec, fmt, input_size, num_classes):
    """The file to time (an ARCH is exported first) and the backend spec that times it."""
    model_path = Path(model)
    if not model_path.is_file():
        if model_path.suffix.lower() in (".tflite", ".onnx") or os.sep in model:
            raise click.BadParameter(f"file {model} does not exist", param_hint="MODEL")
        if fmt is None:
            fmt = "onnx" if spec and _device(spec).artifact_format == "onnx" else "tflite"
        model_path = _export_arch(model, fmt, input_size, num_classes)
    if spec is not None:
        return model_path, _device(spec)
    device = BackendSpec.for_file(model_path.name)
    if device is None:
        raise click.BadParameter(
            f"cannot tell which runtime times {model_path.name!r}: expected a .tflite or "
            "an .onnx file",
            param_hint="MODEL",
        )
    return model_path, device


def _settings(device: BackendSpec, runs, threads, gpu):
    if device.is_phone:
        return _phone_settings(runs, threads, gpu)
    if gpu:
        raise click.UsageError("--gpu is for phones (--device adb:...)")
    defaults = MeasureSettings()
    max_runs = runs if runs is not None else defaults.max_runs
    return dataclasses.replace(
        defaults, max_runs=max_runs, min_runs=min(defaults.min_runs, max_runs), threads=threads
    )


def _print_measurement(result: dict, is_phone: bool) -> None:
    spread_what = "run medians" if is_phone else "round medians"
    rows = [
        ("model", result["model"]),
        ("backend", f"{result['backend']}, {result['threads']} thread(s)"),
        ("median", f"{result['median_ms']:.3f} ms"),
        ("p90", f"{result['p90_ms']:.3f} ms" + (" (estimated)" if is_phone else "")),
        ("std", f"{result['std_ms']:.3f} ms"),
        ("min", f"{result['min_ms']:.3f} ms"),
        ("runs", str(result["runs"])),
        ("spread", f"{result['spread'] * 100:.1f} % ({spread_what}, max-min / median)"),
        ("source", result["source"]),
        ("device", result["device"]),
        ("cached", "yes" if result["cached"] else "no"),
    ]
    if result.get("peak_memory_mb") is not None:
        rows.insert(-3, ("memory", f"{result['peak_memory_mb']:.1f} MB (benchmark_model)"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")


def _device(spec: str) -> BackendSpec:
    try:
        return BackendSpec.parse(spec)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--device") from None


def _phone_settings(runs, threads, gpu):
    from device_bench.phone import PhoneSettings

    base = PhoneSettings()
    num_runs = runs if runs is not None else base.run.num_runs
    run = dataclasses.replace(base.run, threads=threads, use_gpu=gpu, num_runs=num_runs)
    return dataclasses.replace(base, run=run)


__all__ = ["VALID_FORMS", "bench_command"]

if __name__ == "__main__":  # `python -m pipeline.cli_bench ...`, used by bench/host_spread.py
    bench_command()
