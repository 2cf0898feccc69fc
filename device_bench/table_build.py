"""Build a latency table for a search space on a device, and validate a table against whole
networks measured on a device.

Building (`build_table`):

1. enumerate every key reachable in the space at its input size (`latency_tables.keys`);
2. convert the missing single-layer files (`device_bench.layer_files`: chunked conversion, one
   cache shared by all devices);
3. convert `calibrate` random whole networks (`models.export.latency_artifact`, cached by arch);
4. measure layers and networks with the multi-pass protocol (`device_bench.table_measure`),
   resumable from ``OUT.state.json``;
5. fit the correction ``measured ~ scale * sum + offset`` on the calibration networks and
   write the table atomically.  The state file is kept (it is the raw data) next to it.

Validating (`validate_table`): sample N archs from the table's space with a seed, convert and
measure them with the same protocol (resumable when given a state file), and compare.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_bench.backends import backend_from_spec
from device_bench.layer_files import DEFAULT_CHUNK, ensure_layer_files
from device_bench.measurement import fingerprint_id
from device_bench.speed_modes import entry_value
from device_bench.table_measure import (
    DEFAULT_BATCH,
    DEFAULT_PASSES,
    HOST_CLOCK,
    LAYER_SETTINGS,
    NETWORK_SETTINGS,
    combine,
)
from device_bench.table_runs import MeasureRun
from latency_tables.identity import DEFAULT_PRECISION, identity_id, with_precision
from latency_tables.keys import space_keys
from latency_tables.table import Correction, Entry, LatencyTable, fit_correction
from models.arch import Arch
from models.cache_dir import cache_root
from models.files import atomic_write
from models.space import SearchSpace, get_space

# progress(phase, total) -> advance(n) callable
Progress = Callable[[str, int], Callable[[int], None]]


def _no_progress(_phase: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


@dataclass(frozen=True)
class BuildOptions:
    passes: int = DEFAULT_PASSES
    chunk_size: int = DEFAULT_CHUNK
    jobs: int = 1
    calibrate: int = 20
    calibration_seed: int = 1001
    batch: int = DEFAULT_BATCH
    converter: str = "direct"
    networks: str = "litert"
    max_passes: int = DEFAULT_PASSES + 3  # adaptive passes for files not settled yet
    precision: str = DEFAULT_PRECISION  # of the timed layer and network files: fp32|fp16|int8


# how the timed files of an fp16 / int8 table are made (recorded in its header's protocol)
PRECISION_FILES = {
    "fp16": "fp16 weights (ai-edge-quantizer float casting) of the fp32 layer and network files",
    "int8": "static int8 (ai-edge-quantizer static_wi8_ai8) of the fp32 files; layers with int8 "
    "input and output and fixed activation ranges (no calibration); networks with float I/O",
}
REFERENCE_SEED = 4242  # the reference network: the first arch this seed samples
# networks per batch process when only whole networks are timed (validate, adapt): small
# enough that every pass gives several reference timings to tell speed modes apart
NETWORK_BATCH = 20


def reference_network(space: SearchSpace, cache_dir: Path) -> tuple[Arch, Path]:
    """The fixed network timed first in every batch (its time is the batch's speed; see
    `device_bench.speed_modes`), written by the direct writer (fast, deterministic)."""
    arch = sample_archs(space, 1, REFERENCE_SEED)[0]
    return arch, network_files([arch], cache_dir, lambda _n: None, "direct")[arch.encode()]


def mode_values(run: MeasureRun, items: Sequence[str]) -> tuple[dict[str, float], dict]:
    """Each item's value under the speed-mode rule (`speed_modes.entry_value`) and what the
    header records about the modes (`protocol.reference`)."""
    modes = run.modes()
    values, normalised = {}, 0
    for item in items:
        value, scaled = entry_value(run.samples(item), modes)
        values[item] = round(value, 6)
        normalised += scaled
    return values, {**modes.to_dict(), "normalised_entries": normalised}


def sample_archs(space: SearchSpace, n: int, seed: int) -> list[Arch]:
    """`n` archs drawn with `random.Random(seed)` (the same list for the same seed)."""
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


NETWORK_SOURCES = ("litert", "direct")


def network_files(
    archs: Sequence[Arch],
    cache_dir: str | os.PathLike,
    on_done: Callable[[int], None],
    networks: str = "litert",
    precision: str = DEFAULT_PRECISION,
) -> dict[str, Path]:
    """arch string -> whole-network .tflite file of `precision`, cached.

    ``litert``: the real export (`models.export.latency_artifact`, converted in a warm worker,
    ~13-120 s each here depending on load; int8 calibrated).  ``direct``:
    `direct_files.direct_bytes`, the same graph op for op (checked against every real
    conversion in the tests), in ~0.05-0.3 s."""
    from models.export.common import FORMATS, format_at_precision

    if networks not in NETWORK_SOURCES:
        raise ValueError(f"networks must be one of {NETWORK_SOURCES}, got {networks!r}")
    fmt = format_at_precision("tflite", precision)
    files: dict[str, Path] = {}
    if networks == "direct":
        from device_bench.direct_files import direct_bytes
        from device_bench.layer_files import layer_root

        folder = "networks-direct" + ("" if precision == DEFAULT_PRECISION else f"-{precision}")
        root = layer_root(cache_dir) / folder
        for arch in archs:
            path = root / str(arch.input_size) / f"{arch.key()}.tflite"
            if not path.is_file():
                atomic_write(path, direct_bytes(arch, fmt))
            files[arch.encode()] = path
            on_done(1)
        return files
    from models.export.cache import cached_bundle

    missing = []
    for arch in archs:
        bundle = cached_bundle(cache_dir, arch, fmt)
        if (bundle / "metadata.json").is_file():
            files[arch.encode()] = bundle / FORMATS[fmt].filename
            on_done(1)
        else:
            missing.append(arch)
    if missing:
        from models.export.worker import ExportWorker

        with ExportWorker(num_threads=1) as worker:
            for arch in missing:
                files[arch.encode()] = worker.latency_artifact(arch, fmt, cache_dir)
                on_done(1)
    return files


def space_header(space: SearchSpace) -> dict[str, Any]:
    """The space as the table header records it: name, input size, class count, and every
    option that differs from the named space's (so a custom space is rebuilt exactly)."""
    header = {"name": space.name, "input_size": space.input_size, "num_classes": space.num_classes}
    named = get_space(space.name, space.input_size, space.num_classes)
    for name in _SPACE_OPTIONS:
        value = getattr(space, name)
        if value != getattr(named, name):
            header[name] = _jsonable(value)
    if space.layout != named.layout:
        header["layout"] = [space.layout.stem_stride, list(space.layout.block_strides)]
    return header


def space_from_header(header: dict[str, Any]) -> SearchSpace:
    from models.space import StrideLayout

    try:
        space = get_space(header["name"], header["input_size"], header["num_classes"])
        changes = {name: _tupled(header[name]) for name in _SPACE_OPTIONS if name in header}
        if "layout" in header:
            stem, blocks = header["layout"]
            changes["layout"] = StrideLayout(int(stem), tuple(blocks))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"table header 'space' is not a valid search space ({err})") from None
    return dataclasses.replace(space, **changes)


_SPACE_OPTIONS = (
    "stem_channels", "head_channels", "act", "base_blocks", "ops", "kernels", "se_ratios",
    "skips", "width_multipliers", "layer_deltas",
)  # fmt: skip


def _jsonable(value):
    return [_jsonable(v) for v in value] if isinstance(value, tuple) else value


def _tupled(value):
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


def build_table(
    spec: str,
    space: SearchSpace,
    out_path: str | os.PathLike,
    *,
    options: BuildOptions = BuildOptions(),
    cache_dir: str | os.PathLike | None = None,
    progress: Progress = _no_progress,
    log: Callable[[str], None] = lambda _m: None,
) -> LatencyTable:
    started = time.perf_counter()
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
    backend = backend_from_spec(spec, LAYER_SETTINGS)
    fingerprint = with_precision(backend.fingerprint(), options.precision)
    keys = space_keys(space)
    log(
        f"{space.name} at {space.input_size} px: {len(keys)} layer variants (stem, layers, "
        f"head), {options.precision} files"
    )
    advance = progress("converting layers", len(keys))
    files = ensure_layer_files(
        keys,
        cache_dir,
        chunk_size=options.chunk_size,
        jobs=options.jobs,
        converter=options.converter,
        precision=options.precision,
        on_done=advance,
    )
    archs = sample_archs(space, options.calibrate, options.calibration_seed)
    advance = progress("converting calibration networks", len(archs))
    nets = network_files(archs, cache_dir, advance, options.networks, options.precision)
    what = {  # what must match to resume; more --passes extends a finished run
        "space": space_header(space),
        "calibration": [options.calibrate, options.calibration_seed, options.networks],
        "converter": options.converter,
        "host_clock": HOST_CLOCK,
        "layer_settings": LAYER_SETTINGS.to_dict(),
        "network_settings": NETWORK_SETTINGS.to_dict(),
    }
    reference_arch, reference = reference_network(space, cache_dir)
    what["reference"] = reference_arch.encode()
    state_path = Path(str(out_path) + ".state.json")
    run = MeasureRun(state_path, identity_id(fingerprint), what)
    layer_files = {key.encode(): path for key, path in files.items()}
    groups = [(layer_files, LAYER_SETTINGS), (nets, NETWORK_SETTINGS)]
    todo = run.remaining(list(layer_files) + list(nets), options.passes)
    prepare_seconds = time.perf_counter() - started
    advance = progress(f"measuring ({options.passes}+ passes)", todo)
    run.measure(
        spec, groups, options.passes, batch=options.batch, on_progress=advance,
        reference=reference, max_passes=options.max_passes,
    )  # fmt: skip
    values, modes = mode_values(run, [*layer_files, *nets])
    entries = {
        key: Entry(**{**combine(run.measurements(key.encode())), "min_ms": values[key.encode()]})
        for key in keys
    }
    table = LatencyTable(
        entries,
        {
            "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "device_spec": spec,
            "fingerprint": fingerprint,
            "fingerprint_id": fingerprint_id(fingerprint),
            "space": space_header(space),
            "statistic": "min_ms",
            "protocol": {
                "passes": options.passes,
                "host_clock": HOST_CLOCK,
                "calibration_networks": options.networks,
                "order": "shuffled per pass, batches of fresh processes, layers and "
                "calibration networks interleaved",
                "layer_settings": LAYER_SETTINGS.to_dict(),
                "network_settings": NETWORK_SETTINGS.to_dict(),
                "load_avg_1min_median": statistics.median(run.state["load"] or [0.0]),
                "reference": {"arch": reference_arch.encode(), **modes},
                "max_passes": options.max_passes,
                "passes_run": run.pass_count(),
                **(
                    {}
                    if options.precision == DEFAULT_PRECISION
                    else {"files": PRECISION_FILES[options.precision]}
                ),
            },
            # file preparation of the last run + measuring over all runs (resumes included)
            "build_seconds": round(prepare_seconds + run.state.get("seconds", 0.0), 1),
        },
    )
    sums = [table.sum_ms(arch) for arch in archs]
    measured = [values[a.encode()] for a in archs]
    correction = fit_correction(sums, measured)
    correction = Correction(
        correction.scale,
        correction.offset_ms,
        {
            **correction.fit,
            "seed": options.calibration_seed,
            "ratios_measured_over_sum": [
                round(m / s, 4) for m, s in zip(measured, sums, strict=True)
            ],
        },
    )
    table = table.with_correction(correction)
    table.save(out_path)
    log(
        f"wrote {out_path}: {len(entries)} entries, correction scale {correction.scale:.4f} "
        f"offset {correction.offset_ms:.4f} ms (fit RMSPE {correction.fit['fit_rmspe']:.2%})"
    )
    return table


def validate_table(
    table: LatencyTable,
    spec: str,
    n: int,
    seed: int,
    *,
    passes: int = DEFAULT_PASSES,
    cache_dir: str | os.PathLike | None = None,
    state_path: str | os.PathLike | None = None,
    progress: Progress = _no_progress,
    batch: int = NETWORK_BATCH,
    measure: bool = True,
    networks: str = "litert",
    max_passes: int | None = None,
) -> dict[str, Any]:
    """Predict and measure `n` random archs of the table's space (seed `seed`) and report
    ``within_5``, ``within_10`` (shares), ``rmspe``, ``n`` and the worst cases.
    With ``measure=False`` only archs already in the state file are used (a partial report)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
    backend = backend_from_spec(spec, NETWORK_SETTINGS)
    fingerprint = with_precision(backend.fingerprint(), table.precision)
    table.check_fingerprint(fingerprint, spec)
    space = space_from_header(table.space)
    archs = sample_archs(space, n, seed)
    predicted = {a.encode(): table.predict_ms(a) for a in archs}  # missing keys fail early
    reference_arch, reference = reference_network(space, cache_dir)
    what = {
        "space": space_header(space),
        "seed": seed,
        "settings": NETWORK_SETTINGS.to_dict(),
        "networks": networks,
        "host_clock": HOST_CLOCK,
        "reference": reference_arch.encode(),
    }
    run = MeasureRun(state_path, identity_id(fingerprint), what)
    if measure:
        advance = progress("converting networks", len(archs))
        nets = network_files(archs, cache_dir, advance, networks, table.precision)
        todo = run.remaining(list(nets), passes)
        advance = progress(f"measuring ({passes}+ passes)", todo)
        run.measure(
            spec, [(nets, NETWORK_SETTINGS)], passes, batch=batch, on_progress=advance,
            reference=reference, max_passes=max_passes,
        )  # fmt: skip
    done = [a.encode() for a in archs if len(run.measurements(a.encode())) >= passes]
    values, modes = mode_values(run, done) if done else ({}, {})
    rows = []
    for text in done:
        minima = [m.min_ms for m in run.measurements(text)]
        rows.append(
            {
                "arch": text,
                "predicted_ms": predicted[text],
                "measured_ms": values[text],
                "error": predicted[text] / values[text] - 1,
                "pass_spread": (max(minima) - min(minima)) / statistics.median(minima),
            }
        )
    report = accuracy_report(rows, table, spec, seed, passes, run.state["load"])
    report["networks"] = networks
    report["precision"] = table.precision
    report["modes"] = modes
    report["passes_run"] = run.pass_count()
    report["warnings"] = run_warnings(modes, run.state["load"], table)
    return report


def run_warnings(
    modes: dict, loads: Sequence[float], table: LatencyTable, cores: int | None = None
) -> list[str]:
    """What makes a validation (or build) untrustworthy: a loaded machine, a slow speed mode,
    a fast mode that differs from the one the table was built in.  Pure."""
    cores = cores or os.cpu_count() or 1
    warnings = []
    load = statistics.median(loads) if loads else 0.0
    # the measuring process is one runnable job: up to `cores` jobs in all (quiet, or one other
    # single-threaded job on 2 cores) each have a core; more share them and inflate the timings
    if load > cores + 0.5:
        warnings.append(
            f"the machine was loaded (median 1-min load {load:.2f} on {cores} cores: more "
            "runnable jobs than cores, this one included): the timings are not trustworthy; "
            "rerun on a quiet machine"
        )
    if modes.get("slow_ms") is not None:
        warnings.append(
            f"the machine ran in two speed modes (reference {modes['fast_ms']:.3f} ms fast, "
            f"{modes['slow_ms']:.3f} ms slow; {1 - modes['fast_share']:.0%} of batches slow): "
            f"values use the fast mode ({modes.get('normalised_entries', 0)} normalised from "
            "slow batches only)"
        )
    built = (table.header.get("protocol") or {}).get("reference") or {}
    if built.get("fast_ms") and modes.get("fast_ms"):
        ratio = modes["fast_ms"] / built["fast_ms"]
        if abs(ratio - 1) > 0.15:
            warnings.append(
                f"this run's fast mode is {ratio - 1:+.0%} off the table's ({modes['fast_ms']:.3f}"
                f" vs {built['fast_ms']:.3f} ms for the reference network): the device is not "
                "in the state the table was built in"
            )
    return warnings


def accuracy_report(
    rows: list[dict], table: LatencyTable, spec: str, seed: int, passes: int, loads: list
) -> dict[str, Any]:
    errors = [abs(r["error"]) for r in rows]
    count = len(rows)
    worst = sorted(rows, key=lambda r: -abs(r["error"]))[:5]
    return {
        "table": table.name,
        "device": spec,
        "space": table.space,
        "seed": seed,
        "passes": passes,
        "statistic": "min over passes of the fastest invoke",
        "n": count,
        "within_5": sum(e <= 0.05 for e in errors) / count if count else math.nan,
        "within_10": sum(e <= 0.10 for e in errors) / count if count else math.nan,
        "rmspe": math.sqrt(sum(e * e for e in errors) / count) if count else math.nan,
        "mean_error": statistics.fmean(r["error"] for r in rows) if count else math.nan,
        "median_abs_error": statistics.median(errors) if count else math.nan,
        "median_pass_spread": (
            statistics.median(r["pass_spread"] for r in rows) if count else math.nan
        ),
        "load_avg_1min_median": statistics.median(loads) if loads else None,
        "worst": worst,
        "archs": rows,
    }
