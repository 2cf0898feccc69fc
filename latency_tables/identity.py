"""Which device fingerprint fields decide whether a latency table holds on a device.

A fingerprint (`LatencyBackend.fingerprint()`) records everything known about the device and the
runtime.  Only some of it changes latency: the CPU model, the core layout, the runtime and its
version, threads, delegate and the precision of the timed files (plus, on phones, the SoC and
its frequencies).  The rest is *recorded, not matched*: the kernel build string (``platform``),
the host name, the Python version and a phone's OS build string change with every update and
say nothing about speed.

`identity(fingerprint)` is the part that is matched, `identity_id` its stable id (what a
resumable measurement run is keyed by), and `differences(table, device)` lists the matched
fields that differ.  Standard library only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# recorded in every fingerprint, never matched
RECORDED_ONLY = frozenset({"platform", "kernel", "hostname", "python", "build"})
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_PRECISION = "fp32"  # every table before format 2 was measured on fp32 files


def identity(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of `fingerprint` that a table must match (everything not recorded-only)."""
    return {name: value for name, value in fingerprint.items() if name not in RECORDED_ONLY}


def identity_id(fingerprint: Mapping[str, Any]) -> str:
    """16 hex digits of the sha256 of the identity's canonical JSON."""
    text = json.dumps(identity(fingerprint), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(table: Mapping[str, Any], device: Mapping[str, Any]) -> list[str]:
    """``"name: table X vs device Y"`` for every matched field that differs.  A field the
    table does not record (a table written by an older pearl) is not compared; nor is the
    precision when `device` is a backend's own fingerprint (it says nothing of the files:
    `with_precision` adds it)."""
    mine, theirs = identity(table), identity(device)
    mine.setdefault("precision", DEFAULT_PRECISION)
    if "precision" not in theirs:
        del mine["precision"]
    return [
        f"{name}: table {mine.get(name)!r} vs device {theirs.get(name)!r}"
        for name in sorted(set(mine) | set(theirs))
        if name in mine and mine.get(name) != theirs.get(name)
    ]


def with_precision(fingerprint: Mapping[str, Any], precision: str) -> dict[str, Any]:
    """`fingerprint` for files of `precision` (fp32, fp16 or int8): the table's identity."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return {**fingerprint, "precision": precision}
