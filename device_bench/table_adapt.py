"""Few-shot transfer of a latency table to another device (`pearl tables adapt`).

A full build times ~2,400 layers; a device that differs from the table's by its CPU, runtime
version or threads mostly differs by how fast each *kind* of op runs.  So: time N whole random
networks of the table's space on the new device (the validation protocol: shuffled passes of
fresh processes, the reference network, fast-mode values), and fit one scale per op group
(`op_group`: stem, head, and the layer ops conv / ds / mb) plus an offset::

    measured_n ~ sum_g scale_g * (sum of the source entries of group g in network n) + offset

in relative error (each network weighs the same), ridge-regularised towards the single scale
that fits all groups (`RIDGE`, so that a group the N networks hardly exercise stays near it).
The new table is the source with every entry of group g multiplied by scale_g and the offset as
its correction; its header names the new device, and ``adapted`` records the source, N, the
seed, the scales and the fit error.

The target may time files of another precision than the source's (``precision``: an fp32
table adapted to int8 files is another op profile on the same CPU): the N networks are then
that precision's files and the new table's fingerprint carries it.

`fit_scales` and `adapted_table` are pure; `adapt_table` measures.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from latency_tables.keys import LayerKey, arch_keys
from latency_tables.table import Correction, LatencyTable, fit_correction
from models.arch import Arch

RIDGE = 1.0  # weight of sum_g (scale_g - common scale)^2 against the relative-error residuals
MIN_SCALE = 0.05
GROUPS = ("stem", "conv", "ds", "mb", "head")


def op_group(key: LayerKey) -> str:
    return key.kind if key.kind in ("stem", "head") else key.op


def group_sums(table: LatencyTable, arch: Arch) -> dict[str, float]:
    """The source table's entries of `arch`, summed per op group (no correction)."""
    sums = dict.fromkeys(GROUPS, 0.0)
    for key in arch_keys(arch):
        sums[op_group(key)] += getattr(table.entry(key), table.header["statistic"])
    return sums


@dataclasses.dataclass(frozen=True)
class Fit:
    scales: dict[str, float]
    offset_ms: float
    common_scale: float
    rmspe: float  # on the fitted networks
    networks: int

    def predict_ms(self, sums: Mapping[str, float]) -> float:
        return sum(self.scales[g] * sums[g] for g in self.scales) + self.offset_ms


def fit_scales(
    sums: Sequence[Mapping[str, float]], measured_ms: Sequence[float], ridge: float = RIDGE
) -> Fit:
    """Per-group scales and an offset (see the module docstring).  Groups no network uses
    keep the common scale."""
    import numpy as np

    if len(sums) != len(measured_ms) or not sums:
        raise ValueError("fit_scales needs one measured latency per network, at least one")
    common = fit_correction([sum(s.values()) for s in sums], measured_ms)
    used = [g for g in GROUPS if any(s[g] > 0 for s in sums)]
    rows, targets = [], []
    for s, m in zip(sums, measured_ms, strict=True):
        rows.append([s[g] / m for g in used] + [1 / m])
        targets.append(1.0)
    for i in range(len(used)):  # ridge rows pull each scale towards the common one
        row = [0.0] * (len(used) + 1)
        row[i] = math.sqrt(ridge)
        rows.append(row)
        targets.append(math.sqrt(ridge) * common.scale)
    solution, *_ = np.linalg.lstsq(np.array(rows), np.array(targets), rcond=None)
    scales = dict.fromkeys(GROUPS, common.scale)
    for g, value in zip(used, solution[:-1], strict=True):
        scales[g] = max(float(value), MIN_SCALE)
    fit = Fit(scales, float(solution[-1]), common.scale, 0.0, len(sums))
    errors = [fit.predict_ms(s) / m - 1 for s, m in zip(sums, measured_ms, strict=True)]
    rmspe = math.sqrt(sum(e * e for e in errors) / len(errors))
    return dataclasses.replace(fit, rmspe=rmspe)


def adapted_table(source: LatencyTable, fit: Fit, header: Mapping[str, Any]) -> LatencyTable:
    """`source` with each entry's times multiplied by its group's scale, the fit's offset as
    the correction, and `header` (the new device) over the source's header."""
    entries = {}
    for key, entry in source.entries.items():
        scale = fit.scales[op_group(key)]
        entries[key] = dataclasses.replace(
            entry,
            min_ms=round(entry.min_ms * scale, 6),
            median_ms=round(entry.median_ms * scale, 6),
            p90_ms=round(entry.p90_ms * scale, 6),
            std_ms=round(entry.std_ms * scale, 6),
        )
    correction = Correction(
        1.0, fit.offset_ms, {"model": "per-group scales folded into entries + offset"}
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
) -> tuple[LatencyTable, Fit]:
    """Measure `n` random networks of the source's space on `spec`, as files of `precision`
    (default: the source's), and write the adapted table to `out_path` (resumable:
    measurements are kept in OUT.state.json)."""
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
    sums = [group_sums(source, arch) for arch in archs]  # missing keys fail before measuring
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
    fit = fit_scales(sums, [values[a.encode()] for a in archs])
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
                "scales": {g: round(s, 5) for g, s in fit.scales.items()},
                "common_scale": round(fit.common_scale, 5),
                "fit_rmspe": round(fit.rmspe, 5),
                "reference": {"arch": reference_arch.encode(), **modes},
                "measured_ms": [values[a.encode()] for a in archs],
            },
        },
    )
    table.save(out_path)
    return table, fit


__all__ = ["Fit", "adapt_table", "adapted_table", "fit_scales", "group_sums", "op_group"]
