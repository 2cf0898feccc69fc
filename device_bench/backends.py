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
    """A valid spec whose backend cannot be built in this installation; callers such as the
    search's latency chain then stop retrying it (other errors are retried)."""


def backend_from_spec(
    spec: str, settings: MeasureSettings | None = None, **adb_options
) -> LatencyBackend:
    """The backend named by `spec`. Unknown specs raise ValueError listing the valid forms.

    ``adb:SERIAL`` / ``adb:HOST:PORT`` give an `AdbBackend` (`device_bench.phone`): `settings`
    may be `MeasureSettings` (mapped onto benchmark_model's flags) or `PhoneSettings`;
    `adb_options` go to `AdbBackend` (``benchmark_model=``, ``key_path=``, ``options=``,
    ``log=``).  A missing benchmark_model binary raises `MeasurementError`."""
    text = spec.strip()
    kind, _, rest = text.partition(":")
    kind = kind.lower()
    if kind == "host" and f"host:{rest.lower()}" in HOST_BACKENDS:
        return HOST_BACKENDS[f"host:{rest.lower()}"](settings)
    if kind == "adb" and rest:
        from device_bench.phone import AdbBackend, PhoneSettings

        if isinstance(settings, MeasureSettings):
            settings = PhoneSettings.from_measure_settings(settings)
        return AdbBackend(text, settings, **adb_options)
    if kind == "table" and rest:
        from device_bench.table_backend import TableBackend

        return TableBackend(rest, settings)
    raise ValueError(f"unknown device spec {spec!r}; valid forms: {', '.join(VALID_FORMS)}")


def default_spec_for(path: str) -> str | None:
    """The host backend that times files like `path` (by suffix), or None."""
    lowered = str(path).lower()
    for spec, suffix in SPEC_SUFFIX.items():
        if lowered.endswith(suffix):
            return spec
    return None
