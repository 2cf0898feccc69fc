"""`table:FILE`: a latency backend that predicts from a latency table instead of timing.

The table needs an architecture, not a model file.  Three ways to give it one:

* `TableBackend.measure_arch(arch)` (an `Arch`, MnasNet-space only, or its string): what the
  search loop calls, no file involved, microseconds per call;
* `measure(path)` on a text file (``.arch`` / ``.txt``) holding one arch string;
* `measure(path)` on a model exported by pearl (``model.tflite`` / ``model.onnx`` with its
  ``metadata.json`` beside it, which records the arch string).

`fingerprint()` identifies the table (its device's fingerprint and the table file's sha256),
so the measurement cache never mixes predictions of two tables.  With ``measure_missing=SPEC``
a layer the table lacks is converted and timed on that device, added to the table in memory,
and the prediction goes on (otherwise `latency_tables.MissingKeyError` names the layer).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from device_bench.layer_files import ensure_layer_files
from device_bench.measurement import Measurement, MeasurementError
from device_bench.table_measure import DEFAULT_PASSES, LAYER_SETTINGS, combine, run_batch
from latency_tables.keys import LayerKey
from latency_tables.table import Entry, LatencyTable, TableError
from models.arch import Arch
from models.cache_dir import cache_root
from models.network import Network, decode_network

ARCH_SUFFIXES = (".arch", ".txt")


class TableBackend:
    source = "table"

    def __init__(
        self,
        path: str | Path,
        settings: Any = None,
        *,
        measure_missing: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.spec = f"table:{path}"
        self.settings = None  # predictions do not depend on timing settings
        try:
            self.table = LatencyTable.load(self.path)
        except TableError as err:
            raise ValueError(str(err)) from None
        self._sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()
        self.measure_missing = measure_missing
        self._measure_missing_checked = False  # is it the table's device? (asked once)
        self.cache_dir = cache_dir

    def fingerprint(self) -> dict[str, Any]:
        return {
            "kind": "table",
            "table_sha256": self._sha256,
            "device": self.table.fingerprint,
            "space": self.table.space,
        }

    def predict_ms(self, arch: Network | str) -> float:
        if isinstance(arch, str):
            arch = decode_network(arch)
        if not isinstance(arch, Arch):
            raise MeasurementError(
                f"a latency table predicts MnasNet-space networks only, not {arch.encode()[:40]!r}"
                "...; time it on a host or phone backend (e.g. add host:tflite to the chain)"
            )
        hook = self._measure_key if self.measure_missing else None
        return self.table.predict_ms(arch, hook)

    def measure_arch(self, arch: Network | str) -> Measurement:
        latency_ms = self.predict_ms(arch)
        return Measurement(
            median_ms=latency_ms,
            p90_ms=latency_ms,
            std_ms=0.0,
            min_ms=latency_ms,
            runs=1,
            source="table",
            device=self.table.fingerprint_id,
        )

    def measure(self, path: str | Path) -> Measurement:
        return self.measure_arch(arch_of_file(path))

    def _measure_key(self, key: LayerKey) -> Entry:
        """Convert and time one missing layer on `measure_missing` (same protocol as a build:
        fresh measurement processes, which also report the device's fingerprint)."""
        if not self._measure_missing_checked:
            fingerprint = run_batch(self.measure_missing, LAYER_SETTINGS, [], lambda *_: None)
            self.table.check_fingerprint(fingerprint, self.measure_missing)
            self._measure_missing_checked = True
        cache = self.cache_dir or cache_root()
        path = ensure_layer_files([key], cache, precision=self.table.precision)[key]
        found: list[Measurement] = []

        def record(_path: str, measurement: Measurement | None, error: str) -> None:
            if measurement is None:
                raise MeasurementError(error)
            found.append(measurement)

        for _ in range(DEFAULT_PASSES):
            run_batch(self.measure_missing, LAYER_SETTINGS, [str(path)], record)
        return Entry(**combine(found))


def arch_of_file(path: str | Path) -> Network:
    """The arch a file stands for: an arch-string text file, or a pearl export (its
    metadata.json)."""
    path = Path(path)
    if not path.is_file():
        raise MeasurementError(f"{path} not found: check the path")
    if path.suffix.lower() in ARCH_SUFFIXES:
        text = path.read_text().strip()
        try:
            return decode_network(text)
        except ValueError as err:
            raise MeasurementError(f"{path}: {err}") from None
    metadata = path.parent / "metadata.json"
    if not metadata.is_file():
        raise MeasurementError(
            f"a latency table predicts from an architecture, and {path} carries none: pass an "
            f"arch string in a {'/'.join(ARCH_SUFFIXES)} file, or a model exported by pearl "
            "(with its metadata.json beside it)"
        )
    try:
        return decode_network(json.loads(metadata.read_text())["arch"])
    except (KeyError, ValueError, TypeError) as err:
        raise MeasurementError(f"{metadata} has no valid 'arch' entry ({err})") from None
