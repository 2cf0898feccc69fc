"""A network's memory at inference, estimated without a device: what ``reward.memory_source =
"estimate"`` stores as a candidate's ``memory_mb`` (README "Memory as a cost").

memory = parameter bytes + the peak of the activation bytes that are alive at the same time,
float32 (4 bytes a value), batch 1, in MB of 10^6 bytes.  The activations come from the
network's own module (``Network.build()``), traced with ``torch.fx`` and run once on a zero
image on PyTorch's ``meta`` device (shapes only, no arithmetic), so every family (MnasNet,
add-on, width-searched ResNets and DenseNets) is estimated the same way, from what it computes.

The peak follows how a mobile runtime plans its tensor arena: ops run in graph order; a tensor
is alive from the op that writes it to the last op that reads it (the network's output to the
end); batch norm, activations, dropout and reshapes write into their input's buffer when they
are its only reader (a converter folds batch norm into the convolution and fuses the
activation).  It models the arena without fragmentation, scratch buffers or the interpreter
itself: measured footprints are larger (BENCHMARKS.md, "Memory estimate vs LiteRT": LiteRT
holds ~0.7-0.8x these activation bytes but ~2x the weights, the file's and XNNPACK's copy).
`peak_activation_bytes` is the pure arithmetic; `estimate_memory` does the tracing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

BYTES_PER_VALUE = 4  # float32 parameters and activations
MEGABYTE = 1_000_000  # bytes: memory_mb here and kdas.memory_mb

# ops that write into their only input's buffer (fused or folded on a phone, or a view)
IN_PLACE_MODULES = (
    "BatchNorm1d",
    "BatchNorm2d",
    "ReLU",
    "ReLU6",
    "Hardswish",
    "Hardsigmoid",
    "SiLU",
    "Sigmoid",
    "Identity",
    "Dropout",
)
IN_PLACE_FUNCTIONS = ("relu", "relu6", "hardswish", "sigmoid", "silu", "dropout")
IN_PLACE_METHODS = ("flatten", "view", "reshape", "relu", "sigmoid")


class MemoryEstimateError(ValueError):
    """A network whose activations cannot be traced; the message says what to do instead."""


@dataclass(frozen=True)
class Op:
    """One op in execution order: its output `name`, the names it reads, its output's size in
    bytes, and whether it may write into its input's buffer (``in_place``)."""

    name: str
    inputs: tuple[str, ...]
    out_bytes: int
    in_place: bool = False


@dataclass(frozen=True)
class MemoryEstimate:
    param_bytes: int
    peak_activation_bytes: int

    @property
    def memory_mb(self) -> float:
        return (self.param_bytes + self.peak_activation_bytes) / MEGABYTE


def peak_activation_bytes(ops: Sequence[Op], outputs: Sequence[str]) -> int:
    """The most bytes alive at once while `ops` run in order (module docstring); `outputs`
    stay alive to the end.  Pure arithmetic over the op list."""
    readers: dict[str, int] = {}
    for op in ops:
        for name in op.inputs:
            readers[name] = readers.get(name, 0) + 1
    buffer_of: dict[str, int] = {}
    sizes: list[int] = []
    first: list[int] = []
    last: list[int] = []
    for step, op in enumerate(ops):
        for name in op.inputs:
            last[buffer_of[name]] = max(last[buffer_of[name]], step)
        source = op.inputs[0] if len(op.inputs) == 1 else None
        if op.in_place and source is not None and readers[source] == 1:
            buffer = buffer_of[source]
            sizes[buffer] = max(sizes[buffer], op.out_bytes)
        else:
            buffer = len(sizes)
            sizes.append(op.out_bytes)
            first.append(step)
            last.append(step)
        buffer_of[op.name] = buffer
    for name in outputs:
        last[buffer_of[name]] = len(ops)
    return max(
        (
            sum(size for size, a, b in zip(sizes, first, last, strict=True) if a <= step <= b)
            for step in range(len(ops))
        ),
        default=0,
    )


def traced_ops(module: Any, input_size: int, channels: int = 3) -> tuple[list[Op], list[str]]:
    """The ops of `module` (``torch.fx``-traced, shapes from one zero image at batch 1) and the
    names of its outputs; a `MemoryEstimateError` when it cannot be traced.  The module is moved
    to the ``meta`` device (its weights are gone afterwards)."""
    import torch
    from torch import fx
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        graph = fx.symbolic_trace(module.to("meta"))
        with torch.no_grad():
            image = torch.zeros(1, channels, input_size, input_size, device="meta")
            ShapeProp(graph).propagate(image)
    except Exception as error:
        raise MemoryEstimateError(f"{type(error).__name__}: {error}") from None
    ops, outputs = [], []
    for node in graph.graph.nodes:
        if node.op == "output":
            outputs = [arg.name for arg in node.all_input_nodes]
            continue
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise MemoryEstimateError(f"node {node.name} does not produce one tensor")
        inputs = tuple(arg.name for arg in node.all_input_nodes)
        ops.append(Op(node.name, inputs, meta.shape.numel() * BYTES_PER_VALUE, _in_place(node)))
    return ops, outputs


def _in_place(node: Any) -> bool:
    if node.op == "call_module":
        return type(node.graph.owning_module.get_submodule(node.target)).__name__ in (
            IN_PLACE_MODULES
        )
    if node.op == "call_function":
        return getattr(node.target, "__name__", "") in IN_PLACE_FUNCTIONS
    return node.op == "call_method" and node.target in IN_PLACE_METHODS


def module_memory(module: Any, input_size: int) -> MemoryEstimate:
    """The estimate of a built module taking ``1 x 3 x input_size x input_size`` images (the
    module ends on the ``meta`` device: pass one built for this)."""
    params = sum(p.numel() for p in module.parameters())
    ops, outputs = traced_ops(module.eval(), input_size)
    return MemoryEstimate(params * BYTES_PER_VALUE, peak_activation_bytes(ops, outputs))


def estimate_memory(network: Any) -> MemoryEstimate:
    """The estimate of a `models.network.Network` (its freshly built module)."""
    try:
        return module_memory(network.build(dropout=0.0), network.input_size)
    except MemoryEstimateError as error:
        raise MemoryEstimateError(
            f"cannot estimate the activation memory of {network.encode()[:60]!r} ({error}); "
            "use reward.memory_source = 'measured' with a phone in latency.backends, or "
            "another reward.cost"
        ) from None
