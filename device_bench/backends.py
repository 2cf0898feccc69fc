"""Choose a latency backend by its spec string (see DESIGN.md):
``host:tflite``, ``host:onnx``, ``adb:SERIAL``, ``adb:HOST:PORT``, ``table:FILE``."""

from __future__ import annotations

from device_bench.host import HostOnnxBackend, HostTFLiteBackend, MeasureSettings
from device_bench.measurement import LatencyBackend

HOST_BACKENDS = {"host:tflite": HostTFLiteBackend, "host:onnx": HostOnnxBackend}
VALID_FORMS = ("host:tflite", "host:onnx", "adb:SERIAL", "adb:HOST:PORT", "table:FILE")
# which file suffix each host backend times
SPEC_SUFFIX = {"host:tflite": ".tflite", "host:onnx": ".onnx"}


class BackendNotAvailableError(ValueError):
    """A valid spec whose backend this version of pearl does not have yet."""


def backend_from_spec(spec: str, settings: MeasureSettings | None = None) -> LatencyBackend:
    """The backend named by `spec`. Unknown specs raise ValueError listing the valid forms;
    ``adb:...`` and ``table:...`` raise `BackendNotAvailableError` (a ValueError)."""
    text = spec.strip()
    kind, _, rest = text.partition(":")
    kind = kind.lower()
    if kind == "host" and f"host:{rest.lower()}" in HOST_BACKENDS:
        return HOST_BACKENDS[f"host:{rest.lower()}"](settings)
    if kind in ("adb", "table") and rest:
        what = "Android phones over ADB" if kind == "adb" else "latency tables"
        raise BackendNotAvailableError(
            f"backend {spec!r} is not available yet in this version of pearl ({what} come "
            "later); use host:tflite or host:onnx to time on this machine"
        )
    raise ValueError(f"unknown device spec {spec!r}; valid forms: {', '.join(VALID_FORMS)}")


def default_spec_for(path: str) -> str | None:
    """The host backend that times files like `path` (by suffix), or None."""
    lowered = str(path).lower()
    for spec, suffix in SPEC_SUFFIX.items():
        if lowered.endswith(suffix):
            return spec
    return None
