"""Single-layer PyTorch models for latency-table keys, and their conversion to one multi-signature
TFLite file per chunk of keys.

Each key becomes a module built from the same classes as the whole network (`models.builder`):
``layer`` keys are `Layer(key.layer_spec())`, the stem is the stem's `ConvBN`, the head is the
head conv + the same pooling + classifier as `Student`.  A chunk of keys is converted in one
litert-torch call with one signature per key (named by its index in the chunk), NHWC in and
NHWC out like the whole-network files, so no TRANSPOSE is timed.  One conversion call for many
layers pays the converter's fixed cost once.

torch and litert-torch are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence

from latency_tables.keys import LayerKey


def signature_name(index: int) -> str:
    return f"k{index:04d}"


def layer_module(key: LayerKey):
    """An eval-mode, BN-folded NCHW module computing exactly what `key` stands for."""
    import torch
    from torch import nn

    from models.builder import ConvBN, Layer, _init_weights
    from models.export.prepare import export_module

    if key.kind == "layer":
        module: nn.Module = Layer(key.layer_spec())
    elif key.kind == "stem":
        module = ConvBN(key.in_channels, key.out_channels, key.kernel, key.stride, act=key.act)
    else:

        class Head(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                channels = key.in_channels
                self.head: nn.Module = nn.Identity()
                if key.out_channels:
                    self.head = ConvBN(channels, key.out_channels, 1, act=key.act)
                    channels = key.out_channels
                self.classifier = nn.Linear(channels, key.classes)

            def forward(self, x: torch.Tensor) -> torch.Tensor:  # as Student.forward
                return self.classifier(self.head(x).mean((2, 3), keepdim=True).flatten(1))

        module = Head()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        _init_weights(module)
    return export_module(module)


def chunk_module(keys: Sequence[LayerKey]):
    """One module whose i-th input/output is the NHWC layer model of ``keys[i]``."""
    from torch import nn

    from models.export.tflite import quiet_litert_torch

    litert_torch = quiet_litert_torch()

    class Chunk(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.parts = nn.ModuleList(
                litert_torch.to_channel_last_io(
                    layer_module(key), args=[0], outputs=None if key.kind == "head" else [0]
                )
                for key in keys
            )

        def forward(self, *inputs):
            return tuple(part(x) for part, x in zip(self.parts, inputs, strict=True))

    return Chunk().eval()


def sample_input(key: LayerKey):
    import torch

    return torch.zeros(1, key.input_size, key.input_size, key.in_channels)


def convert_chunk(keys: Sequence[LayerKey]) -> list[bytes]:
    """The TFLite file of each key, from one litert-torch conversion of all of them.

    The chunk is converted as one graph of independent branches (one torch.export and one
    lowering for all of them: about half the cost of one signature per key, a fraction of one
    conversion per key) and then split into one flatbuffer per branch (`split_branches`).
    """
    from models.export.tflite import quiet_litert_torch

    litert_torch = quiet_litert_torch()
    module = chunk_module(keys)
    model = litert_torch.convert(module, tuple(sample_input(k) for k in keys))
    return split_branches(bytes(model.model_content()), len(keys))


def split_branches(model_bytes: bytes, count: int) -> list[bytes]:
    """Split a one-subgraph TFLite model whose signature inputs ``args_i`` and outputs
    ``output_i`` form `count` independent branches into `count` one-input one-output models.

    Each model keeps the branch's operators in their original (topological) order, its tensors
    (renumbered), the buffers they use and the operator codes; its signature is
    ``serving_default`` with input ``args_0`` and output ``output_0``.
    """
    import copy

    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    if len(model.subgraphs) != 1 or len(model.signatureDefs or []) != 1:
        raise ValueError("expected one subgraph and one signature in a chunk model")
    graph, signature = model.subgraphs[0], model.signatureDefs[0]
    inputs = {t.name.decode(): t.tensorIndex for t in signature.inputs}
    outputs = {t.name.decode(): t.tensorIndex for t in signature.outputs}
    if len(inputs) != count or len(outputs) != count:
        raise ValueError(f"chunk model has {len(inputs)} inputs for {count} layers")
    results = []
    for index in range(count):
        first, last = inputs[f"args_{index}"], outputs[f"output_{index}"]
        reached, ops = {first}, []
        for op_index, op in enumerate(graph.operators):
            if any(t in reached for t in op.inputs if t >= 0):
                ops.append(op_index)
                reached.update(t for t in op.outputs if t >= 0)
        if last not in reached:
            raise ValueError(f"output_{index} is not computed from args_{index}")
        used: list[int] = []
        for op_index in ops:
            op = graph.operators[op_index]
            for t in list(op.inputs) + list(op.outputs) + list(op.intermediates or []):
                if t >= 0 and t not in used:
                    used.append(t)
        renumber = {old: new for new, old in enumerate(used)}
        buffers = [schema.BufferT()]
        buffer_of: dict[int, int] = {0: 0}
        tensors = []
        for old in used:
            tensor = copy.copy(graph.tensors[old])
            if tensor.buffer not in buffer_of:
                buffer_of[tensor.buffer] = len(buffers)
                buffers.append(model.buffers[tensor.buffer])
            tensor.buffer = buffer_of[tensor.buffer]
            tensors.append(tensor)
        part = schema.SubGraphT()
        part.tensors = tensors
        part.inputs, part.outputs = [renumber[first]], [renumber[last]]
        part.operators = []
        for op_index in ops:
            op = copy.copy(graph.operators[op_index])
            op.inputs = [renumber[t] if t >= 0 else t for t in op.inputs]
            op.outputs = [renumber[t] if t >= 0 else t for t in op.outputs]
            if op.intermediates:
                op.intermediates = [renumber[t] for t in op.intermediates]
            part.operators.append(op)
        part.name = graph.name
        new = schema.ModelT()
        new.version, new.description = model.version, model.description
        new.operatorCodes = model.operatorCodes
        new.subgraphs, new.buffers = [part], buffers
        new.metadata = []
        for entry in model.metadata or []:
            moved = copy.copy(entry)
            buffer_of.setdefault(entry.buffer, len(buffers))
            if buffer_of[entry.buffer] == len(buffers):
                buffers.append(model.buffers[entry.buffer])
            moved.buffer = buffer_of[entry.buffer]
            new.metadata.append(moved)
        sig = schema.SignatureDefT()
        sig.signatureKey = b"serving_default"
        sig.subgraphIndex = 0
        sig.inputs = [_tensor_map(b"args_0", renumber[first])]
        sig.outputs = [_tensor_map(b"output_0", renumber[last])]
        new.signatureDefs = [sig]
        results.append(bytes(flatbuffer_utils.convert_object_to_bytearray(new)))
    return results


def _tensor_map(name: bytes, index: int):
    from ai_edge_litert import schema_py_generated as schema

    entry = schema.TensorMapT()
    entry.name, entry.tensorIndex = name, index
    return entry
