"""TFLite files through litert-torch (fp32) and ai-edge-quantizer (fp16 weights, int8).

The fp32 graph takes NHWC input (`litert_torch.to_channel_last_io`), so it carries no TRANSPOSE
and runs inside XNNPACK end to end.  fp16 and int8 files are derived from the fp32 flatbuffer,
not converted again, so they cost a fraction of a conversion:

* fp16: weights of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED stored as float16, each
  followed by a DEQUANTIZE; compute stays fp32 (XNNPACK folds the DEQUANTIZE into the packed
  weights at load time).
* int8: recipe ``static_wi8_ai8`` (int8 per-channel weights, int8 per-tensor activations), with
  activation ranges calibrated on real images.  Input/output stay float32 by default (a
  QUANTIZE after the input, a DEQUANTIZE before the output); ``io="int8"`` drops them and the
  caller quantises with the scale/zero point stored in the file (and in metadata.json).
  Activation ranges are global min/max over the calibration set (see `quantize_int8`).
  Files that are only timed skip the calibration: `quantize_int8_for_timing` gives every
  activation one fixed range (the same graph, op for op).

Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from models.export.common import ExportError
from models.export.prepare import export_module
from models.quiet import native_noise_filtered

INT8_IO = ("float", "int8")


def quiet_litert_torch():
    """The litert_torch module, imported with its per-pass progress log switched off (and
    what its native libraries print while loading filtered, `models.quiet`)."""
    with native_noise_filtered():
        import litert_torch

    litert_torch.config.show_progress = False  # its rich log of every pass goes to stdout
    return litert_torch


def convert_fp32(model: nn.Module, input_size: int) -> bytes:
    """The fp32 flatbuffer of `model` (an NCHW module, e.g. a `Student`) with a fixed
    (1, input_size, input_size, 3) NHWC float input and (1, classes) float output."""
    litert_torch = quiet_litert_torch()
    module = litert_torch.to_channel_last_io(export_module(model), args=[0]).eval()
    sample = (torch.zeros(1, input_size, input_size, 3),)
    return bytes(litert_torch.convert(module, sample).model_content())


@contextlib.contextmanager
def _no_tqdm():
    """ai-edge-quantizer draws tqdm bars on stderr for every calibration; hide them."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def quantize_fp16(fp32_model: bytes) -> bytes:
    """fp16 weights, fp32 compute (ai-edge-quantizer's float-casting algorithm)."""
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    q = quantizer.Quantizer(bytearray(fp32_model))
    q.update_quantization_recipe(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        algorithm_key=AlgorithmName.FLOAT_CASTING,
        op_config=qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(
                num_bits=16, dtype=qtyping.TensorDataType.FLOAT
            ),
            compute_precision=qtyping.ComputePrecision.FLOAT,
            explicit_dequantize=True,
        ),
    )
    with _no_tqdm():
        result = q.quantize(enable_progress_report=False)
    return bytes(result.quantized_model)


def quantize_int8(
    fp32_model: bytes, calibration_nhwc: np.ndarray, io: str = "float", num_threads: int = 2
) -> bytes:
    """Full-integer post-training quantisation (``static_wi8_ai8``), activation ranges taken
    from `calibration_nhwc` (float32, normalised, NHWC, a few hundred real images).

    Ranges are the global min/max over all calibration images, as TFLite's own calibrator
    does.  `Quantizer.calibrate` instead keeps a moving average (factor 0.95) of per-sample
    min/max; with one image per sample that clips every tensor's tails (ReLU outputs lose their
    top third) and on a trained CIFAR net cut top-1 agreement with fp32 from 97% to 74%.
    """
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    if calibration_nhwc is None or len(calibration_nhwc) == 0:
        raise ExportError(
            "int8 quantisation needs calibration images (a few hundred real training images); "
            "pass them, or drop tflite-int8 from the formats"
        )
    q = _int8_quantizer(fp32_model, io)
    recipes = recipe_manager.RecipeManager()
    recipes.load_quantization_recipe(q.get_quantization_recipe())
    signature, input_name = _signature_input(fp32_model)
    samples = [{input_name: calibration_nhwc[i : i + 1]} for i in range(len(calibration_nhwc))]

    def ranges() -> dict:
        found = calibrator.Calibrator(
            bytearray(fp32_model), num_threads=num_threads, qsv_update_func=qsv_utils.min_max_update
        )
        found.calibrate({signature: samples}, recipes)
        return widen_degenerate_ranges(found.get_model_qsvs())

    return _quantize_int8_with(q, fp32_model, ranges)


TIMING_RANGE = (-1.0, 1.0)  # the activation range of every tensor of a timing-only int8 file


def quantize_int8_for_timing(fp32_model: bytes, io: str = "float") -> bytes:
    """The int8 file `quantize_int8` makes, op for op (ops, tensor shapes and types, options),
    without calibration: every activation tensor gets the range `TIMING_RANGE`.

    Only for files that are timed, never run for their outputs: latency does not depend on
    the values of the scales, and skipping the calibration interpreter halves the cost
    (BENCHMARKS.md, "Fast int8 latency files").  Shipped int8 files are calibrated.
    """
    q = _int8_quantizer(fp32_model, io)
    return _quantize_int8_with(q, fp32_model, lambda: timing_ranges(fp32_model))


def for_timing(fp32_model: bytes, precision: str, io: str = "float") -> bytes:
    """The latency-only file of `precision` ("fp32", "fp16", "int8") derived from an fp32
    flatbuffer: as is, fp16 weights, or int8 without calibration (`io="int8"`: no QUANTIZE /
    DEQUANTIZE at the boundaries, e.g. for a layer timed as a slice of an int8 network)."""
    if precision == "fp32":
        return fp32_model
    if precision == "fp16":
        return quantize_fp16(fp32_model)
    if precision == "int8":
        return quantize_int8_for_timing(fp32_model, io)
    raise ExportError(f"precision must be fp32, fp16 or int8, not {precision!r}")


def timing_ranges(fp32_model: bytes) -> dict:
    """tensor name -> ``{"min", "max"}`` (`TIMING_RANGE`, shaped as the calibrator shapes
    them) for every non-constant tensor of the model's one subgraph: the tensors the
    calibrator would have recorded."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(fp32_model, 0)  # read in place, not unpacked (~4x faster)
    graph = model.Subgraphs(0)
    low, high = TIMING_RANGE
    ranges = {}
    for index in range(graph.TensorsLength()):
        tensor = graph.Tensors(index)
        buffer = model.Buffers(tensor.Buffer())
        if buffer.DataLength() > 0 or buffer.Size() > 0:
            continue  # a constant (inline, or stored after the flatbuffer): quantised by value
        ones = np.ones((1,) * tensor.ShapeLength(), np.float32)
        ranges[tensor.Name().decode()] = {"min": low * ones, "max": high * ones}
    return ranges


def _int8_quantizer(fp32_model: bytes, io: str):
    """An ai-edge-quantizer `Quantizer` with the ``static_wi8_ai8`` recipe, float or int8 I/O."""
    from ai_edge_quantizer import qtyping, quantizer, recipe
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    if io not in INT8_IO:
        raise ExportError(f"int8 input/output must be one of {INT8_IO}, got {io!r}")
    q = quantizer.Quantizer(bytearray(fp32_model), recipe.static_wi8_ai8())
    if io == "float":
        for boundary in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            q.update_quantization_recipe(
                regex=".*", operation_name=boundary, algorithm_key=AlgorithmName.NO_QUANTIZE
            )
    return q


def _quantize_int8_with(q, fp32_model: bytes, ranges) -> bytes:
    """Quantise with the activation ranges `ranges()` returns; a failure inside the quantizer
    becomes an `ExportError` that says what to do."""
    try:
        with _no_tqdm(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging" notice
            result = q.quantize(ranges(), enable_progress_report=False)
    except (ValueError, RuntimeError, KeyError) as error:
        odd = sorted({op for op in op_names(fp32_model) if op.startswith(("STABLEHLO", "CUSTOM"))})
        hint = (
            f"the fp32 graph contains ops that are not TFLite builtins ({', '.join(odd)}), which "
            "the quantizer cannot handle; report the arch string"
            if odd
            else "report the arch string"
        )
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"int8 quantisation failed ({first}): {hint}") from None
    return bytes(result.quantized_model)


MIN_RANGE = 1e-4


def widen_degenerate_ranges(qsvs: dict, min_range: float = MIN_RANGE) -> dict:
    """Give every calibrated tensor a range of at least `min_range`.

    A tensor that is all zeros on every calibration image (a ReLU whose channels are dead, e.g.
    a 2-channel squeeze-and-excite bottleneck) otherwise gets a scale of ~1e-12, and the
    requantisation multiplier of the op producing it (~1e7) is far beyond what XNNPACK accepts
    (< 256): the file then fails with "failed to create XNNPACK runtime".  Widening [0, 0] to
    [0, 1e-4] keeps zero exact and the multiplier in range; tensors with a real range are
    untouched.
    """
    widened = {}
    for name, qsv in qsvs.items():
        if isinstance(qsv, dict) and "min" in qsv and "max" in qsv:
            low, high = np.asarray(qsv["min"]), np.asarray(qsv["max"])
            qsv = {**qsv, "max": np.where(high - low < min_range, low + min_range, high)}
        widened[name] = qsv
    return widened


def op_names(model: bytes) -> list[str]:
    """The builtin op name of every node of the file, in order (no delegate applied)."""
    return [detail["op_name"] for detail in _plain(model)._get_ops_details()]


def interpreter(model: bytes, num_threads: int = 2, allocate: bool = True, **options: Any):
    """An ai-edge-litert Interpreter (default delegate: XNNPACK), allocated unless told not
    to (the graph and its ops are known before; delegates are applied at allocation)."""
    from ai_edge_litert.interpreter import Interpreter

    with native_noise_filtered():
        runner = Interpreter(model_content=model, num_threads=num_threads, **options)
        if allocate:
            runner.allocate_tensors()
    return runner


def _plain(model: bytes):
    """The file's graph on the reference kernels, not allocated: enough to read its I/O."""
    from ai_edge_litert.interpreter import OpResolverType

    return interpreter(
        model,
        num_threads=1,
        allocate=False,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )


def _signature_input(model: bytes) -> tuple[str, str]:
    signatures = _plain(model).get_signature_list()
    (name, signature), *_ = signatures.items()
    return name, signature["inputs"][0]


def io_spec(model: bytes) -> dict:
    """Input and output tensor of the file: shape, dtype and (for int8 I/O) quantisation."""
    runner = _plain(model)
    spec = {}
    for role, (detail,) in (
        ("input", runner.get_input_details()),
        ("output", runner.get_output_details()),
    ):
        entry = {"shape": [int(d) for d in detail["shape"]], "dtype": detail["dtype"].__name__}
        scale, zero_point = detail["quantization"]
        if scale:
            entry["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
        spec[role] = entry
    return spec


def run(model: bytes, images_nhwc: np.ndarray, num_threads: int = 2) -> np.ndarray:
    """Float logits of the file on float NHWC images, one image per invoke (the file has batch
    1).  int8 inputs/outputs are quantised/dequantised with the file's own parameters."""
    runner = interpreter(model, num_threads=num_threads)
    (source,), (target,) = runner.get_input_details(), runner.get_output_details()
    in_scale, in_zero = source["quantization"]
    out_scale, out_zero = target["quantization"]
    outputs = []
    for image in images_nhwc:
        x = image[None]
        if source["dtype"] != np.float32:
            info = np.iinfo(source["dtype"])
            x = np.clip(np.round(x / in_scale) + in_zero, info.min, info.max)
        runner.set_tensor(source["index"], x.astype(source["dtype"]))
        runner.invoke()
        y = runner.get_tensor(target["index"]).astype(np.float32)
        if target["dtype"] != np.float32:
            y = (y - out_zero) * out_scale
        outputs.append(y)
    return np.concatenate(outputs)
