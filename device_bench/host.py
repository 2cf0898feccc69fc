"""Host latency backends: the LiteRT interpreter (`host:tflite`) and ONNX Runtime (`host:onnx`),
both single-threaded by default so that numbers are comparable between runs and machines.

How a model is timed: load it, feed one fixed random input of the model's input shape and dtype,
run `warmup_runs` untimed invokes, then timed rounds of `round_size` invokes (each invoke timed
with `time.perf_counter_ns`, or the backend's `sample_clock`).  Timing stops as soon as at least
`min_runs` invokes and `min_seconds` of timing are done and the relative spread
``(max - min) / median`` of the last `window_rounds` round medians is at most `spread_target`,
or when `max_runs` invokes or `max_seconds` of timing are reached.  The `Measurement` summarises
every timed invoke; its `spread` is that of the last `window_rounds` round medians (the ones the
stopping rule judged), so ``spread <= spread_target`` means the timing settled and a larger one
means a cap stopped it.
(The 1 s floor spreads each measurement over more of the machine's slow/fast stretches; on a
shared VM `min_ms` is still far more reproducible between processes than `median_ms`: see
BENCHMARKS.md, "Host latency run-to-run spread".)

The runtimes are imported inside the functions that use them.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device_bench.measurement import (
    Measurement,
    MeasurementError,
    fingerprint_id,
    relative_spread,
    summarize,
)
from device_bench.spec import BackendSpec
from models.quiet import native_noise_filtered

__all__ = [
    "HostOnnxBackend",
    "HostTFLiteBackend",
    "MeasureSettings",
    "MeasurementError",
    "cpu_model_name",
    "time_rounds",
]


@dataclasses.dataclass(frozen=True)
class MeasureSettings:
    """How long and how carefully to time a model. Part of every cache key."""

    warmup_runs: int = 10
    min_runs: int = 100
    max_runs: int = 2000
    max_seconds: float = 10.0
    min_seconds: float = 1.0
    threads: int = 1
    round_size: int = 10
    window_rounds: int = 5
    spread_target: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("min_runs", "max_runs", "threads", "round_size", "window_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"MeasureSettings.{name} must be >= 1, not {getattr(self, name)}")
        if self.warmup_runs < 0:
            raise ValueError(f"MeasureSettings.warmup_runs must be >= 0, not {self.warmup_runs}")
        if self.min_runs > self.max_runs:
            raise ValueError(
                f"MeasureSettings.min_runs ({self.min_runs}) exceeds max_runs ({self.max_runs})"
            )
        if self.max_seconds <= 0 or self.spread_target < 0 or self.min_seconds < 0:
            raise ValueError(
                "MeasureSettings.max_seconds must be > 0, min_seconds and spread_target >= 0"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def time_rounds(
    invoke: Callable[[], object],
    settings: MeasureSettings,
    *,
    sample_clock: Callable[[], int] = time.perf_counter_ns,
) -> tuple[list[float], list[float]]:
    """Warm up, then time `invoke` in rounds until the round medians settle or a cap is hit.
    Each invoke is timed with `sample_clock` (nanoseconds; default: wall time); the
    ``min_seconds`` / ``max_seconds`` limits are always wall time.
    Returns ``(samples_ms, round_medians_ms)``."""
    for _ in range(settings.warmup_runs):
        invoke()
    wall = time.perf_counter_ns
    samples: list[float] = []
    round_medians: list[float] = []
    started = wall()
    deadline = started + int(settings.max_seconds * 1e9)
    earliest_stop = started + int(settings.min_seconds * 1e9)
    while len(samples) < settings.max_runs:
        count = min(settings.round_size, settings.max_runs - len(samples))
        current = []
        for _ in range(count):
            start = sample_clock()
            invoke()
            current.append((sample_clock() - start) / 1e6)
        samples.extend(current)
        round_medians.append(statistics.median(current))
        settled = (
            len(samples) >= settings.min_runs
            and wall() >= earliest_stop
            and len(round_medians) >= min(settings.window_rounds, 2)
            and relative_spread(round_medians[-settings.window_rounds :]) <= settings.spread_target
        )
        if settled or wall() >= deadline:
            break
    return samples, round_medians


def cpu_model_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def core_layout(cpuinfo: str | None = None) -> str:
    """``"S socket(s), C core(s), L logical"`` from /proc/cpuinfo (`cpuinfo`: its text), or
    the logical count alone where the file says less."""
    logical = os.cpu_count() or 1
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    cores, sockets, processors = set(), set(), 0
    socket = core = ""
    for line in [*cpuinfo.splitlines(), ""]:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            processors += 1
        elif key == "physical id":
            socket = value
        elif key == "core id":
            core = value
        elif not line.strip() and core:
            cores.add((socket, core))
            sockets.add(socket)
            socket = core = ""
    if not cores:
        return f"{processors or logical} logical"
    return f"{len(sockets)} socket(s), {len(cores)} core(s), {processors or logical} logical"


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _check_file(path: str | Path, spec: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MeasurementError(f"model file {path} not found: check the path")
    suffix = BackendSpec.parse(spec).file_suffix
    if path.suffix.lower() != suffix:
        other = BackendSpec.for_file(path)
        hint = f" (use --device {other} for {path.suffix} files)" if other else ""
        raise MeasurementError(f"{path} is not a {suffix} file: {spec} times {suffix} models{hint}")
    return path


def _random_array(shape, dtype, rng):
    import numpy as np

    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = max(int(info.min), -128), min(int(info.max), 255)
        return rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 1, size=shape, endpoint=True).astype(dtype)
    if dtype.kind in "fc":
        return rng.standard_normal(size=shape).astype(dtype)
    raise MeasurementError(f"unsupported model input dtype {dtype}")


class _HostBackend:
    """What the host backends share: settings, the fingerprint (read once), the timing loop.
    `sample_clock` times each invoke (`time_rounds`); the table protocol passes
    `time.thread_time_ns` (see `device_bench.table_measure`)."""

    spec: str  # "host:tflite" / "host:onnx"
    package: str  # the runtime's distribution, whose version is part of the fingerprint
    delegate: str

    def __init__(
        self,
        settings: MeasureSettings | None = None,
        *,
        sample_clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self.settings = settings or MeasureSettings()
        self.sample_clock = sample_clock
        self._fingerprint: dict[str, Any] | None = None

    def fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            self._fingerprint = {
                "kind": "host",
                "cpu": cpu_model_name(),
                "cores": os.cpu_count() or 1,
                "core_layout": core_layout(),
                "runtime": self.package,
                "runtime_version": _package_version(self.package),
                "threads": self.settings.threads,
                "delegate": self.delegate,
                # recorded, not matched (latency_tables.identity.RECORDED_ONLY)
                "platform": platform.platform(),
                "hostname": platform.node(),
                "python": platform.python_version(),
            }
        return dict(self._fingerprint)

    def _load(self, path: Path) -> Callable[[], object]:
        """Load `path`, feed it a fixed random input, run it once; returns one invoke."""
        raise NotImplementedError

    def measure(self, path: str | Path) -> Measurement:
        invoke = self._load(_check_file(path, self.spec))
        samples, rounds = time_rounds(invoke, self.settings, sample_clock=self.sample_clock)
        return summarize(
            samples,
            source="host",
            device=fingerprint_id(self.fingerprint()),
            round_medians_ms=rounds[-self.settings.window_rounds :],
        )


class HostTFLiteBackend(_HostBackend):
    """`host:tflite`: ai-edge-litert's Interpreter (XNNPACK by default) on this machine."""

    spec = "host:tflite"
    package = "ai-edge-litert"
    delegate = "xnnpack"

    def _load(self, path: Path) -> Callable[[], object]:
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter

        try:
            with native_noise_filtered():  # the delegate is applied at allocation
                interpreter = Interpreter(model_path=str(path), num_threads=self.settings.threads)
                for detail in interpreter.get_input_details():
                    signature = detail.get("shape_signature", detail["shape"])
                    if any(int(dim) < 0 for dim in signature):
                        shape = [1 if int(dim) < 0 else int(dim) for dim in signature]
                        interpreter.resize_tensor_input(detail["index"], shape)
                interpreter.allocate_tensors()
            rng = np.random.default_rng(self.settings.seed)
            for detail in interpreter.get_input_details():
                value = _random_array(tuple(detail["shape"]), detail["dtype"], rng)
                interpreter.set_tensor(detail["index"], value)
            interpreter.invoke()
        except MeasurementError:
            raise
        except Exception as err:  # the runtime's errors are ValueError/RuntimeError with C++ text
            raise MeasurementError(
                f"could not load and run {path} as a TFLite model ({_first_line(err)}): "
                "the file may be corrupt or truncated; re-export it"
            ) from None
        return interpreter.invoke


_ONNX_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


class HostOnnxBackend(_HostBackend):
    """`host:onnx`: ONNX Runtime's CPU execution provider on this machine."""

    spec = "host:onnx"
    package = "onnxruntime"
    delegate = provider = "CPUExecutionProvider"

    def _load(self, path: Path) -> Callable[[], object]:
        import numpy as np
        import onnxruntime as ort

        try:
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.settings.threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.log_severity_level = 3
            session = ort.InferenceSession(str(path), options, providers=[self.provider])
            rng = np.random.default_rng(self.settings.seed)
            feeds = {}
            for node in session.get_inputs():
                if node.type not in _ONNX_DTYPES:
                    raise MeasurementError(
                        f"{path}: input {node.name!r} has type {node.type}, which pearl cannot "
                        "feed yet (supported: " + ", ".join(sorted(_ONNX_DTYPES)) + ")"
                    )
                shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in node.shape)
                feeds[node.name] = _random_array(shape, _ONNX_DTYPES[node.type], rng)
            session.run(None, feeds)
        except MeasurementError:
            raise
        except Exception as err:
            raise MeasurementError(
                f"could not load and run {path} as an ONNX model ({_first_line(err)}): "
                "the file may be corrupt or truncated; re-export it"
            ) from None
        return lambda: session.run(None, feeds)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
