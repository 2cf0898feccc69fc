"""Run an exported bundle from its metadata.json alone, the way an app would: no arch string, no
PyTorch.  It doubles as the executable reference for docs/export.md and is what the tests use to
prove that the metadata is sufficient.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from models.export.bundle import read_metadata
from models.export.common import ExportError
from models.quiet import native_noise_filtered


def load_input(images: np.ndarray, meta: dict, fmt: str) -> list[np.ndarray]:
    """uint8 RGB images (N, H, W, 3) at the bundle's size -> one input array per image, as the
    file `fmt` expects (normalised, laid out, quantised if its input is int8)."""
    spec = meta["input"]
    entry = meta["files"][fmt]["input"]
    if images.shape[1:] != (spec["height"], spec["width"], spec["channels"]):
        raise ExportError(
            f"images are {images.shape[1:]}, the model wants "
            f"{(spec['height'], spec['width'], spec['channels'])}; resize them first"
        )
    x = (images.astype(np.float32) / 255.0 - np.float32(spec["mean"])) / np.float32(spec["std"])
    if entry["layout"] == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    if "quantization" in entry:
        q = entry["quantization"]
        info = np.iinfo(entry["dtype"])
        x = np.clip(np.round(x / q["scale"]) + q["zero_point"], info.min, info.max)
    return [np.ascontiguousarray(image[None], dtype=entry["dtype"]) for image in x]


def predict(bundle_dir: str | os.PathLike, images: np.ndarray, fmt: str) -> np.ndarray:
    """Float logits (N, classes) of the bundle's `fmt` file on uint8 RGB images."""
    meta = read_metadata(bundle_dir)
    if fmt not in meta["files"]:
        raise ExportError(f"bundle {bundle_dir} has no {fmt} file (has {', '.join(meta['files'])})")
    entry = meta["files"][fmt]
    data = (Path(bundle_dir) / entry["path"]).read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ExportError(f"{entry['path']} does not match its sha256 in metadata.json")
    inputs = load_input(images, meta, fmt)
    if entry["runtime"] == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        name = entry["input"]["name"]
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
    if "quantization" in entry["output"]:
        q = entry["output"]["quantization"]
        logits = (logits - q["zero_point"]) * q["scale"]
    return logits
