"""ONNX files through the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``: 10-20x
faster than the dynamo exporter on these networks, and exact), checked with `onnx.checker`.

Batch is fixed at 1, like the TFLite files.  Layout: NCHW input by default (what ONNX tools and
onnxruntime expect); ``layout="NHWC"`` puts the permute inside the graph (one Transpose at the
input) so that the same preprocessed array feeds the .tflite and the .onnx file.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn

from models.export.common import ExportError
from models.export.prepare import export_module

LAYOUTS = ("NCHW", "NHWC")
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def convert(model: nn.Module, input_size: int, layout: str = "NCHW") -> bytes:
    """The checked ONNX bytes of `model` (an NCHW module) with input `INPUT_NAME` of shape
    (1, 3, S, S) for NCHW or (1, S, S, 3) for NHWC, float32, and output `OUTPUT_NAME`."""
    import onnx

    if layout not in LAYOUTS:
        raise ExportError(f"ONNX layout must be one of {LAYOUTS}, got {layout!r}")
    module = export_module(model, nhwc=layout == "NHWC")
    shape = (1, 3, input_size, input_size) if layout == "NCHW" else (1, input_size, input_size, 3)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module,
            (torch.zeros(shape),),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            do_constant_folding=True,
        )
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    return data


def session(model: bytes, num_threads: int = 2):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def run(model: bytes, images_nhwc: np.ndarray, num_threads: int = 2) -> np.ndarray:
    """Logits of the file on float NHWC images, one image per run (batch 1)."""
    runner = session(model, num_threads)
    (source,) = runner.get_inputs()
    nchw = source.shape[1] == 3 and source.shape[-1] != 3
    outputs = []
    for image in images_nhwc:
        x = image.transpose(2, 0, 1)[None] if nchw else image[None]
        outputs.append(runner.run(None, {source.name: np.ascontiguousarray(x)})[0])
    return np.concatenate(outputs).astype(np.float32)


def op_counts(model: bytes) -> dict[str, int]:
    """ONNX node types and how often each occurs."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load_from_string(model).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
