"""Run an exported bundle from its metadata.json alone, the way an app would: no arch string, no
PyTorch.  It doubles as the executable reference for docs/export.md and is what the tests use to
prove that the metadata is sufficient.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from models.export.bundle import METADATA, read_metadata
from models.export.common import ExportError
from models.quiet import native_noise_filtered

_INPUT_SIZE = ("height", "width", "channels")


def metadata_field(meta: dict, dotted: str, source: str | os.PathLike = METADATA):
    """``meta["a"]["b"]`` for `dotted` "a.b", or an `ExportError` naming `source` (the
    metadata.json) and the field that is missing or of the wrong kind."""
    value = meta
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ExportError(
                f"{source}: field {dotted!r} is missing (a malformed or hand-edited "
                "metadata.json); export the bundle again with `pearl export`"
            )
        value = value[part]
    return value


def _number(meta: dict, dotted: str, source):
    """A number (or list of numbers) field, as written in the metadata."""
    value = metadata_field(meta, dotted, source)
    try:
        np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ExportError(f"{source}: field {dotted!r} is {value!r}, not a number") from None
    return value


def load_input(
    images: np.ndarray, meta: dict, fmt: str, source: str | os.PathLike = METADATA
) -> list[np.ndarray]:
    """uint8 RGB images (N, H, W, 3) at the bundle's size -> one input array per image, as the
    file `fmt` expects (normalised, laid out, quantised if its input is int8).  `source` names
    the metadata.json in errors."""
    size = tuple(_number(meta, f"input.{name}", source) for name in _INPUT_SIZE)
    mean = np.float32(_number(meta, "input.mean", source))
    std = np.float32(_number(meta, "input.std", source))
    entry = f"files.{fmt}.input"
    layout = metadata_field(meta, f"{entry}.layout", source)
    dtype = metadata_field(meta, f"{entry}.dtype", source)
    if images.shape[1:] != size:
        raise ExportError(
            f"images are {images.shape[1:]}, the model wants {size}; resize them first"
        )
    x = (images.astype(np.float32) / 255.0 - mean) / std
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    if "quantization" in metadata_field(meta, entry, source):
        scale = _number(meta, f"{entry}.quantization.scale", source)
        zero_point = _number(meta, f"{entry}.quantization.zero_point", source)
        try:
            info = np.iinfo(dtype)
        except (TypeError, ValueError):
            raise ExportError(
                f"{source}: field {entry}.dtype is {dtype!r}, not an int type"
            ) from None
        x = np.clip(np.round(x / scale) + zero_point, info.min, info.max)
    try:
        return [np.ascontiguousarray(image[None], dtype=dtype) for image in x]
    except TypeError:
        raise ExportError(f"{source}: field {entry}.dtype is {dtype!r}, not a dtype") from None


def predict(bundle_dir: str | os.PathLike, images: np.ndarray, fmt: str) -> np.ndarray:
    """Float logits (N, classes) of the bundle's `fmt` file on uint8 RGB images."""
    meta = read_metadata(bundle_dir)
    source = Path(bundle_dir) / METADATA
    files = metadata_field(meta, "files", source)
    if not isinstance(files, dict) or fmt not in files:
        has = ", ".join(files) if isinstance(files, dict) else "none"
        raise ExportError(f"bundle {bundle_dir} has no {fmt} file (has {has})")
    field = functools.partial(metadata_field, meta, source=source)
    path = Path(bundle_dir) / str(field(f"files.{fmt}.path"))
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ExportError(f"{path} (named in {source}) cannot be read: {error}") from None
    if hashlib.sha256(data).hexdigest() != field(f"files.{fmt}.sha256"):
        raise ExportError(f"{path} does not match its sha256 in {source}")
    inputs = load_input(images, meta, fmt, source)
    runtime = field(f"files.{fmt}.runtime")
    output = field(f"files.{fmt}.output")
    if runtime == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        name = field(f"files.{fmt}.input.name")
        outputs = [session.run(None, {name: x})[0] for x in inputs]
    else:
        from ai_edge_litert.interpreter import Interpreter

        with native_noise_filtered():
            runner = Interpreter(model_content=data)
            runner.allocate_tensors()
        source, target = runner.get_input_details()[0], runner.get_output_details()[0]
        outputs = []
        for x in inputs:
            runner.set_tensor(source["index"], x)
            runner.invoke()
            outputs.append(runner.get_tensor(target["index"]))
    logits = np.concatenate(outputs).astype(np.float32)
    if isinstance(output, dict) and "quantization" in output:
        zero_point = _number(meta, f"files.{fmt}.output.quantization.zero_point", source)
        scale = _number(meta, f"files.{fmt}.output.quantization.scale", source)
        logits = (logits - zero_point) * scale
    return logits
