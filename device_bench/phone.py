"""`adb:SERIAL` / `adb:HOST:PORT`: latency measured on an Android phone with TFLite's
`benchmark_model`, through `android_runner`.

How one model is measured: connect (with retries), probe the phone once, push the binary and
the model (hash skip), then up to `max_invocations` runs of benchmark_model pinned with taskset
to the big cores, each preceded by a wait until the phone is below `thermal_limit_c`; it stops
once `min_invocations` runs agree (relative spread of their medians at most `spread_target`).

benchmark_model prints summary statistics, not a per-run list, so the `Measurement` is derived
from them (all documented, nothing invented):

* ``median_ms``: median of the runs' ``median=`` values (builds that print no percentiles: of
  their ``avg=`` values, the mean standing in for the median).
* ``min_ms``: smallest ``min=``; ``runs``: sum of ``count=``.
* ``std_ms``: the pooled standard deviation of all timed runs, exact from each run's count,
  average and (population) std.
* ``p90_ms``: an *estimate*: the tool prints p5/median/p95, not p90; pearl interpolates
  ``median + (p95 - median) * z(0.90) / z(0.95)`` (normal-shaped tail; without percentiles
  ``avg + z(0.90) * std``), clipped to [median, max], and takes the median over runs.
* ``spread``: relative spread ``(max - min) / median`` of the runs' medians (0 for one run).

A transport failure (phone unplugged, Wi-Fi drop) is retried with exponential back-off, on a
fresh connection; when the phone stays away, `DeviceDroppedError` tells the device pool to move
the job elsewhere.  Tool failures (model does not load, delegate missing, crash) are not retried.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from android_runner.connection import ConnectionSettings
from android_runner.op_profile import OpProfile
from android_runner.runner import RUN_TIMEOUT_S, RunOptions
from device_bench.host import MeasureSettings
from device_bench.measurement import Measurement, MeasurementError, fingerprint_id, relative_spread
from device_bench.spec import BackendSpec

BENCHMARK_MODEL_ENV = "PEARL_BENCHMARK_MODEL"
_Z90, _Z95 = 1.2815515655446004, 1.6448536269514722


class DeviceDroppedError(MeasurementError):
    """The phone could not be reached even after retries; the job can go to another phone."""


@dataclasses.dataclass(frozen=True)
class PhoneSettings:
    """How a phone times a model: every invocation runs benchmark_model with the flags `run`;
    at most `max_invocations` of them, each once the phone is below `thermal_limit_c`, stopping
    once `min_invocations` agree within `spread_target`.  All of it is part of the cache key, in
    the flat form `to_dict` gives."""

    run: RunOptions = dataclasses.field(default_factory=RunOptions)
    min_invocations: int = 2
    max_invocations: int = 4
    spread_target: float = 0.02
    thermal_limit_c: float = 45.0

    def __post_init__(self) -> None:
        for name in ("min_invocations", "max_invocations"):
            if getattr(self, name) < 1:
                raise ValueError(f"PhoneSettings.{name} must be >= 1, not {getattr(self, name)}")
        if self.min_invocations > self.max_invocations:
            raise ValueError("PhoneSettings.min_invocations exceeds max_invocations")

    def to_dict(self) -> dict[str, Any]:
        """benchmark_model's flags and the invocation protocol in one flat mapping."""
        protocol = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del protocol["run"]
        return {**dataclasses.asdict(self.run), **protocol}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhoneSettings:
        """Inverse of `to_dict`; an unknown key is a TypeError naming it."""
        flags = {f.name for f in dataclasses.fields(RunOptions)}
        run = RunOptions(**{name: value for name, value in data.items() if name in flags})
        return cls(run=run, **{name: value for name, value in data.items() if name not in flags})

    @classmethod
    def from_measure_settings(cls, settings: MeasureSettings) -> PhoneSettings:
        """The host timing settings as benchmark_model flags (threads, warm-up runs,
        ``--num_runs`` = min_runs, ``--min_secs`` / ``--max_secs`` = min_seconds / max_seconds)
        and their spread target for the invocations."""
        run = RunOptions(
            threads=settings.threads,
            warmup_runs=settings.warmup_runs,
            num_runs=settings.min_runs,
            min_secs=settings.min_seconds,
            max_secs=settings.max_seconds,
        )
        return cls(run=run, spread_target=settings.spread_target)


@dataclasses.dataclass(frozen=True)
class PhoneOptions:
    """Limits and plumbing; not part of the cache key."""

    run_timeout_s: float = RUN_TIMEOUT_S
    thermal_timeout_s: float = 300.0
    thermal_poll_s: float = 5.0
    retries: int = 2
    retry_backoff_s: float = 1.0
    connection: ConnectionSettings = dataclasses.field(default_factory=ConnectionSettings)
    keep_models: bool = False


def resolve_benchmark_model(path: str | os.PathLike | None) -> Path:
    """The benchmark_model binary: `path`, else ``$PEARL_BENCHMARK_MODEL``; a clear error if
    neither names an existing file."""
    chosen = path if path else os.environ.get(BENCHMARK_MODEL_ENV)
    if not chosen:
        raise MeasurementError(
            "phones are timed with TFLite's benchmark_model binary, and none was given: pass "
            f"--benchmark-model PATH or set {BENCHMARK_MODEL_ENV} (download "
            "android_aarch64_benchmark_model from TFLite's nightly builds or build "
            "//tensorflow/lite/tools/benchmark:benchmark_model; see the README)"
        )
    resolved = Path(chosen).expanduser()
    if not resolved.is_file():
        raise MeasurementError(
            f"benchmark_model binary {resolved} not found: check --benchmark-model / "
            f"{BENCHMARK_MODEL_ENV}"
        )
    return resolved


def _p90_estimate(stats) -> float:
    """p90 (us) of one benchmark_model run from what it prints (see module docstring)."""
    if stats.has_percentiles:
        centre = float(stats.median_us)
        estimate = centre + (stats.p95_us - centre) * _Z90 / _Z95
    else:
        centre = stats.avg_us
        estimate = centre + _Z90 * stats.std_us
    return min(max(estimate, centre), float(stats.max_us))


def _centres_us(stats_list: Sequence) -> list[float]:
    """Each timed run's centre (us): its median, or its average where no percentiles were
    printed (see the module docstring)."""
    return [float(s.median_us) if s.has_percentiles else s.avg_us for s in stats_list if s.count]


def run_memory_mb(result) -> float | None:
    """The memory footprint one run reported (`BenchmarkResult`, MB): the periodic peak where
    the tool printed it, else its overall footprint (delta from the tool's start, or max RSS
    on old builds); None when it printed neither."""
    if result.peak_memory_mb is not None and result.peak_memory_mb >= 0:
        return result.peak_memory_mb
    return result.overall_memory_mb


def combine_runs(
    stats_list: Sequence, *, device: str, memory_mb: Sequence[float | None] = ()
) -> Measurement:
    """One `Measurement` from the inference statistics of one or more benchmark_model runs
    (`TimingStats`, microseconds) and their memory footprints (the largest is kept).  Pure."""
    used = [s for s in stats_list if s.count > 0]
    if not used:
        raise MeasurementError("benchmark_model reported no timed run")
    centres = _centres_us(used)
    total = sum(s.count for s in used)
    mean = sum(s.count * s.avg_us for s in used) / total
    second_moment = sum(s.count * (s.std_us**2 + s.avg_us**2) for s in used) / total
    std_us = math.sqrt(max(second_moment - mean * mean, 0.0))
    median_us = statistics.median(centres)
    p90_us = max(statistics.median(_p90_estimate(s) for s in used), median_us)
    return Measurement(
        median_ms=median_us / 1000.0,
        p90_ms=p90_us / 1000.0,
        std_ms=std_us / 1000.0,
        min_ms=min(s.min_us for s in used) / 1000.0,
        runs=total,
        source="device",
        device=device,
        spread=relative_spread(centres),
        peak_memory_mb=max((m for m in memory_mb if m is not None), default=None),
    )


class AdbBackend:
    """A `LatencyBackend` for one phone (`adb:SERIAL` over USB, `adb:HOST:PORT` over TCP)."""

    def __init__(
        self,
        spec: str | BackendSpec,
        settings: PhoneSettings | None = None,
        *,
        benchmark_model: str | os.PathLike | None = None,
        key_path: str | os.PathLike | None = None,
        options: PhoneOptions | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        parsed = spec if isinstance(spec, BackendSpec) else BackendSpec.parse(spec)
        self.address = parsed.address
        self.spec = str(parsed)
        self.settings = settings or PhoneSettings()
        self.options = options or PhoneOptions()
        self.binary = resolve_benchmark_model(benchmark_model)
        self.key_path = key_path
        self.log = log or (lambda message: None)
        self._session = None
        self._binary_sha256: str | None = None

    # ------------------------------------------------------------------ session
    def _new_session(self):
        from android_runner.runner import PhoneSession

        return PhoneSession(
            self.address,
            self.binary,
            key_path=self.key_path,
            connection_settings=self.options.connection,
            log=self.log,
        )

    @property
    def session(self):
        if self._session is None:
            self._session = self._new_session()
        return self._session

    def _with_retries(self, what: str, action: Callable[[], Any]) -> Any:
        """Run `action`; on transport errors reconnect and retry with exponential back-off."""
        from android_runner.errors import (
            AdbError,
            AuthRejectedError,
            DeviceUnavailableError,
            UsbUnavailableError,
        )

        attempts = self.options.retries + 1
        for attempt in range(attempts):
            try:
                return action()
            except (AuthRejectedError, UsbUnavailableError) as err:
                self.session.close()
                raise MeasurementError(str(err)) from None
            except DeviceUnavailableError as err:
                self.session.close()
                if attempt + 1 >= attempts:
                    raise DeviceDroppedError(
                        f"{self.spec}: {what} failed {attempts} time(s); last error: {err}"
                    ) from None
                delay = self.options.retry_backoff_s * 2**attempt
                self.log(f"{self.spec}: {err}; retrying in {delay:g} s")
                time.sleep(delay)
            except AdbError as err:
                raise MeasurementError(f"{self.spec}: {err}") from None
        raise AssertionError("unreachable")

    def probe(self):
        return self._with_retries("probe", self.session.ensure_connected)

    def fingerprint(self) -> dict[str, Any]:
        probe = self.probe()
        if self._binary_sha256 is None:
            from android_runner.runner import file_digest

            self._binary_sha256 = file_digest(self.binary)
        return {
            **probe.fingerprint(),
            "runtime": "benchmark_model",
            "benchmark_model_sha256": self._binary_sha256[:16],
            "threads": self.settings.run.threads,
            "delegate": "gpu" if self.settings.run.use_gpu else "cpu",
            "cores": list(probe.big_cores(self.settings.run.threads)),
        }

    def close(self) -> None:
        """Remove the models pushed in this session (unless `keep_models`) and disconnect."""
        if self._session is None:
            return
        try:
            if not self.options.keep_models and self._session.connection.connected:
                self._session.cleanup()
        except Exception as err:  # cleanup must not hide the real outcome
            self.log(f"{self.spec}: cleanup failed ({err})")
        finally:
            self._session.close()

    def __enter__(self) -> AdbBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ measure
    def _measure_once(self, path: Path) -> Measurement:
        session = self.session
        session.ensure_connected()
        session.ensure_binary()
        remote = session.push_model(path)
        stats, memory = [], []
        for _ in range(self.settings.max_invocations):
            session.wait_until_cool(
                self.settings.thermal_limit_c,
                timeout_s=self.options.thermal_timeout_s,
                poll_s=self.options.thermal_poll_s,
            )
            result = session.run_benchmark(
                remote, self.settings.run, timeout_s=self.options.run_timeout_s
            )
            stats.append(result.inference)
            memory.append(run_memory_mb(result))
            if len(stats) >= self.settings.min_invocations:
                if relative_spread(_centres_us(stats)) <= self.settings.spread_target:
                    break
        return combine_runs(stats, device=fingerprint_id(self.fingerprint()), memory_mb=memory)

    def op_profile(self, path: str | Path) -> tuple[Measurement, OpProfile]:
        """One benchmark_model run with the per-operator profile (XNNPACK off, see
        `android_runner.runner.PhoneSession.run_op_profile`), after the same cool-down."""
        path = self._check_model(path)

        def run() -> tuple[Measurement, OpProfile]:
            session = self.session
            session.ensure_connected()
            session.ensure_binary()
            remote = session.push_model(path)
            session.wait_until_cool(
                self.settings.thermal_limit_c,
                timeout_s=self.options.thermal_timeout_s,
                poll_s=self.options.thermal_poll_s,
            )
            result, profile = session.run_op_profile(
                remote, self.settings.run, timeout_s=self.options.run_timeout_s
            )
            device = fingerprint_id(self.fingerprint())
            memory = [run_memory_mb(result)]
            return combine_runs([result.inference], device=device, memory_mb=memory), profile

        return self._with_retries(f"profiling {path.name}", run)

    @staticmethod
    def _check_model(path: str | Path) -> Path:
        path = Path(path)
        if not path.is_file():
            raise MeasurementError(f"model file {path} not found: check the path")
        if path.suffix.lower() != ".tflite":
            raise MeasurementError(
                f"{path} is not a .tflite file: phones run .tflite models with benchmark_model "
                "(export one with `pearl export ... --formats tflite`)"
            )
        return path

    def measure(self, path: str | Path) -> Measurement:
        path = self._check_model(path)
        return self._with_retries(f"measuring {path.name}", lambda: self._measure_once(path))
