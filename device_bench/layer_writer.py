"""Write single-layer TFLite files directly, op for op as litert-torch converts them.

Converting one layer with litert-torch costs 0.6-2 s of tracing (torch.export and its
decompositions); a space has ~2,400 layer variants, so a table would spend most of an hour
converting, more on a loaded machine.  The converted graphs are small and completely regular,
so this module writes the same graph from the `LayerKey` in milliseconds:

* conv / depthwise conv, stride 1: ``SAME`` padding on the input; stride 2: ``PAD`` (k // 2 on
  each side) then ``VALID`` (PyTorch pads symmetrically, TFLite's SAME would not);
  BN folded into the bias, ReLU / ReLU6 fused into the conv;
* squeeze-excite: ``MEAN`` (keep dims) -> 1x1 ``CONV_2D`` + ReLU -> 1x1 ``CONV_2D`` ->
  ``LOGISTIC`` -> ``MUL``;
* pooling shortcut: ``PAD`` 1 -> 3x3 ``AVERAGE_POOL_2D`` ``VALID`` (zero padding counted)
  [-> 1x1 ``CONV_2D``], sharing the body's ``PAD`` when both pad the input by 1; ``ADD``;
* head: 1x1 ``CONV_2D`` + act -> ``MEAN`` -> ``FULLY_CONNECTED`` (zero bias dropped);
* on a 1x1 map (a 32 px input in a stride-32 space) litert-torch drops the squeeze-excite
  ``MEAN`` and writes the head's as ``SUM``; so does the writer.

Weights are seeded random numbers (latency does not depend on their values).  Hard-swish
networks are not covered (litert-torch decomposes hard-swish/hard-sigmoid differently); the
writer refuses them and the build falls back to litert-torch.  `tests/test_tables_build.py`
checks the written graphs against litert-torch's, op by op, tensor shape by tensor shape.
"""

from __future__ import annotations

from latency_tables.keys import LayerKey

FUSED = {"re": 1, "r6": 3}  # TFLite ActivationFunctionType: RELU, RELU6
SAME, VALID = 0, 1
FLOAT32, INT32 = 0, 2


class UnsupportedLayer(ValueError):
    """A layer the direct writer does not cover (use litert-torch for it)."""


def supports(key: LayerKey) -> bool:
    return key.act in FUSED


class _Graph:
    def __init__(self, seed: int) -> None:
        import numpy as np
        from ai_edge_litert import schema_py_generated as schema

        self.np, self.schema = np, schema
        self.rng = np.random.default_rng(seed)
        self.tensors: list = []
        self.buffers: list = [schema.BufferT()]
        self.operators: list = []
        self.opcodes: dict[int, int] = {}
        self.codes: list = []

    def tensor(self, shape, dtype=FLOAT32, data=None, name="") -> int:
        t = self.schema.TensorT()
        t.shape = list(shape)
        t.type = dtype
        t.name = name.encode() or f"t{len(self.tensors)}".encode()
        t.buffer = 0
        if data is not None:
            b = self.schema.BufferT()
            b.data = self.np.frombuffer(data.tobytes(), dtype=self.np.uint8)
            t.buffer = len(self.buffers)
            self.buffers.append(b)
        self.tensors.append(t)
        return len(self.tensors) - 1

    def weights(self, shape) -> int:
        return self.tensor(shape, data=self.rng.standard_normal(shape).astype("float32") * 0.1)

    def op(self, name: str, inputs, outputs, options_name: str | None = None, **options) -> None:
        s = self.schema
        code = getattr(s.BuiltinOperator, name)
        if code not in self.opcodes:
            oc = s.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = 1
            self.opcodes[code] = len(self.codes)
            self.codes.append(oc)
        o = s.OperatorT()
        o.opcodeIndex = self.opcodes[code]
        o.inputs, o.outputs = list(inputs), list(outputs)
        if options_name:
            opts = getattr(s, f"{options_name}T")()
            for field, value in options.items():
                setattr(opts, field, value)
            o.builtinOptionsType = getattr(s.BuiltinOptions, options_name)
            o.builtinOptions = opts
        self.operators.append(o)

    # -- layers ----------------------------------------------------------------------------

    def pad(self, x: int, shape, amount: int) -> tuple[int, list]:
        n, h, w, c = shape
        paddings = self.np.array([[0, 0], [amount, amount], [amount, amount], [0, 0]], "int32")
        out_shape = [n, h + 2 * amount, w + 2 * amount, c]
        out = self.tensor(out_shape)
        self.op("PAD", [x, self.tensor([4, 2], INT32, paddings)], [out], "PadOptions")
        return out, out_shape

    def conv(self, x, shape, cout, kernel, stride, act, *, depthwise=False, padded=None):
        """Conv (or depthwise) with bias; `padded` is an existing (tensor, shape) PAD output."""
        n, h, w, cin = shape
        size = (h - 1) // stride + 1
        source, padding = x, SAME
        if stride != 1 and kernel > 1:
            source, _ = padded if padded is not None else self.pad(x, shape, kernel // 2)
            padding = VALID
        elif kernel == 1:
            padding = VALID
        out_shape = [n, size, size, cout]
        out = self.tensor(out_shape)
        fused = FUSED[act] if act else 0
        if depthwise:
            inputs = [source, self.weights([1, kernel, kernel, cout]), self.weights([cout])]
            self.op(
                "DEPTHWISE_CONV_2D", inputs, [out], "DepthwiseConv2DOptions",
                padding=padding, strideW=stride, strideH=stride, depthMultiplier=1,
                fusedActivationFunction=fused, dilationWFactor=1, dilationHFactor=1,
            )  # fmt: skip
        else:
            inputs = [source, self.weights([cout, kernel, kernel, cin]), self.weights([cout])]
            self.op(
                "CONV_2D", inputs, [out], "Conv2DOptions",
                padding=padding, strideW=stride, strideH=stride,
                fusedActivationFunction=fused, dilationWFactor=1, dilationHFactor=1,
            )  # fmt: skip
        return out, out_shape

    def mean(self, x, shape, keep_dims: bool):
        """Global average pool; on a 1x1 map litert-torch drops it (keep_dims) or writes a
        ``SUM`` (the head's pool to [n, c])."""
        n, h, w, c = shape
        if (h, w) == (1, 1) and keep_dims:
            return x, shape
        out_shape = [n, 1, 1, c] if keep_dims else [n, c]
        out = self.tensor(out_shape)
        axes = self.tensor([2], INT32, self.np.array([1, 2], "int32"))
        op = "SUM" if (h, w) == (1, 1) else "MEAN"
        self.op(op, [x, axes], [out], "ReducerOptions", keepDims=keep_dims)
        return out, out_shape

    def squeeze_excite(self, x, shape, squeeze: int, act: str):
        pooled, pooled_shape = self.mean(x, shape, True)
        reduced, reduced_shape = self.conv(pooled, pooled_shape, squeeze, 1, 1, act)
        expanded, expanded_shape = self.conv(reduced, reduced_shape, shape[3], 1, 1, None)
        gate = self.tensor(expanded_shape)
        self.op("LOGISTIC", [expanded], [gate])
        out = self.tensor(shape)
        self.op("MUL", [x, gate], [out], "MulOptions", fusedActivationFunction=0)
        return out, shape

    def add(self, a, b, shape):
        out = self.tensor(shape)
        self.op("ADD", [a, b], [out], "AddOptions", fusedActivationFunction=0, potScaleInt16=True)
        return out

    def finish(self, x: int, y: int) -> bytes:
        from ai_edge_litert.tools import flatbuffer_utils

        s = self.schema
        graph = s.SubGraphT()
        graph.tensors, graph.operators = self.tensors, self.operators
        graph.inputs, graph.outputs = [x], [y]
        graph.name = b"main"
        model = s.ModelT()
        model.version = 3
        model.description = b"pearl direct layer writer (litert-torch graph layout)"
        model.operatorCodes, model.subgraphs, model.buffers = self.codes, [graph], self.buffers
        signature = s.SignatureDefT()
        signature.signatureKey, signature.subgraphIndex = b"serving_default", 0
        signature.inputs = [_tensor_map(b"args_0", x)]
        signature.outputs = [_tensor_map(b"output_0", y)]
        model.signatureDefs = [signature]
        return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _tensor_map(name: bytes, index: int):
    from ai_edge_litert import schema_py_generated as schema

    entry = schema.TensorMapT()
    entry.name, entry.tensorIndex = name, index
    return entry


def write_layer(key: LayerKey, seed: int = 0) -> bytes:
    """The TFLite flatbuffer of `key` (NHWC float32 in and out), as litert-torch lays it out."""
    g = _Graph(seed)
    shape = [1, key.input_size, key.input_size, key.in_channels]
    x = g.tensor(shape, name="args_0")
    y, _ = _emit(g, key, x, shape)
    return g.finish(x, y)


def write_network(arch, seed: int = 0) -> bytes:
    """A whole network (stem, layers, head chained), as litert-torch converts `Student`:
    its graph is exactly the union of its layers' graphs (checked against real conversions
    in `tests/test_tables_build.py`)."""
    from latency_tables.keys import arch_keys

    g = _Graph(seed)
    shape = [1, arch.input_size, arch.input_size, 3]
    x = g.tensor(shape, name="args_0")
    y = x
    for key in arch_keys(arch):
        y, shape = _emit(g, key, y, shape)
    return g.finish(x, y)


def _emit(g: _Graph, key: LayerKey, x: int, shape: list) -> tuple[int, list]:
    """Add the ops of `key` reading tensor `x`; returns the output tensor and its shape."""
    if not supports(key):
        raise UnsupportedLayer(f"the direct writer does not cover activation {key.act!r}")
    if key.kind == "stem":
        return g.conv(x, shape, key.out_channels, key.kernel, key.stride, key.act)
    if key.kind == "head":
        h, h_shape = x, shape
        if key.out_channels:
            h, h_shape = g.conv(x, shape, key.out_channels, 1, 1, key.act)
        pooled, pooled_shape = g.mean(h, h_shape, False)
        out = g.tensor([1, key.classes])
        weights = g.weights([key.classes, pooled_shape[1]])
        g.op(
            "FULLY_CONNECTED", [pooled, weights, -1], [out], "FullyConnectedOptions",
            fusedActivationFunction=0, weightsFormat=0, keepNumDims=True,
            asymmetricQuantizeInputs=False,
        )  # fmt: skip
        return out, [1, key.classes]
    spec = key.layer_spec()
    k, s, act = key.kernel, key.stride, key.act
    # a PAD of the input by 1 is shared by a stride-2 body conv on the input and the pool
    shared = None
    body_on_input = spec.op in ("conv", "ds")
    if spec.skip == "pool" and ((s != 1 and body_on_input and k // 2 == 1) or s == 1):
        shared = g.pad(x, shape, 1)
    h, h_shape = x, shape
    if spec.op == "conv":
        padded = shared if (s != 1 and k // 2 == 1) else None
        h, h_shape = g.conv(h, h_shape, spec.out_channels, k, s, act, padded=padded)
    else:
        if spec.op == "mb":
            h, h_shape = g.conv(h, h_shape, spec.mid_channels, 1, 1, act)
        padded = shared if (spec.op == "ds" and s != 1 and k // 2 == 1) else None
        h, h_shape = g.conv(h, h_shape, spec.mid_channels, k, s, act, depthwise=True, padded=padded)
    if spec.se_ratio:
        h, h_shape = g.squeeze_excite(h, h_shape, spec.se_channels, act)
    if spec.op != "conv":
        h, h_shape = g.conv(h, h_shape, spec.out_channels, 1, 1, None)
    if spec.skip == "id":
        return g.add(h, x, h_shape), h_shape
    if spec.skip == "pool":
        padded, padded_shape = shared if shared is not None else g.pad(x, shape, 1)
        size = (key.input_size - 1) // s + 1
        pool_shape = [1, size, size, key.in_channels]
        pooled = g.tensor(pool_shape)
        g.op(
            "AVERAGE_POOL_2D", [padded], [pooled], "Pool2DOptions",
            padding=VALID, strideW=s, strideH=s, filterWidth=3, filterHeight=3,
            fusedActivationFunction=0,
        )  # fmt: skip
        if spec.projects_shortcut:
            pooled, pool_shape = g.conv(pooled, pool_shape, spec.out_channels, 1, 1, None)
        return g.add(h, pooled, h_shape), h_shape
    return h, h_shape
