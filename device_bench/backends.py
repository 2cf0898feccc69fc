"""Choose a latency backend by its spec string (`device_bench.spec.BackendSpec`):
``host:tflite``, ``host:onnx``, ``adb:SERIAL``, ``adb:HOST:PORT``, ``table:FILE``."""

from __future__ import annotations

from device_bench.host import HostOnnxBackend, HostTFLiteBackend, MeasureSettings
from device_bench.measurement import LatencyBackend
from device_bench.spec import VALID_FORMS, BackendSpec

__all__ = [
    "VALID_FORMS",
    "BackendNotAvailableError",
    "BackendSpec",
    "backend_from_spec",
]

HOST_BACKENDS = {"tflite": HostTFLiteBackend, "onnx": HostOnnxBackend}


class BackendNotAvailableError(ValueError):
    """A valid spec whose backend cannot be built in this installation; callers such as the
    search's latency chain then stop retrying it (other errors are retried)."""


def backend_from_spec(
    spec: str | BackendSpec, settings: MeasureSettings | None = None, **adb_options
) -> LatencyBackend:
    """The backend named by `spec`. Unknown specs raise ValueError listing the valid forms.

    ``adb:SERIAL`` / ``adb:HOST:PORT`` give an `AdbBackend` (`device_bench.phone`): `settings`
    may be `MeasureSettings` (mapped onto benchmark_model's flags) or `PhoneSettings`;
    `adb_options` go to `AdbBackend` (``benchmark_model=``, ``key_path=``, ``options=``,
    ``log=``).  A missing benchmark_model binary raises `MeasurementError`."""
    parsed = spec if isinstance(spec, BackendSpec) else BackendSpec.parse(spec)
    if parsed.is_host:
        return HOST_BACKENDS[parsed.target](settings)
    if parsed.is_phone:
        from device_bench.phone import AdbBackend, PhoneSettings

        if isinstance(settings, MeasureSettings):
            settings = PhoneSettings.from_measure_settings(settings)
        return AdbBackend(parsed, settings, **adb_options)
    from device_bench.table_backend import TableBackend

    return TableBackend(parsed.target, settings)
