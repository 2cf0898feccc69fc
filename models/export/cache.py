"""Latency-only exports, cached by architecture.

A network's latency depends on its architecture, not on its weights, so the search loop times a
file exported once per arch key with initialisation weights.  Each cached file is a one-format
bundle (metadata.json included)::

    CACHE/v<EXPORT_VERSION>-<tools hash>/<arch key>/<format>/{model file, metadata.json}

The tools hash changes with any converter version, so an upgrade never serves stale files.
fp16 and int8 files are derived from the cached fp32 flatbuffer when there is one (no second
conversion).  int8 files are calibrated on a few seeded Gaussian images: calibration changes
scales, not ops or types, so it does not change latency.  A cached file is checked against its
metadata (size, sha256) whenever it is read; a damaged bundle is moved aside and exported again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from models.damage import set_aside
from models.export.bundle import METADATA, ExportOptions, export_bundle
from models.export.common import EXPORT_VERSION, FORMATS, ExportError, tool_versions
from models.network import Network

LATENCY_CALIBRATION_IMAGES = 8


def cache_root(cache_dir: str | os.PathLike) -> Path:
    tools = json.dumps(tool_versions(), sort_keys=True).encode()
    return Path(cache_dir) / f"v{EXPORT_VERSION}-{hashlib.sha256(tools).hexdigest()[:10]}"


def cached_bundle(cache_dir: str | os.PathLike, arch: Network, fmt: str) -> Path:
    return cache_root(cache_dir) / arch.key() / fmt


def intact_artifact(cache_dir: str | os.PathLike, arch: Network, fmt: str) -> Path | None:
    """The cached `fmt` file of `arch` when its bundle is complete and intact (the file's size
    and sha256 match its metadata.json), else None.  A damaged bundle is moved aside with a
    `DamagedFileWarning`, so the next export writes a new one."""
    bundle = cached_bundle(cache_dir, arch, fmt)
    path = bundle / FORMATS[fmt].filename
    if not (bundle / METADATA).is_file():  # bundles appear atomically: absent, or complete
        return None
    problem = _bundle_problem(bundle / METADATA, path, fmt)
    if problem is None:
        return path
    set_aside(bundle, "cached export", problem, then="exporting it again")
    return None


def _bundle_problem(metadata: Path, path: Path, fmt: str) -> str | None:
    try:
        entry = json.loads(metadata.read_text())["files"][fmt]
        size, sha256 = int(entry["bytes"]), str(entry["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"unreadable {metadata.name}: {type(error).__name__}: {error}"
    if not path.is_file():
        return f"{path.name} is missing"
    if path.stat().st_size != size:
        return f"{path.name} has {path.stat().st_size} bytes, its metadata says {size}"
    if hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
        return f"{path.name} does not match the sha256 in its metadata"
    return None


def latency_calibration(arch: Network, images: int) -> np.ndarray:
    """The seeded N(0, 1) NHWC images that calibrate latency-only int8 files (the ranges change
    scales, not ops or types, so not latency)."""
    size = arch.input_size
    return np.random.default_rng(0).standard_normal((images, size, size, 3), np.float32)


def latency_artifact(
    arch: Network,
    fmt: str,
    cache_dir: str | os.PathLike,
    *,
    int8_io: str = "float",
    onnx_layout: str = "NCHW",
    num_threads: int = 2,
) -> Path:
    """Path of the `fmt` file of `arch` with initialisation weights, exported on first use."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    cached = intact_artifact(cache_dir, arch, fmt)
    if cached is not None:
        return cached
    bundle = cached_bundle(cache_dir, arch, fmt)
    path = bundle / FORMATS[fmt].filename
    fp32 = None
    if fmt in ("tflite-fp16", "tflite-int8"):
        fp32 = latency_artifact(arch, "tflite", cache_dir, num_threads=num_threads).read_bytes()
    calibration = None
    if fmt == "tflite-int8":
        calibration = latency_calibration(arch, LATENCY_CALIBRATION_IMAGES)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # same arch, same file
        model = arch.build()
    options = ExportOptions(
        formats=(fmt,), int8_io=int8_io, onnx_layout=onnx_layout, num_threads=num_threads
    )
    try:
        export_bundle(
            arch,
            bundle,
            model=model,
            options=options,
            calibration_images=calibration,
            calibration_source="synthetic: seeded N(0, 1) images (latency-only file)",
            weights={
                "source": "initialisation, seed 0 (untrained; for latency only)",
                "trained": False,
            },
            fp32_tflite=fp32,
            trained=False,
        )
    except ExportError:
        if (bundle / METADATA).is_file():  # another process finished the same file first
            return path
        raise
    return path
