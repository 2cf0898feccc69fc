"""Latency for the search from a chain of backends, best first: phones (``adb:...``), then a
latency table (``table:FILE``), then this machine (``host:tflite`` / ``host:onnx``).

Every number records where it came from (`LatencyRecord`: source, device fingerprint id,
backend spec and the backend's rank in the chain).  A backend that cannot be built (not in this
version, phone absent) or that drops while measuring (`DeviceDroppedError`, a lost connection) is
marked *down* and the next one answers; `refresh()` probes down backends again (once per
generation) and reports which came back, so the search can re-measure front-runners that were
scored by a worse backend (`needs_remeasure`) before they can win.

File-based backends time an exported file: an arch's latency-only export
(`models.export.latency_artifact`, cached by arch key) in the format the backend runs, at the
chain's `precision` (fp32 ``.tflite``, or its fp16 / int8 file; ``latency.precision``); a table
backend (one that has ``measure_arch``) predicts from the arch itself, and must have been
measured at that precision (`LatencyTable.check_precision`, checked when the chain is built).
A candidate's latency is `device_bench.ranking.ranking_latency_ms`: the fastest timed run for
measured numbers (the statistic least moved by other load on the machine), the predicted median
for tables.
Measurements go through `device_bench.cache.measure_cached`, so nothing is timed twice on the
same device.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_bench.measurement import Measurement, fingerprint_id
from device_bench.ranking import ranking_latency_ms
from device_bench.spec import BackendSpec


class LatencyUnavailableError(RuntimeError):
    """No backend of the chain could time a network; the message lists what each one said."""


@dataclass(frozen=True)
class LatencyRecord:
    latency_ms: float
    source: str  # "device" | "host" | "table"
    device: str  # fingerprint id of the device / runtime that produced it
    spec: str  # the backend spec, e.g. "adb:R58M12345" or "host:tflite"
    rank: int  # position of that backend in the chain (0 = most trusted)
    seconds: float = 0.0  # wall time spent exporting + measuring
    cached: bool = False
    precision: str = "fp32"  # of the timed file (or of the table's measurements)
    memory_mb: float | None = None  # the footprint the device reported (phones), if any

    def row_values(self) -> dict[str, float | int | str]:
        """The latency columns of a results-store row (the spec of an fp16 / int8 number
        carries its precision: ``host:tflite (int8)``)."""
        spec = self.spec if self.precision == "fp32" else f"{self.spec} ({self.precision})"
        return {
            "latency_ms": self.latency_ms,
            "latency_source": self.source,
            "latency_device": self.device,
            "latency_spec": spec,
            "latency_rank": self.rank,
            "latency_seconds": self.seconds,
        }


def is_drop(error: BaseException) -> bool:
    """Does `error` mean the backend went away (rather than: this model cannot be timed)?"""
    try:
        from device_bench.phone import DeviceDroppedError
    except ImportError:  # pragma: no cover - phone support absent
        DeviceDroppedError = ()  # noqa: N806
    return isinstance(error, DeviceDroppedError | ConnectionError | TimeoutError)


class _Entry:
    def __init__(self, spec: str, rank: int, factory: Callable[[], Any], precision: str) -> None:
        from models.export.common import format_at_precision

        self.spec = spec
        # the export format a file-based backend times (None: it predicts from the arch)
        fmt = BackendSpec.parse(spec).artifact_format
        self.artifact_format = fmt and format_at_precision(fmt, precision)
        self.precision = precision
        self.rank = rank
        self.factory = factory
        self.backend: Any = None
        self.down_reason: str | None = None
        self.permanent = False  # True: this version cannot build it; never retried
        self._fingerprint: str | None = None

    def ensure(self) -> bool:
        """Build (or probe) the backend; True when it is usable now."""
        from device_bench.backends import BackendNotAvailableError
        from latency_tables.table import TableError

        if self.permanent:
            return False
        try:
            if self.backend is None:
                self.backend = self.factory()
            probe = getattr(self.backend, "available", None) or getattr(self.backend, "probe", None)
            if probe is not None and probe() is False:
                raise ConnectionError(f"{self.spec} is not reachable")
            table = getattr(self.backend, "table", None)
            if table is not None:
                table.check_precision(self.precision)  # a wrong table is an error, not "down"
            self.down_reason = None
            return True
        except BackendNotAvailableError as error:
            self.permanent = True
            self.down_reason = str(error)
        except TableError:
            raise
        except Exception as error:  # a phone that is not attached, a table that will not load
            self.down_reason = f"{type(error).__name__}: {error}"
        return False

    def fingerprint_id(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint_id(self.backend.fingerprint())
        return self._fingerprint


class LatencyChain:
    """Latency from the first backend of `specs` that works (see the module docstring)."""

    def __init__(
        self,
        specs: Sequence[str],
        *,
        export_cache_dir: str | Path,
        measurement_cache: Any = None,
        threads: int = 1,
        exporter: Callable[[Any, str], Path] | None = None,
        backends: Sequence[Any] | None = None,
        log: Callable[[str], None] | None = None,
        precision: str = "fp32",
    ) -> None:
        """`exporter(arch, fmt) -> path` makes latency files (default: in-process
        `latency_artifact` into `export_cache_dir`).  `backends` (already built objects, one per
        spec) replace building them from the specs.  `precision` (fp32, fp16, int8): of the
        files timed; a table of another precision raises `TableError`, a backend that has no
        file of it (host:onnx for int8) `ExportError`."""
        if not specs:
            raise ValueError("a latency chain needs at least one backend spec, e.g. host:tflite")
        self.export_cache_dir = Path(export_cache_dir).expanduser()
        self.measurement_cache = measurement_cache
        self.exporter = exporter or self._export_in_process
        self.log = log or (lambda message: None)
        self._lock = threading.Lock()
        self.entries = []
        for rank, spec in enumerate(specs):
            if backends is not None:
                factory = (lambda b: lambda: b)(backends[rank])
            else:
                factory = (lambda s: lambda: _build_backend(s, threads))(spec)
            self.entries.append(_Entry(spec, rank, factory, precision))
        for entry in self.entries:
            if not entry.ensure():
                self.log(f"latency backend {entry.spec} unavailable: {entry.down_reason}")

    # -- state -----------------------------------------------------------------------------

    def best_rank(self) -> int | None:
        """Rank of the most trusted backend that is up now (None: none is)."""
        return next((e.rank for e in self.entries if e.down_reason is None), None)

    def refresh(self) -> list[str]:
        """Probe backends that are down; returns the specs of those that came back."""
        back = []
        for entry in self.entries:
            if entry.down_reason is not None and not entry.permanent and entry.ensure():
                self.log(f"latency backend {entry.spec} is back")
                back.append(entry.spec)
        return back

    def needs_remeasure(self, rank: int | None) -> bool:
        """Was a number of this rank produced by a worse backend than the best one up now?"""
        best = self.best_rank()
        return best is not None and (rank is None or rank > best)

    def times_on_host(self) -> bool:
        """Does the best backend up now time on this machine (``host:...``)?  Then nothing
        else may train here while it times (the number would measure the contention)."""
        rank = self.best_rank()
        return rank is not None and self.entries[rank].spec.lower().startswith("host:")

    def status(self) -> list[dict[str, Any]]:
        return [
            {"spec": e.spec, "rank": e.rank, "up": e.down_reason is None, "why": e.down_reason}
            for e in self.entries
        ]

    # -- work ------------------------------------------------------------------------------

    def prepare(self, arch) -> None:
        """Export the file the best backend up now will time (the slow part; safe to run in a
        background thread while the main thread trains)."""
        rank = self.best_rank()
        if rank is None:
            return
        fmt = self.entries[rank].artifact_format
        if fmt is not None:
            self.exporter(arch, fmt)

    def measure(self, arch, *, from_rank: int = 0) -> LatencyRecord:
        """Latency of `arch` from the first usable backend at or after `from_rank`."""
        import time

        started = time.perf_counter()
        failures = []
        for entry in self.entries[from_rank:]:
            if entry.down_reason is not None:
                failures.append(f"{entry.spec}: down ({entry.down_reason})")
                continue
            try:
                measurement, cached = self._measure_on(entry, arch)
            except Exception as error:
                if is_drop(error):
                    entry.down_reason = f"dropped: {error}"
                    self.log(f"latency backend {entry.spec} dropped ({error}); falling back")
                failures.append(f"{entry.spec}: {type(error).__name__}: {error}")
                continue
            return LatencyRecord(
                latency_ms=ranking_latency_ms(measurement),
                source=measurement.source,
                device=measurement.device,
                spec=entry.spec,
                rank=entry.rank,
                seconds=time.perf_counter() - started,
                cached=cached,
                precision=entry.precision,
                memory_mb=measurement.peak_memory_mb,
            )
        raise LatencyUnavailableError(
            f"no latency backend could time {arch.key()}: " + "; ".join(failures)
        )

    def _measure_on(self, entry: _Entry, arch) -> tuple[Measurement, bool]:
        backend = entry.backend
        if hasattr(backend, "measure_arch"):  # a table predicts from the architecture
            return backend.measure_arch(arch), False
        from device_bench.cache import measure_cached

        path = self.exporter(arch, entry.artifact_format)
        with self._lock:  # one timing at a time: two timings would disturb each other
            result = measure_cached(backend, path, self.measurement_cache)
        self._time_beside(entry, arch, result.measurement)
        return result.measurement, result.cached

    def _time_beside(self, entry: _Entry, arch, measurement: Measurement) -> None:
        """A direct file the guard compared with its conversion: time the converted file
        too, right after it (`pipeline.latency_files.GuardedExporter`)."""
        pending = getattr(self.exporter, "pending_pair", None)
        converted = pending(arch, entry.artifact_format) if pending else None
        if converted is None:
            return
        from device_bench.cache import measure_cached

        with self._lock:
            other = measure_cached(entry.backend, converted, self.measurement_cache)
        self.exporter.record_ratio(
            arch, ranking_latency_ms(measurement), ranking_latency_ms(other.measurement)
        )

    def verify_files(self, archs) -> list[str]:
        """Check the files the best file-timing backend used for `archs` against conversions
        (an exporter with `verify`: direct files); the keys that must be timed again."""
        verify = getattr(self.exporter, "verify", None)
        rank = self.best_rank()
        if verify is None or rank is None or self.entries[rank].artifact_format is None:
            return []
        return verify(archs, self.entries[rank].artifact_format)

    def _export_in_process(self, arch, fmt: str) -> Path:
        from models.export import latency_artifact

        return latency_artifact(arch, fmt, self.export_cache_dir)


def _build_backend(spec: str, threads: int):
    from device_bench.backends import backend_from_spec
    from device_bench.host import MeasureSettings

    return backend_from_spec(spec, MeasureSettings(threads=threads))


class WorkerExporter:
    """`exporter` for `LatencyChain` that converts in a warm `ExportWorker` subprocess (so the
    conversion runs on another core, outside this process's GIL), started on first need;
    cached files are returned without starting it.  Thread-safe."""

    def __init__(self, cache_dir: str | Path, num_threads: int = 1) -> None:
        self.cache_dir = Path(cache_dir).expanduser()
        self.num_threads = num_threads
        self._worker = None
        self._lock = threading.Lock()

    def __call__(self, arch, fmt: str) -> Path:
        from models.export.cache import intact_artifact

        cached = intact_artifact(self.cache_dir, arch, fmt)  # a damaged one is set aside
        if cached is not None:
            return cached
        with self._lock:
            if self._worker is None:
                from models.export import ExportWorker

                # no warm-up conversion: the first real one pays the set-up once anyway
                self._worker = ExportWorker(num_threads=self.num_threads, warm_up=False)
            return Path(self._worker.latency_artifact(arch, fmt, self.cache_dir))

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.close()
                self._worker = None
