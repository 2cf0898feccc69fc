"""Export a network to every requested format, check each file, and write the artifact bundle.

A bundle is a directory::

    model.tflite  model_fp16.tflite  model_int8.tflite  model.onnx   (those requested)
    labels.txt                                                      (when class names are known)
    metadata.json                                                   (everything else)

It is assembled in a hidden sibling directory and renamed into place only when every file has
been written and checked, so a directory named like the target is always complete.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from models.export import onnx_file, tflite
from models.export.common import (
    DEFAULT_FORMATS,
    EXPORT_VERSION,
    FORMATS,
    METADATA,
    ExportError,
    ParityError,
    parse_formats,
    tool_versions,
)
from models.export.delegation import Delegation
from models.export.delegation import report as delegation_report
from models.export.parity import Parity, compare
from models.export.prepare import preprocess, torch_logits
from models.files import atomic_write_json
from models.network import Network

LABELS = "labels.txt"
METADATA_VERSION = 1
SYNTHETIC_PARITY_IMAGES = 16


class ExportWarning(UserWarning):
    """An exported file works but is worse than it should be (e.g. int8 disagreeing)."""


@dataclass(frozen=True)
class ExportOptions:
    formats: tuple[str, ...] = DEFAULT_FORMATS
    int8_io: str = "float"  # "float": QUANTIZE/DEQUANTIZE inside the file; "int8": caller's job
    onnx_layout: str = "NCHW"
    num_threads: int = 2
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", parse_formats(self.formats))
        if self.int8_io not in tflite.INT8_IO:
            raise ExportError(f"int8 I/O must be one of {tflite.INT8_IO}, got {self.int8_io!r}")
        if self.onnx_layout not in onnx_file.LAYOUTS:
            raise ExportError(f"ONNX layout must be one of {onnx_file.LAYOUTS}")


@dataclass(frozen=True)
class ExportedFile:
    format: str
    data: bytes
    parity: Parity
    io: dict
    seconds: float  # converting/quantising this file (the shared fp32 conversion counts once)
    delegation: Delegation | None = None
    extra: dict = field(default_factory=dict)

    @property
    def spec(self):
        return FORMATS[self.format]


def _step(on_step: Callable[[str], None] | None, message: str) -> None:
    if on_step is not None:
        on_step(message)


def export_files(
    model: nn.Module,
    arch: Network,
    parity_nhwc: np.ndarray,
    calibration_nhwc: np.ndarray | None,
    options: ExportOptions,
    *,
    trained: bool,
    fp32_tflite: bytes | None = None,
    on_step: Callable[[str], None] | None = None,
) -> list[ExportedFile]:
    """Convert `model` to each of `options.formats` and check each file against PyTorch on
    `parity_nhwc` (float, normalised).  Nothing touches the disk.

    Raises `ParityError` when an fp32/fp16/ONNX file exceeds its tolerance; an int8 file that
    disagrees too often raises an `ExportWarning` (a warning) and is kept.  `fp32_tflite` reuses
    an earlier conversion of the same network.
    """
    reference = torch_logits(model, parity_nhwc)
    if fp32_tflite is None and any(f.startswith("tflite") for f in options.formats):
        _step(on_step, "converting to TFLite (litert-torch)")
        start = time.perf_counter()
        fp32_tflite = tflite.convert_fp32(model, arch.input_size)
        conversion_seconds = time.perf_counter() - start
    else:
        conversion_seconds = 0.0
    files = []
    for fmt in options.formats:
        start = time.perf_counter()
        file = _export_one(fmt, model, arch, fp32_tflite, calibration_nhwc, options, on_step)
        seconds = time.perf_counter() - start + (conversion_seconds if fmt == "tflite" else 0)
        _step(on_step, f"checking {fmt}")
        try:
            run = tflite.run if fmt.startswith("tflite") else onnx_file.run
            logits = run(file.data, parity_nhwc, options.num_threads)
            delegation = delegation_report(file.data) if fmt.startswith("tflite") else None
        except RuntimeError as error:  # a runtime refusing the file: say which file
            raise ExportError(
                f"{fmt}: the exported file does not run in its runtime ({error}); "
                "report the arch string, or export the other formats meanwhile"
            ) from error
        parity = compare(reference, logits, fmt, trained=trained)
        _judge(fmt, parity)
        if delegation is not None and delegation.reference_kernels_error and trained:
            warnings.warn(
                f"{fmt} does not prepare on LiteRT's reference CPU kernels "
                f"({delegation.reference_kernels_error}); it runs only where XNNPACK takes "
                "those ops. Calibrate on more representative images or ship the fp16 file",
                ExportWarning,
                stacklevel=2,
            )
        files.append(
            ExportedFile(fmt, file.data, parity, file.io, round(seconds, 3), delegation, file.extra)
        )
    return files


@dataclass(frozen=True)
class _Converted:
    data: bytes
    io: dict
    extra: dict


def _export_one(fmt, model, arch, fp32_tflite, calibration_nhwc, options, on_step) -> _Converted:
    """The bytes of one format (the fp32 flatbuffer is already converted) and its I/O spec."""
    extra: dict = {}
    if fmt == "tflite":
        data = fp32_tflite
    elif fmt == "tflite-fp16":
        _step(on_step, "fp16 weights (ai-edge-quantizer)")
        data = tflite.quantize_fp16(fp32_tflite)
    elif fmt == "tflite-int8":
        count = 0 if calibration_nhwc is None else len(calibration_nhwc)
        _step(on_step, f"int8 calibration on {count} images")
        data = tflite.quantize_int8(
            fp32_tflite, calibration_nhwc, options.int8_io, options.num_threads
        )
    else:
        _step(on_step, "converting to ONNX")
        data = onnx_file.convert(model, arch.input_size, options.onnx_layout)
        extra["ops"] = onnx_file.op_counts(data)
        io = _onnx_io(arch, options.onnx_layout)
        io["input"]["layout"] = options.onnx_layout
        return _Converted(data, io, extra)
    io = tflite.io_spec(data)
    io["input"]["layout"] = "NHWC"
    return _Converted(data, io, extra)


def _onnx_io(arch: Network, layout: str) -> dict:
    size = arch.input_size
    shape = [1, 3, size, size] if layout == "NCHW" else [1, size, size, 3]
    return {
        "input": {"name": onnx_file.INPUT_NAME, "shape": shape, "dtype": "float32"},
        "output": {
            "name": onnx_file.OUTPUT_NAME,
            "shape": [1, arch.num_classes],
            "dtype": "float32",
        },
    }


def _judge(fmt: str, parity: Parity) -> None:
    if parity.passed:
        return
    message = f"{fmt} disagrees with PyTorch: {parity.summary()}"
    if parity.note:
        message += f" ({parity.note})"
    if FORMATS[fmt].rtol is not None:
        raise ParityError(
            message + ". The exported file is wrong; nothing was written. Report the arch "
            "string, or export another format meanwhile"
        )
    warnings.warn(
        message + ". The int8 file is kept but may lose accuracy: calibrate on more (and more "
        "representative) images, or ship the fp16 file",
        ExportWarning,
        stacklevel=3,
    )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def accuracy(
    files: Sequence[ExportedFile], model: nn.Module, images_nhwc: np.ndarray, labels, num_threads=2
) -> dict[str, float]:
    """Top-1 accuracy of PyTorch and of every exported file on labelled images."""
    labels = np.asarray(labels)
    results = {"pytorch": float(np.mean(torch_logits(model, images_nhwc).argmax(1) == labels))}
    for file in files:
        run = tflite.run if file.format.startswith("tflite") else onnx_file.run
        logits = run(file.data, images_nhwc, num_threads)
        results[file.format] = float(np.mean(logits.argmax(1) == labels))
    return results


def build_metadata(
    arch: Network,
    files: Sequence[ExportedFile],
    *,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    class_names: Sequence[str] | None,
    weights: dict,
    parity_source: str,
    calibration: dict | None,
    name: str | None = None,
    accuracy_result: dict | None = None,
) -> dict:
    """The metadata.json document (see docs/export.md for every field)."""
    cost = arch.cost()
    size = arch.input_size
    entries = {}
    for file in files:
        entry = {
            "path": file.spec.filename,
            "sha256": sha256_bytes(file.data),
            "bytes": len(file.data),
            "runtime": file.spec.runtime,
            "precision": file.spec.precision,
            **file.io,
            "parity": file.parity.to_dict(),
            "export_seconds": file.seconds,
        }
        if file.delegation is not None:
            entry["delegation"] = file.delegation.to_dict()
        if file.extra:
            entry.update(file.extra)
        entries[file.format] = entry
    normalise = mean is not None and std is not None
    return {
        "metadata_version": METADATA_VERSION,
        "export_version": EXPORT_VERSION,
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "name": name,
        "arch": arch.encode(),
        "arch_key": arch.key(),
        "num_classes": arch.num_classes,
        "labels": LABELS if class_names else None,
        "macs": cost.macs,
        "params": cost.params,
        "input": {
            "height": size,
            "width": size,
            "channels": 3,
            "color": "RGB",
            "batch": 1,
            "dtype": "float32",
            "mean": list(map(float, mean)) if normalise else None,
            "std": list(map(float, std)) if normalise else None,
            "preprocess": (
                f"resize to {size}x{size} RGB, x = (pixel / 255 - mean) / std per channel, "
                "then lay out as each file's input.layout says (NHWC: [1, H, W, 3]); int8 "
                "inputs: q = round(x / scale) + zero_point"
                if normalise
                else "unknown normalisation (exported without mean/std)"
            ),
        },
        "output": {
            "shape": [1, arch.num_classes],
            "kind": "logits (no softmax); class index = argmax; int8 outputs: "
            "x = (q - zero_point) * scale",
        },
        "weights": weights,
        "files": entries,
        "parity_images": parity_source,
        "calibration": calibration,
        "tools": tool_versions(),
        "accuracy": accuracy_result or {},
        "latency": {},
    }


def _staging_dir(out_dir: Path, overwrite: bool) -> Path:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"output {out_dir} exists and is not a directory; choose another -o DIR")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(
            f"output directory {out_dir} exists and is not empty; choose another -o DIR or "
            "pass --force to replace it"
        )
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        return Path(
            tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent)
        )
    except OSError as error:
        raise ExportError(
            f"cannot write the bundle under {out_dir.parent} ({error.strerror or error}); "
            "choose a writable -o DIR"
        ) from None


def _publish(staging: Path, out_dir: Path) -> None:
    """Move the finished bundle into place; an existing one is replaced only at the end."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(staging, 0o777 & ~mask)  # mkdtemp made it private
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
        os.rename(out_dir, old / "bundle")
    os.rename(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_bundle(
    arch: Network,
    out_dir: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    options: ExportOptions = ExportOptions(),
    parity_images: np.ndarray | None = None,
    calibration_images: np.ndarray | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    weights: dict | None = None,
    accuracy_data: tuple[np.ndarray, np.ndarray, str] | None = None,
    name: str | None = None,
    parity_source: str = "caller-supplied images",
    calibration_source: str = "caller-supplied images",
    fp32_tflite: bytes | None = None,
    trained: bool | None = None,
    on_step: Callable[[str], None] | None = None,
) -> dict:
    """Export `model` (default: `arch` built at initialisation, for latency-only work) to
    `out_dir` and return its metadata.

    Images are NHWC arrays: uint8 pixels (normalised here with `mean`/`std`) or normalised
    float32.  `parity_images` (a few dozen real images) check every file; without them a seeded
    Gaussian batch is used and the metadata says so.  `calibration_images` (a few hundred real
    training images) are needed for tflite-int8.  `accuracy_data` = (images, labels, description)
    adds top-1 accuracy of every file.  `weights` describes where the weights came from;
    `trained` (default: a model was given) decides whether int8 agreement is judged.
    """
    out_dir = Path(out_dir).absolute()
    staging = _staging_dir(out_dir, options.overwrite)
    try:
        if trained is None:
            trained = model is not None
        model = (arch.build() if model is None else model).eval()
        size = arch.input_size
        parity, parity_source = _parity(parity_images, size, mean, std, parity_source)
        calibration, calibration_info = _calibration(
            calibration_images, size, mean, std, options, calibration_source
        )
        files = export_files(
            model,
            arch,
            parity,
            calibration,
            options,
            trained=trained,
            fp32_tflite=fp32_tflite,
            on_step=on_step,
        )
        accuracy_result = None
        if accuracy_data is not None:
            accuracy_result = _accuracy_result(
                accuracy_data, files, model, size, mean, std, options, on_step
            )
        document = build_metadata(
            arch,
            files,
            mean=mean,
            std=std,
            class_names=class_names,
            weights=weights
            or {"source": "initialisation (untrained; for latency only)", "trained": trained},
            parity_source=f"{len(parity)} images, {parity_source}",
            calibration=calibration_info,
            name=name,
            accuracy_result=accuracy_result,
        )
        _step(on_step, f"writing {out_dir}")
        _write_bundle(staging, arch, files, class_names, document)
        _publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return document


def _parity(images, size: int, mean, std, source: str) -> tuple[np.ndarray, str]:
    """The parity batch, normalised, and where it came from (a seeded Gaussian batch when no
    images are given)."""
    if images is not None:
        return preprocess(images, size, mean, std), source
    rng = np.random.default_rng(0)
    synthetic = rng.standard_normal((SYNTHETIC_PARITY_IMAGES, size, size, 3), np.float32)
    return synthetic, f"synthetic: {SYNTHETIC_PARITY_IMAGES} seeded N(0, 1) images"


def _calibration(images, size: int, mean, std, options: ExportOptions, source: str):
    """``(normalised calibration images, metadata)`` for tflite-int8; ``(None, None)`` without
    it."""
    if "tflite-int8" not in options.formats:
        return None, None
    if images is None:
        raise ExportError(
            "tflite-int8 needs calibration images (a few hundred real training images, "
            "e.g. --calib DATA); give them or drop tflite-int8 from the formats"
        )
    calibration = preprocess(images, size, mean, std)
    info = {
        "recipe": "static_wi8_ai8 (ai-edge-quantizer)",
        "images": len(calibration),
        "source": source,
        "io": options.int8_io,
    }
    return calibration, info


def _accuracy_result(accuracy_data, files, model, size, mean, std, options, on_step) -> dict:
    images, labels, description = accuracy_data
    _step(on_step, f"accuracy on {len(labels)} images")
    x = preprocess(images, size, mean, std)
    return {
        "dataset": description,
        "images": len(labels),
        "top1": accuracy(files, model, x, labels, options.num_threads),
    }


def _write_bundle(staging: Path, arch: Network, files, class_names, document: dict) -> None:
    """The files, labels.txt (when class names are known) and metadata.json into `staging`."""
    for file in files:
        (staging / file.spec.filename).write_bytes(file.data)
    if class_names:
        if len(class_names) != arch.num_classes:
            raise ExportError(
                f"{len(class_names)} class names for a {arch.num_classes}-class network; "
                "give matching labels or none"
            )
        (staging / LABELS).write_text("".join(f"{n}\n" for n in class_names))
    atomic_write_json(staging / METADATA, document)


def read_metadata(bundle_dir: str | os.PathLike) -> dict:
    """The metadata.json of a bundle (a JSON object), or an `ExportError` saying what is wrong."""
    path = Path(bundle_dir) / METADATA
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{path} not found; is {bundle_dir} an export bundle?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExportError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise ExportError(f"{path} holds a {type(document).__name__}, not a JSON object")
    return document


def record_measurement(bundle_dir: str | os.PathLike, section: str, key: str, value) -> dict:
    """Add a measurement to a bundle's metadata: ``section`` "latency" with a device
    fingerprint as `key`, or "accuracy" with a dataset name.  Rewrites metadata.json atomically."""
    if section not in ("latency", "accuracy"):
        raise ExportError(f"section must be 'latency' or 'accuracy', got {section!r}")
    document = read_metadata(bundle_dir)
    entries = document.setdefault(section, {})
    if not isinstance(entries, dict):
        raise ExportError(f"{METADATA} in {bundle_dir}: {section!r} is not a JSON object")
    entries[key] = value
    atomic_write_json(Path(bundle_dir) / METADATA, document)
    return document
