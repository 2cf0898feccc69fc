"""MnasNet-space networks with per-layer widths: the ``mnasw:`` family (`models.network`).

An `models.arch.Arch` describes blocks of identical layers whose widths follow from the block's
output channels, expand ratio and SE percentage.  Gu & Tresp gates thin each layer on its own,
so here every *layer* is one token with its widths written out::

    mnasw:in32_cls10|stem_k3_s1_c16_re|mb_k5_s2_e48_q4_noskip_c24_r6|mb_k5_s1_e72_q6_id_c24_r6
    |ds_k3_s1_q0_noskip_c32_r6|head_c64_re

The stem and head tokens are an Arch's.  A layer is
``<op>_k<kernel>_s<stride>[_e<inner>]_q<squeeze>_<skip>_c<out>_<act>``: ``e`` (``mb`` only) is
the expanded width (expansion 1x1 conv, depthwise conv and SE run on it); a ``ds`` layer's
depthwise conv runs on its input channels and a ``conv`` layer's SE on its output channels.
``q`` is the squeeze-and-excite width, written explicitly (0: no SE; an Arch's ``se25`` becomes
``round(0.25 * layer input channels)``).  The skip is the one built: ``id`` (stride 1, in = out
channels), ``pool`` (3x3 average pool of the input added, in = out channels), ``poolp`` (the
pooled input through a 1x1 conv-BN, any widths) or ``noskip``.

`MnasW.from_arch` writes an Arch at full width; its module (`models.builder.LayerNet`) has the
same weight names as the Arch's, so a trained MnasNet-space checkpoint loads as is.  Pure
Python (no torch) until ``build``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from models.arch import KERNELS, STRIDES, Arch, HeadSpec, StemSpec
from models.layers import conv_output_size, expand_layers
from models.widths_common import construct, fail, key_of, parse_header, split_tokens

PREFIX = "mnasw"
_N = r"(0|[1-9][0-9]*)"
_ACT = r"(re|r6|hs)"
_STEM = re.compile(rf"stem_k{_N}_s{_N}_c{_N}_{_ACT}")
_HEAD = re.compile(rf"head_c{_N}_{_ACT}")
_LAYER = re.compile(
    rf"(conv|ds|mb)_k{_N}_s{_N}(?:_e{_N})?_q{_N}_(noskip|id|poolp|pool)_c{_N}_{_ACT}"
)
_LAYER_HELP = (
    "expected <conv|ds|mb>_k<kernel>_s<stride>[_e<inner>]_q<squeeze>_<noskip|id|pool|poolp>"
    "_c<out>_<re|r6|hs>"
)


@dataclass(frozen=True)
class MnasLayer:
    """One layer with its widths; the fields `models.builder.Layer` and `models.costs.layer_cost`
    read from a `models.layers.LayerSpec`, with the inner and SE widths given, not derived."""

    op: str  # conv | ds | mb
    kernel: int
    stride: int
    inner: int  # mb: the expanded width; 0 for conv / ds
    squeeze: int  # SE width; 0: no SE
    skip: str  # noskip | id | pool (the skip built)
    project: bool  # pool skip through a 1x1 conv-BN ("poolp")
    in_channels: int
    out_channels: int
    input_size: int
    act: str

    @property
    def mid_channels(self) -> int:
        """Channels of the depthwise conv and SE (of the conv and SE for ``conv``)."""
        return {"mb": self.inner, "ds": self.in_channels, "conv": self.out_channels}[self.op]

    @property
    def se_channels(self) -> int:
        return self.squeeze

    @property
    def projects_shortcut(self) -> bool:
        return self.project

    @property
    def output_size(self) -> int:
        return conv_output_size(self.input_size, self.stride)

    @property
    def skip_token(self) -> str:
        """The skip as written: ``poolp`` for a pool skip through a 1x1 conv."""
        return "poolp" if self.project else self.skip

    @property
    def joins_input(self) -> bool:
        """Is the output added channel by channel to the input (``id``, ``pool``)?"""
        return self.skip in ("id", "pool") and not self.project

    def check(self) -> None:
        """ValueError for an impossible layer (the parser pins it to the token)."""
        if self.kernel not in KERNELS or self.stride not in STRIDES:
            raise ValueError(f"kernel must be one of {KERNELS} and stride one of {STRIDES}")
        if (self.op == "mb") != (self.inner > 0):
            raise ValueError("an mb layer needs its expanded width e<channels> >= 1; conv/ds none")
        if min(self.in_channels, self.out_channels) < 1:
            raise ValueError("widths must be >= 1")
        if self.skip == "id" and (self.stride != 1 or self.in_channels != self.out_channels):
            raise ValueError(
                f"id needs stride 1 and as many output channels as input ({self.in_channels}); "
                "write noskip"
            )
        if self.skip == "pool" and not self.project and self.in_channels != self.out_channels:
            raise ValueError(
                f"pool adds the input as is: it needs {self.in_channels} output channels; "
                "write poolp for a pool skip through a 1x1 conv"
            )

    def encode(self) -> str:
        inner = f"_e{self.inner}" if self.op == "mb" else ""
        return (
            f"{self.op}_k{self.kernel}_s{self.stride}{inner}_q{self.squeeze}_{self.skip_token}"
            f"_c{self.out_channels}_{self.act}"
        )


@dataclass(frozen=True)
class MnasW:
    input_size: int
    num_classes: int
    stem: StemSpec
    layers: tuple[MnasLayer, ...]
    head: HeadSpec

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("an mnasw network needs at least one layer")
        channels = self.stem.out_channels
        size = conv_output_size(self.input_size, self.stem.stride)
        for index, layer in enumerate(self.layers):
            if (layer.in_channels, layer.input_size) != (channels, size):
                raise ValueError(f"layer {index + 1} does not start where layer {index} ends")
            layer.check()
            channels, size = layer.out_channels, layer.output_size

    @classmethod
    def from_arch(cls, arch: Arch) -> MnasW:
        """`arch` at full width: the same network, one token per layer."""
        layers = tuple(
            MnasLayer(
                spec.op,
                spec.kernel,
                spec.stride,
                spec.mid_channels if spec.op == "mb" else 0,
                spec.se_channels,
                spec.skip,
                spec.projects_shortcut,
                spec.in_channels,
                spec.out_channels,
                spec.input_size,
                spec.act,
            )
            for spec in expand_layers(arch)
        )
        return cls(arch.input_size, arch.num_classes, arch.stem, layers, arch.head)

    @property
    def features(self) -> int:
        """Channels entering the classifier."""
        return self.head.channels or self.layers[-1].out_channels

    # -- the string ---------------------------------------------------------------------------

    def encode(self) -> str:
        parts = [f"{PREFIX}:in{self.input_size}_cls{self.num_classes}", self.stem.encode()]
        return "|".join([*parts, *(layer.encode() for layer in self.layers), self.head.encode()])

    @classmethod
    def decode(cls, text: str) -> MnasW:
        tokens = split_tokens(text, PREFIX)
        size, classes = parse_header(text, tokens[0])
        if len(tokens) < 4:
            fail(text, len(tokens), tokens[-1], "expected stem_..., at least one layer, head_...")
        kernel, stride, out, act = _parse_end(
            text, 2, tokens[1], _STEM, "stem_k<kernel>_s<stride>_c<out>_<act>"
        )
        stem = _spec(text, 2, tokens[1], lambda: StemSpec(int(out), int(kernel), int(stride), act))
        last = len(tokens)
        channels, act = _parse_end(text, last, tokens[-1], _HEAD, "head_c<channels>_<act>")
        head = _spec(text, last, tokens[-1], lambda: HeadSpec(int(channels), act))
        channels, at = stem.out_channels, conv_output_size(size, stem.stride)
        layers = []
        for position, token in enumerate(tokens[2:-1], start=3):
            layer = _parse_layer(text, position, token, channels, at)
            layers.append(layer)
            channels, at = layer.out_channels, layer.output_size
        return construct(text, tokens, lambda: cls(size, classes, stem, tuple(layers), head))

    def key(self) -> str:
        return key_of(self.encode())

    # -- what it costs, without building it ---------------------------------------------------

    def cost(self):
        from models.costs import ZERO, Cost

        total = ZERO
        for row in self.rows():
            total += Cost(row["macs"], row["params"])
        return total

    def rows(self) -> list[dict]:
        """Every part that costs something (`pearl arch describe`), in order; they add up to
        ``cost()``."""
        from models.costs import Cost, conv_bn_cost, layer_cost
        from models.network import describe_row

        stem, size = self.stem, self.input_size
        out = conv_output_size(size, stem.stride)
        cost = conv_bn_cost(3, stem.out_channels, stem.kernel, out)
        rows = [describe_row("stem", None, "conv", stem.kernel, stem.stride, 3,
                             stem.out_channels, size, out, cost)]  # fmt: skip
        for index, layer in enumerate(self.layers, start=1):
            skip = layer.skip_token
            op = f"mb e{layer.inner}" if layer.op == "mb" else layer.op
            rows.append(
                describe_row(str(index), index, op, layer.kernel, layer.stride, layer.in_channels,
                    layer.out_channels, layer.input_size, layer.output_size, layer_cost(layer),
                    skip=skip, skip_asked=skip)
            )  # fmt: skip
        channels, size = self.layers[-1].out_channels, self.layers[-1].output_size
        if self.head.channels:
            cost = conv_bn_cost(channels, self.head.channels, 1, size)
            rows.append(describe_row("head", None, "conv", 1, 1, channels, self.head.channels,
                                     size, size, cost))  # fmt: skip
        weights = self.features * self.num_classes
        cost = Cost(weights, weights + self.num_classes)
        rows.append(describe_row("fc", None, "pool+fc", None, None, self.features,
                                 self.num_classes, size, 1, cost))  # fmt: skip
        return rows

    def build(self, dropout: float = 0.2):
        """A freshly initialised module; weight names as an Arch's (`models.builder`)."""
        from models.builder import LayerNet

        return LayerNet(self, self.stem, self.layers, self.head, dropout)


def _parse_end(text: str, position: int, token: str, pattern: re.Pattern, expected: str):
    match = pattern.fullmatch(token)
    if not match:
        fail(text, position, token, f"expected {expected}")
    return match.groups()


def _spec(text: str, position: int, token: str, make):
    try:
        return make()
    except ValueError as error:
        fail(text, position, token, str(error))
    raise AssertionError  # unreachable: fail raises


def _parse_layer(text: str, position: int, token: str, channels: int, size: int) -> MnasLayer:
    match = _LAYER.fullmatch(token)
    if not match:
        fail(text, position, token, _LAYER_HELP)
    op, kernel, stride, inner, squeeze, skip, out, act = match.groups()
    layer = MnasLayer(
        op,
        int(kernel),
        int(stride),
        int(inner or 0),
        int(squeeze),
        "pool" if skip == "poolp" else skip,
        skip == "poolp",
        channels,
        int(out),
        size,
        act,
    )
    _spec(text, position, token, layer.check)
    return layer
