"""Latency table files: read, write, predict.  Standard library only.

A table is a CSV file with a header block of ``# name: JSON`` lines, then one row per key
(`latency_tables.keys.KEY_FIELDS`) with its statistics::

    # pearl latency table
    # format_version: 1
    # created: "2026-11-22T01:30:00Z"
    # device_spec: "host:tflite"
    # fingerprint: {"cpu": "...", "runtime": "ai-edge-litert", "threads": 1, ...}
    # fingerprint_id: "0123456789abcdef"
    # space: {"name": "mnas-imagenet", "input_size": 224, "num_classes": 1000}
    # statistic: "min_ms"
    # protocol: {...how the rows were measured...}
    # correction: {"scale": 1.11, "offset_ms": 0.0, ...}
    kind,op,kernel,...,classes,min_ms,median_ms,p90_ms,std_ms,runs,passes,pass_spread
    layer,mb,5,6,25,noskip,24,40,2,56,re,0,0.8123,...

Statistics per row (milliseconds): ``min_ms`` is the fastest invoke over all passes (each pass
a fresh process, keys in a shuffled order), the statistic predictions use because it is the
one that reproduces between processes on a shared machine; ``median_ms``/``p90_ms``/``std_ms``
are over all timed invokes; ``pass_spread`` is ``(max - min) / median`` of the per-pass minima.

Prediction: ``latency_ms = scale * sum(entries) + offset_ms``, where ``scale`` and ``offset_ms``
were fitted on whole networks measured the same way (isolated layers run with hot caches, so the
plain sum underestimates by about 10%, proportionally).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latency_tables.block_sums import BlockSums
from latency_tables.identity import DEFAULT_PRECISION, differences
from latency_tables.keys import KEY_FIELDS, LayerKey, arch_key_tuples
from models.arch import Arch
from models.files import atomic_write

FORMAT_VERSION = 2
# format 1 (before device identity, precision and the reference protocol) reads as format 2:
# its fingerprint gets ``precision: fp32`` (what every format-1 table was measured on)
READABLE_VERSIONS = (1, 2)
MAGIC = "# pearl latency table"
STAT_FIELDS = ("min_ms", "median_ms", "p90_ms", "std_ms", "runs", "passes", "pass_spread")
HEADER_FIELDS = (
    "format_version",
    "created",
    "device_spec",
    "fingerprint",
    "fingerprint_id",
    "space",
    "statistic",
    "protocol",
    "correction",
)


class TableError(ValueError):
    """A table file that cannot be used: unreadable, wrong version, wrong device, bad row."""


class MissingKeyError(TableError, KeyError):
    """The table has no entry for a layer of the network."""

    def __init__(self, key: LayerKey, table: str) -> None:
        self.key = key
        super().__init__(
            f"latency table {table} has no entry for {key.encode()} "
            f"(kind={key.kind}, op={key.op}, kernel={key.kernel}, expand={key.expand}, "
            f"se={key.se_percent}%, skip={key.skip}, channels {key.in_channels}->"
            f"{key.out_channels}, stride={key.stride}, input={key.input_size}, act={key.act}): "
            "the network is outside the space the table was built for; rebuild it with "
            "`pearl tables build` for that space, or measure missing layers on demand "
            "(TableBackend(..., measure_missing=SPEC))"
        )

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


@dataclass(frozen=True)
class Entry:
    min_ms: float
    median_ms: float
    p90_ms: float
    std_ms: float
    runs: int
    passes: int
    pass_spread: float

    def to_row(self) -> dict[str, str]:
        # repr: the shortest text that reads back to the same float
        return {name: repr(getattr(self, name)) for name in STAT_FIELDS}

    @classmethod
    def from_row(cls, row: Mapping[str, str]) -> Entry:
        values: dict[str, Any] = {}
        for name in STAT_FIELDS:
            text = row.get(name)
            if text is None or text == "":
                raise ValueError(f"missing column {name!r}")
            values[name] = int(text) if name in ("runs", "passes") else float(text)
            if not math.isfinite(values[name]) or values[name] < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {text!r}")
        return cls(**values)


@dataclass(frozen=True)
class Correction:
    """``latency_ms = scale * sum + offset_ms``; `fit` records how it was obtained."""

    scale: float = 1.0
    offset_ms: float = 0.0
    fit: dict = field(default_factory=dict)

    def apply(self, sum_ms: float) -> float:
        return self.scale * sum_ms + self.offset_ms

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "offset_ms": self.offset_ms, **self.fit}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Correction:
        extra = {k: v for k, v in data.items() if k not in ("scale", "offset_ms")}
        return cls(float(data["scale"]), float(data["offset_ms"]), extra)


def fit_correction(sums_ms: Iterable[float], measured_ms: Iterable[float]) -> Correction:
    """Least-squares ``measured ~ scale * sum + offset`` in relative error (each network weighs
    the same whatever its latency); with fewer than 3 networks only a scale is fitted."""
    pairs = [(float(s), float(m)) for s, m in zip(sums_ms, measured_ms, strict=True)]
    if not pairs or any(s <= 0 or m <= 0 for s, m in pairs):
        raise ValueError("correction needs at least one network with positive sum and latency")
    # minimise sum(((a*s + b) / m - 1)^2): linear least squares in (a, b) with rows (s/m, 1/m)
    rows = [(s / m, 1 / m) for s, m in pairs]
    if len(pairs) < 3:
        scale = sum(r[0] for r in rows) / sum(r[0] ** 2 for r in rows)
        offset = 0.0
    else:
        saa = sum(a * a for a, _ in rows)
        sab = sum(a * b for a, b in rows)
        sbb = sum(b * b for _, b in rows)
        sa = sum(a for a, _ in rows)
        sb = sum(b for _, b in rows)
        det = saa * sbb - sab * sab
        scale = (sa * sbb - sb * sab) / det
        offset = (saa * sb - sab * sa) / det
    errors = [(scale * s + offset) / m - 1 for s, m in pairs]
    rmspe = math.sqrt(sum(e * e for e in errors) / len(errors))
    return Correction(
        scale, offset, {"networks": len(pairs), "fit_rmspe": rmspe, "model": "scale*sum+offset"}
    )


class LatencyTable:
    """A loaded table: `predict_ms(arch)`, `entry(key)`, `save(path)`."""

    def __init__(
        self,
        entries: Mapping[LayerKey, Entry],
        header: Mapping[str, Any],
        path: str | os.PathLike | None = None,
    ) -> None:
        self.entries: dict[LayerKey, Entry] = dict(entries)
        self.header: dict[str, Any] = dict(header)
        self.path = Path(path) if path is not None else None
        self.header.setdefault("format_version", FORMAT_VERSION)
        self.header.setdefault("statistic", "min_ms")
        self.correction = Correction.from_dict(
            self.header.get("correction") or {"scale": 1.0, "offset_ms": 0.0}
        )
        self._stat = self.header["statistic"]
        if self._stat not in ("min_ms", "median_ms"):
            raise TableError(f"unknown statistic {self._stat!r}: expected min_ms or median_ms")
        # the hot path looks up plain tuples (see `arch_key_tuples`)
        self._values = {key.as_tuple(): getattr(e, self._stat) for key, e in self.entries.items()}
        self._block_sums = BlockSums(self._values)  # the per-arch fast path

    # -- identity -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.path) if self.path else "(in memory)"

    @property
    def fingerprint(self) -> dict[str, Any]:
        return dict(self.header.get("fingerprint") or {})

    @property
    def fingerprint_id(self) -> str:
        return str(self.header.get("fingerprint_id", ""))

    @property
    def space(self) -> dict[str, Any]:
        return dict(self.header.get("space") or {})

    @property
    def precision(self) -> str:
        return str(self.fingerprint.get("precision", DEFAULT_PRECISION))

    @property
    def upgrade_note(self) -> str | None:
        """What reading an older format assumed (None for a current table)."""
        old = self.header.get("upgraded_from")
        if old is None:
            return None
        return (
            f"note: {self.name} is a format-{old} latency table (older pearl); read as format "
            f"{FORMAT_VERSION} with precision {DEFAULT_PRECISION}; fields it does not record "
            "are not checked. Rebuild it (`pearl tables build`) to record them"
        )

    def check_fingerprint(self, fingerprint: Mapping[str, Any], spec: str = "DEVICE") -> None:
        """Raise `TableError` naming every differing identity field (`latency_tables.identity`:
        CPU, cores, runtime and version, threads, delegate, precision; not the kernel build or
        host name) and saying what makes a valid table for that device."""
        diffs = differences(self.fingerprint, fingerprint)
        if not diffs:
            return
        space = self.space
        raise TableError(
            f"latency table {self.name} was built for another device or runtime setting ("
            + "; ".join(diffs)
            + f"): adapt it to this device from ~25 whole-network measurements with `pearl "
            f"tables adapt --from {self.name} --device {spec} -o NEW.csv`, or rebuild it with "
            f"`pearl tables build --device {spec} --space {space.get('name', 'SPACE')} --input "
            f"{space.get('input_size', 'N')} -o NEW.csv`"
        )

    def check_precision(self, precision: str, setting: str = "latency.precision") -> None:
        """Raise `TableError` when the table was measured on files of another precision than
        the ones to predict (`setting` names where that precision was chosen)."""
        if precision == self.precision:
            return
        space = self.space
        raise TableError(
            f"latency table {self.name} predicts {self.precision} files, but {precision} files "
            f"are asked for ({setting} = {precision!r}): set {setting} = {self.precision!r} to "
            f"use this table, or build a table of {precision} files with `pearl tables build "
            f"--device {self.header.get('device_spec', 'DEVICE')} --space "
            f"{space.get('name', 'SPACE')} "
            f"--input {space.get('input_size', 'N')} --precision {precision} -o NEW.csv`"
        )

    # -- prediction ---------------------------------------------------------------------------

    def entry(self, key: LayerKey) -> Entry:
        try:
            return self.entries[key]
        except KeyError:
            raise MissingKeyError(key, self.name) from None

    def sum_ms(
        self, arch: Arch, measure_missing: Callable[[LayerKey], Entry] | None = None
    ) -> float:
        """Plain sum of the entries of `arch`'s stem, layers and head (no correction)."""
        total = self._block_sums.sum_ms(arch)
        if total is not None:
            return total
        values = self._values
        total = 0.0
        for key in arch_key_tuples(arch):
            value = values.get(key)
            if value is None:
                missing = LayerKey(*key)
                if measure_missing is None:
                    raise MissingKeyError(missing, self.name)
                self.add(missing, measure_missing(missing))
                value = values[key]
            total += value
        return total

    def predict_ms(
        self, arch: Arch, measure_missing: Callable[[LayerKey], Entry] | None = None
    ) -> float:
        """Predicted latency of `arch` in ms: corrected sum of its entries.  A missing key
        raises `MissingKeyError` naming it, unless `measure_missing(key)` supplies the entry."""
        return self.correction.apply(self.sum_ms(arch, measure_missing))

    def add(self, key: LayerKey, entry: Entry) -> None:
        self.entries[key] = entry
        self._values[key.as_tuple()] = getattr(entry, self._stat)
        self._block_sums.clear()

    def with_correction(self, correction: Correction) -> LatencyTable:
        header = dict(self.header, correction=correction.to_dict())
        return LatencyTable(self.entries, header, self.path)

    # -- files --------------------------------------------------------------------------------

    def dumps(self) -> str:
        out = io.StringIO()
        out.write(MAGIC + "\n")
        header = dict(self.header, correction=self.correction.to_dict())
        for name in HEADER_FIELDS:
            if name in header:
                out.write(f"# {name}: {json.dumps(header[name], sort_keys=True)}\n")
        for name in sorted(set(header) - set(HEADER_FIELDS)):
            out.write(f"# {name}: {json.dumps(header[name], sort_keys=True)}\n")
        writer = csv.DictWriter(out, fieldnames=[*KEY_FIELDS, *STAT_FIELDS], lineterminator="\n")
        writer.writeheader()
        for key in sorted(self.entries):
            writer.writerow({**key.to_row(), **self.entries[key].to_row()})
        return out.getvalue()

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (`models.files.atomic_write`): readers never see half a table."""
        self.path = atomic_write(path, self.dumps().encode())
        return self.path

    @classmethod
    def loads(cls, text: str, path: str | os.PathLike | None = None) -> LatencyTable:
        where = str(path) if path is not None else "(text)"
        lines = text.splitlines()
        if not lines or lines[0].strip() != MAGIC:
            raise TableError(
                f"{where} is not a pearl latency table (first line must be {MAGIC!r}); "
                "build one with `pearl tables build`"
            )
        header: dict[str, Any] = {}
        body_start = len(lines)
        for number, line in enumerate(lines[1:], start=2):
            if not line.startswith("#"):
                body_start = number - 1
                break
            name, sep, value = line[1:].strip().partition(":")
            if not sep:
                raise TableError(f"{where} line {number}: header lines are '# name: JSON'")
            try:
                header[name.strip()] = json.loads(value)
            except json.JSONDecodeError as err:
                raise TableError(
                    f"{where} line {number}: bad JSON for {name.strip()!r} ({err})"
                ) from None
        version = header.get("format_version")
        if version not in READABLE_VERSIONS:
            raise TableError(
                f"{where} has format_version {version!r}; this pearl reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}: rebuild the table with this "
                "version (`pearl tables build`) or use the pearl that wrote it"
            )
        for name in ("fingerprint", "space"):
            if not isinstance(header.get(name), dict):
                raise TableError(f"{where}: header field {name!r} is missing or not an object")
        if version != FORMAT_VERSION:
            header["fingerprint"].setdefault("precision", DEFAULT_PRECISION)
            header["format_version"], header["upgraded_from"] = FORMAT_VERSION, version
        entries: dict[LayerKey, Entry] = {}
        reader = csv.DictReader(lines[body_start:])
        expected = [*KEY_FIELDS, *STAT_FIELDS]
        if reader.fieldnames is None or list(reader.fieldnames) != expected:
            raise TableError(
                f"{where}: column names {reader.fieldnames} differ from the expected {expected}"
            )
        for number, row in enumerate(reader, start=body_start + 2):
            try:
                key, entry = LayerKey.from_row(row), Entry.from_row(row)
            except (ValueError, TypeError) as err:
                raise TableError(f"{where} line {number}: {err}") from None
            if key in entries:
                raise TableError(f"{where} line {number}: duplicate row for {key.encode()}")
            entries[key] = entry
        try:
            return cls(entries, header, path)
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, TableError):
                raise
            raise TableError(f"{where}: bad header ({err})") from None

    @classmethod
    def load(
        cls, path: str | os.PathLike, fingerprint: Mapping[str, Any] | None = None
    ) -> LatencyTable:
        """Read a table; with `fingerprint`, also reject a table built for another device."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise TableError(f"cannot read latency table {path}: {err.strerror}") from None
        table = cls.loads(text, path)
        if fingerprint is not None:
            table.check_fingerprint(fingerprint)
        return table
