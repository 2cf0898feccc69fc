"""Latency-only network files written directly (`layer_writer.write_network`), without the
converter, and the op-by-op comparison that keeps them honest.

A litert-torch conversion of a candidate costs ~7 s of CPU (tracing, decompositions, lowering);
the direct writer lays out the same graph from the arch in ~50 ms.  fp16 and int8 files are
derived from the direct fp32 flatbuffer as the converter path derives them from its fp32 file
(`models.export.tflite.quantize_fp16`; int8 with `quantize_int8_for_timing`: the graph the
calibrated `quantize_int8` makes, op for op, without running a calibration interpreter, since
the values of the ranges do not change latency), so every TFLite format has a direct file.
ONNX is not covered: `torch.onnx` is already ~0.2 s per network and there is no writer.

`graph_signature` is what "the same graph" means: the multiset of (op, input shapes and types,
output shapes and types, options) of the one subgraph.  Weight values are not compared (the
direct file's are seeded random numbers; latency does not depend on them).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from device_bench.layer_writer import UnsupportedLayer, supports, write_network

DIRECT_FORMATS = ("tflite", "tflite-fp16", "tflite-int8")
WRITER_VERSION = 3  # bump when write_network's output changes (3: int8 without calibration)
SEED = 0


def covers(arch, fmt: str) -> bool:
    """Can `arch` be written directly in `fmt`?  (TFLite formats, MnasNet-space `Arch`
    networks with ReLU / ReLU6; other network families go to the converter.)"""
    from latency_tables.keys import arch_keys
    from models.arch import Arch

    if fmt not in DIRECT_FORMATS or not isinstance(arch, Arch):
        return False
    return all(supports(key) for key in arch_keys(arch))


def direct_bytes(arch, fmt: str) -> bytes:
    """The latency-only `fmt` file of `arch`, written directly (no converter)."""
    if fmt not in DIRECT_FORMATS:
        raise UnsupportedLayer(
            f"the direct writer makes {', '.join(DIRECT_FORMATS)} files, not {fmt!r}"
        )
    from models.export.common import FORMATS
    from models.export.tflite import for_timing

    return for_timing(write_network(arch, seed=SEED), FORMATS[fmt].precision)


def direct_path(cache_dir: str | Path, arch, fmt: str) -> Path:
    from models.export.cache import cache_root
    from models.export.common import FORMATS

    return (
        cache_root(cache_dir)
        / f"direct-v{WRITER_VERSION}"
        / arch.key()
        / fmt
        / (FORMATS[fmt].filename)
    )


def write_direct(cache_dir: str | Path, arch, fmt: str) -> Path:
    """Write the direct `fmt` file of `arch` under `cache_dir` (atomically); its path."""
    from models.files import atomic_write

    return atomic_write(direct_path(cache_dir, arch, fmt), direct_bytes(arch, fmt))


def graph_signature(model: bytes) -> Counter:
    """Multiset of (op, input (shape, type)s, output (shape, type)s, options) of a one-subgraph
    TFLite model: equal for two files that run the same ops on the same tensors."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    parsed = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    graph = parsed.subgraphs[0]

    def tensor(index: int):
        if index < 0:
            return None
        t = graph.tensors[index]
        return (tuple(t.shape), int(t.type))

    ops = []
    for op in graph.operators:
        code = parsed.operatorCodes[op.opcodeIndex]
        fields = ()
        if op.builtinOptions is not None:
            skip = ("quantizedBiasType", "quantSpec")
            fields = tuple(
                sorted((k, str(v)) for k, v in vars(op.builtinOptions).items() if k not in skip)
            )
        ops.append(
            (
                names[max(code.builtinCode, code.deprecatedBuiltinCode)],
                tuple(tensor(t) for t in op.inputs),
                tuple(tensor(t) for t in op.outputs),
                fields,
            )
        )
    return Counter(ops)


def graph_differences(direct: bytes, converted: bytes, limit: int = 3) -> list[str]:
    """What differs between two files' graphs (empty: the same ops, shapes, types, options);
    at most `limit` lines per side."""
    a, b = graph_signature(direct), graph_signature(converted)
    lines = [f"only in the direct file: {op}" for op in list((a - b).elements())[:limit]]
    lines += [f"only in the converted file: {op}" for op in list((b - a).elements())[:limit]]
    return lines
