"""Few-shot transfer of a latency table to another device (`pearl tables adapt`).

A full build times ~2,400 layers; a device that differs from the table's by its CPU, runtime
version or threads mostly differs by how fast each *kind* of op runs.  So: time N whole random
networks of the table's space on the new device (the validation protocol: shuffled passes of
fresh processes, the reference network, fast-mode values), and fit how much each source entry
is scaled there (`device_bench.adapt_model`: ``layers``, a scale and a slope in the layer's
resolution per op group, pooling shortcuts apart; or ``groups``, one scale per op group; by
default whichever has the lower leave-one-out error on the N networks) plus an offset, in
relative error, ridge-regularised towards one common scale.  The new table is the
source with every entry multiplied by its fitted scale and the offset as its correction; its
header names the new device, and ``adapted`` records the source, N, the seed, the model, its
coefficients and the fit error.

The target may time files of another precision than the source's (``precision``: an fp32
table adapted to int8 files is another op profile on the same CPU): the N networks are then
that precision's files and the new table's fingerprint carries it.

`adapted_table` is pure; `adapt_table` measures.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from device_bench.adapt_model import (
    AUTO,
    DEFAULT_MODEL,
    MIN_SCALE,
    MODELS,
    Fit,
    check_networks,
    fit_best,
    network_columns,
)
from latency_tables.table import Correction, LatencyTable


def adapted_table(source: LatencyTable, fit: Fit, header: Mapping[str, Any]) -> LatencyTable:
    """`source` with each entry's times multiplied by its fitted scale (`Fit.entry_scale`),
    the fit's offset as the correction, and `header` (the new device) over the source's
    header.  A normal table: it predicts what the fit predicts (where no scale is clipped)."""
    entries = {}
    for key, entry in source.entries.items():
        scale = fit.entry_scale(key)
        entries[key] = dataclasses.replace(
            entry,
            min_ms=round(entry.min_ms * scale, 6),
            median_ms=round(entry.median_ms * scale, 6),
            p90_ms=round(entry.p90_ms * scale, 6),
            std_ms=round(entry.std_ms * scale, 6),
        )
    correction = Correction(
        1.0,
        fit.offset_ms,
        {"model": f"adapt model {fit.model.name!r} folded into entries + offset"},
    )
    merged = {**source.header, **header, "correction": correction.to_dict()}
    merged.pop("upgraded_from", None)
    return LatencyTable(entries, merged)


def adapt_table(
    source: LatencyTable,
    spec: str,
    out_path: str | os.PathLike,
    *,
    n: int = 25,
    seed: int = 2024,
    passes: int = 3,
    max_passes: int = 5,
    networks: str = "litert",
    cache_dir: str | os.PathLike | None = None,
    progress=None,
    precision: str | None = None,
    model: str = DEFAULT_MODEL,
) -> tuple[LatencyTable, Fit]:
    """Measure `n` random networks of the source's space on `spec`, as files of `precision`
    (default: the source's), and write the adapted table to `out_path` (resumable:
    measurements are kept in OUT.state.json), fitting `model` (a name in `MODELS`, or
    ``auto``: the one with the lower leave-one-out error, `fit_best`).  Too few networks for
    the model raise AdaptError before anything is measured."""
    from device_bench.backends import backend_from_spec
    from device_bench.measurement import fingerprint_id
    from device_bench.table_build import (
        NETWORK_BATCH,
        PRECISION_FILES,
        mode_values,
        network_files,
        reference_network,
        sample_archs,
        space_from_header,
        space_header,
    )
    from device_bench.table_measure import HOST_CLOCK, NETWORK_SETTINGS
    from device_bench.table_runs import MeasureRun
    from latency_tables.identity import identity_id, with_precision
    from models.cache_dir import cache_root

    progress = progress or (lambda _phase, _total: lambda _n: None)
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
    precision = precision or source.precision
    fingerprint = with_precision(backend_from_spec(spec, NETWORK_SETTINGS).fingerprint(), precision)
    space = space_from_header(source.space)
    archs = sample_archs(space, n, seed)
    names = tuple(MODELS) if model == AUTO else (model,)
    for name in names:  # missing keys and too few networks fail before measuring
        centers = MODELS[name].centers(source)
        columns = [network_columns(source, arch, MODELS[name], centers) for arch in archs]
        if model != AUTO:
            check_networks(MODELS[name], columns)
    reference_arch, reference = reference_network(space, cache_dir)
    what = {
        "adapt": str(source.fingerprint_id),
        "space": space_header(space),
        "seed": seed,
        "networks": networks,
        "settings": NETWORK_SETTINGS.to_dict(),
        "host_clock": HOST_CLOCK,
        "reference": reference_arch.encode(),
    }
    run = MeasureRun(Path(str(out_path) + ".state.json"), identity_id(fingerprint), what)
    nets = network_files(archs, cache_dir, progress("converting networks", n), networks, precision)
    advance = progress(f"measuring ({passes}+ passes)", run.remaining(list(nets), passes))
    run.measure(
        spec, [(nets, NETWORK_SETTINGS)], passes, batch=NETWORK_BATCH, on_progress=advance,
        reference=reference, max_passes=max_passes,
    )  # fmt: skip
    values, modes = mode_values(run, list(nets))
    fit, loo = fit_best(source, archs, [values[a.encode()] for a in archs], names)
    protocol = {k: v for k, v in (source.header.get("protocol") or {}).items() if k != "files"}
    if precision in PRECISION_FILES:
        protocol["files"] = PRECISION_FILES[precision]
    table = adapted_table(
        source,
        fit,
        {
            "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "device_spec": spec,
            "fingerprint": fingerprint,
            "fingerprint_id": fingerprint_id(fingerprint),
            "protocol": protocol,
            "adapted": {
                "from": str(source.path) if source.path else None,
                "source_fingerprint_id": source.fingerprint_id,
                "source_precision": source.precision,
                "networks": n,
                "seed": seed,
                "model": fit.model.name,
                "model_asked": model,
                "loo_rmspe": {k: None if v is None else round(v, 5) for k, v in loo.items()},
                "coefficients": {c: round(v, 6) for c, v in fit.coefficients.items()},
                "centers": {c: round(v, 6) for c, v in fit.centers.items()},
                "offset_ms": round(fit.offset_ms, 6),
                "common_scale": round(fit.common_scale, 5),
                "clipped_entries": sum(fit.entry_scale(key) == MIN_SCALE for key in source.entries),
                "fit_rmspe": round(fit.rmspe, 5),
                "reference": {"arch": reference_arch.encode(), **modes},
                "measured_ms": [values[a.encode()] for a in archs],
            },
        },
    )
    table.save(out_path)
    return table, fit


__all__ = ["adapt_table", "adapted_table"]
