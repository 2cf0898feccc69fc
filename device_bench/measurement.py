"""What a latency measurement is, how samples become one, and what a latency backend promises.

Pure code, standard library only: the search loop, the cache and the table predictor import it
without pulling in any runtime.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

Source = Literal["device", "host", "table"]
SOURCES: tuple[str, ...] = ("device", "host", "table")


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Latency of one model on one device, in milliseconds per single inference.

    `device` is the `fingerprint_id` of the device that produced it; `spread` is the relative
    spread ``(max - min) / median`` of the per-round medians (0.0 when there was one round).
    `peak_memory_mb` is the memory footprint the device reported (phones: benchmark_model's
    periodic peak, else its overall footprint line; None where nothing was reported).
    """

    median_ms: float
    p90_ms: float
    std_ms: float
    min_ms: float
    runs: int
    source: Source
    device: str
    spread: float = 0.0
    peak_memory_mb: float | None = None

    def __post_init__(self) -> None:
        if self.peak_memory_mb is not None and not (
            math.isfinite(self.peak_memory_mb) and self.peak_memory_mb >= 0
        ):
            raise ValueError(f"peak_memory_mb must be None or >= 0, not {self.peak_memory_mb!r}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {self.source!r}")
        if self.runs < 1:
            raise ValueError(f"runs must be >= 1, not {self.runs}")
        for name in ("median_ms", "p90_ms", "std_ms", "min_ms", "spread"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        """Inverse of `to_dict`. Missing fields raise ValueError; extra keys are ignored, so the
        JSON printed by `pearl bench` (which adds e.g. ``cached``) can be read back."""
        names = [field.name for field in dataclasses.fields(cls)]
        optional = ("spread", "peak_memory_mb")
        missing = [name for name in names if name not in data and name not in optional]
        if missing:
            raise ValueError(f"measurement is missing field(s): {', '.join(missing)}")
        values = {name: data[name] for name in names if name in data}
        for name in ("median_ms", "p90_ms", "std_ms", "min_ms", "spread"):
            if name in values:
                values[name] = float(values[name])
        if values.get("peak_memory_mb") is not None:
            values["peak_memory_mb"] = float(values["peak_memory_mb"])
        values["runs"] = int(values["runs"])
        values["device"] = str(values["device"])
        return cls(**values)


def relative_spread(values: Sequence[float]) -> float:
    """``(max - min) / median`` of `values`; 0.0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    middle = statistics.median(values)
    if middle <= 0:
        return 0.0 if max(values) == min(values) else math.inf
    return (max(values) - min(values)) / middle


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of already sorted values."""
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarize(
    samples_ms: Sequence[float],
    *,
    source: Source,
    device: str,
    round_medians_ms: Sequence[float] | None = None,
) -> Measurement:
    """Summarise per-invoke latencies into a `Measurement`.

    `round_medians_ms` are the medians of the timing rounds the samples came from; their relative
    spread becomes `Measurement.spread` (0.0 when not given).
    """
    if not samples_ms:
        raise ValueError("cannot summarise an empty list of latency samples")
    ordered = sorted(float(value) for value in samples_ms)
    if ordered[0] < 0 or not math.isfinite(ordered[-1]):
        raise ValueError("latency samples must be finite and >= 0")
    return Measurement(
        median_ms=statistics.median(ordered),
        p90_ms=_quantile(ordered, 0.9),
        std_ms=statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
        min_ms=ordered[0],
        runs=len(ordered),
        source=source,
        device=device,
        spread=relative_spread(list(round_medians_ms or ())),
    )


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def fingerprint_id(fingerprint: Mapping[str, Any]) -> str:
    """Stable short id of a device fingerprint: 16 hex digits of the sha256 of its canonical
    JSON. Key order does not matter; any changed value gives a different id."""
    return hashlib.sha256(canonical_json(dict(fingerprint)).encode()).hexdigest()[:16]


class MeasurementError(RuntimeError):
    """A model could not be timed; the message names the file and what to do about it."""


@runtime_checkable
class LatencyBackend(Protocol):
    """Something that times models: a host runtime, a phone, or a latency table.

    `spec` is the string that chose it (``host:tflite``, ``adb:SERIAL``, ...); `fingerprint()`
    identifies the device and runtime configuration (it is part of every cache key);
    `measure(path)` times one model file and raises `MeasurementError` with a readable message
    when it cannot.
    """

    spec: str

    def fingerprint(self) -> dict[str, Any]: ...

    def measure(self, path: str | Path) -> Measurement: ...
