"""The add-on network family (KDAS, Kang et al. AAAI 2020, sec. "Architecture search"): a named
backbone of k stages, and after each stage a few searched *add-on layers*; the classifier
(global average pool + linear) is never searched.

Canonical string (grammar in the README, section "KDAS")::

    addon:resnet20_in32_cls10|conv3_sep5-1|none|max3_id-0_avg3-11

* the header: backbone name, input size, classes;
* one segment per backbone stage: ``none`` or its add-on layers joined by ``_``.  Layer j
  (1-based) is ``OP`` for j = 1, else ``OP-BITS`` with exactly j - 1 bits: bit i = 1 adds the
  output of add-on layer i of the same stage to this layer's output (``y_j = op_j(y_{j-1}) +
  sum y_i``, ``y_0`` = the stage's output).  Layer j may skip from every earlier add-on layer,
  so L layers have L(L-1)/2 skip bits and 7^L x 2^(L(L-1)/2) choices, as in the paper.
* ops (all stride 1, channels kept): ``id``, ``conv3``, ``conv5`` (conv, BN, ReLU), ``sep3``,
  ``sep5`` (depthwise conv, BN, ReLU, 1x1 conv, BN, ReLU), ``max3``, ``avg3`` (3x3 pooling,
  padding 1; the average counts the zero padding, as the MnasNet builder's pool skip).

This module is pure Python (no torch): parsing, keys, `rows()` and `cost()` (MACs and parameters,
counted as `models.costs` does) work without building; `build()` is `models.addon_builder`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from models.costs import ZERO, Cost, conv_bn_cost
from models.layers import conv_output_size
from models.network import describe_row

PREFIX = "addon"
OPS = ("id", "conv3", "conv5", "sep3", "sep5", "max3", "avg3")
NO_ADDONS = "none"  # a stage segment without add-on layers


@dataclass(frozen=True)
class Backbone:
    """A backbone the family knows: a 3x3 stem conv, then stages of residual blocks (`widths`,
    `blocks` per stage, the first block of a stage with `strides[s]`).  ``preact=False``: the
    CIFAR ResNets (stem conv + BN + ReLU; post-activation basic blocks with parameter-free
    shortcuts, `models.teachers.BasicBlock`).  ``preact=True``: Wide ResNets (stem conv alone;
    pre-activation blocks with a 1x1 conv shortcut where the shape changes,
    `models.teachers.WideBasicBlock`; BN + ReLU before the pool)."""

    name: str
    stem_channels: int
    widths: tuple[int, ...]
    blocks: int
    strides: tuple[int, ...]
    preact: bool = False

    def stem_cost(self, size: int) -> Cost:
        if self.preact:
            return _conv_cost(3, self.stem_channels, 3, size)
        return conv_bn_cost(3, self.stem_channels, 3, size)

    def block_cost(self, cin: int, cout: int, stride: int, out: int) -> Cost:
        if not self.preact:
            return conv_bn_cost(cin, cout, 3, out) + conv_bn_cost(cout, cout, 3, out)
        cost = Cost(0, 2 * cin) + conv_bn_cost(cin, cout, 3, out) + _conv_cost(cout, cout, 3, out)
        if cin != cout or stride != 1:
            cost += _conv_cost(cin, cout, 1, out)
        return cost

    def head_cost(self, channels: int) -> Cost:
        """The BN before the pool (pre-activation backbones only)."""
        return Cost(0, 2 * channels) if self.preact else ZERO


def _conv_cost(cin: int, cout: int, kernel: int, size: int) -> Cost:
    """A bias-free conv without a BN after it."""
    weights = kernel * kernel * cin * cout
    return Cost(weights * size * size, weights)


# the CIFAR ResNets of `models.teachers` (He et al. 2016, sec. 4.2): 6n+2 layers, 3 stages;
# WRN-d-k (Zagoruyko & Komodakis 2016): (d-4)/6 blocks per stage, k times wider
BACKBONES: dict[str, Backbone] = {
    **{
        f"resnet{depth}": Backbone(f"resnet{depth}", 16, (16, 32, 64), (depth - 2) // 6, (1, 2, 2))
        for depth in (20, 32, 44, 56, 110)
    },
    **{
        f"wrn{depth}-{k}": Backbone(
            f"wrn{depth}-{k}", 16, (16 * k, 32 * k, 64 * k), (depth - 4) // 6, (1, 2, 2), True
        )
        for depth, k in ((16, 1), (16, 2), (16, 4), (40, 1), (40, 2))
    },
}


def backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(
            f"unknown backbone {name!r}: Pearl knows the stages of {', '.join(BACKBONES)}; "
            "use one of these"
        )
    return BACKBONES[name]


@dataclass(frozen=True)
class AddonLayer:
    op: str
    skips: tuple[int, ...] = ()  # one 0/1 per earlier add-on layer of the stage

    def encode(self) -> str:
        return self.op + ("-" + "".join(map(str, self.skips)) if self.skips else "")


@dataclass(frozen=True)
class AddonNet:
    """One network of the family; validated on construction (by keyword or by `decode`)."""

    backbone: str
    input_size: int
    num_classes: int
    stages: tuple[tuple[AddonLayer, ...], ...]

    def __post_init__(self) -> None:
        spec = backbone(self.backbone)
        if self.input_size < 8:
            raise ValueError(f"input size must be >= 8 pixels, got {self.input_size}")
        if self.num_classes < 2:
            raise ValueError(f"class count must be >= 2, got {self.num_classes}")
        if len(self.stages) != len(spec.widths):
            raise ValueError(
                f"{self.backbone} has {len(spec.widths)} stages, got {len(self.stages)} "
                "stage segments (write 'none' for a stage without add-ons)"
            )
        for s, layers in enumerate(self.stages, start=1):
            for j, layer in enumerate(layers, start=1):
                where = f"stage {s}, layer {j}"
                if layer.op not in OPS:
                    raise ValueError(f"{where}: op must be one of {OPS}, got {layer.op!r}")
                if len(layer.skips) != j - 1 or any(b not in (0, 1) for b in layer.skips):
                    raise ValueError(f"{where}: needs exactly {j - 1} skip bits (0/1)")

    # -- the protocol of `models.network` -----------------------------------------------------

    def encode(self) -> str:
        header = f"{PREFIX}:{self.backbone}_in{self.input_size}_cls{self.num_classes}"
        stages = ["_".join(x.encode() for x in layers) or NO_ADDONS for layers in self.stages]
        return "|".join([header, *stages])

    def key(self) -> str:
        return hashlib.sha256(self.encode().encode("ascii")).hexdigest()[:16]

    @classmethod
    def decode(cls, text: str) -> AddonNet:
        return _parse(text)

    def cost(self) -> Cost:
        """MACs and parameters of the network, without building it: the sum of `rows()`."""
        total = ZERO
        for row in self.rows():
            total += Cost(row["macs"], row["params"])
        return total

    def build(self, dropout: float = 0.0):
        """A freshly initialised module (`models.addon_builder`); `dropout` before the
        classifier (0: none, as the CIFAR ResNets)."""
        from models.addon_builder import AddonModule

        return AddonModule(self, dropout)

    def __str__(self) -> str:
        return self.encode()

    # -- what the rest of Pearl reads -----------------------------------------------------------

    @property
    def base(self) -> AddonNet:
        """The backbone alone (no add-ons): what the memory budget is a multiple of."""
        return AddonNet(self.backbone, self.input_size, self.num_classes, ((),) * len(self.stages))

    def rows(self) -> list[dict]:
        """Every part that costs something, in order, with the keys of `pearl arch describe`
        (``block``: the stage; ``op``: block / add-on op; ``skip``: the skip bits)."""
        spec = backbone(self.backbone)
        size = self.input_size
        rows = [
            describe_row(
                "stem",
                None,
                "conv",
                3,
                1,
                3,
                spec.stem_channels,
                size,
                size,
                spec.stem_cost(size),
            )
        ]
        channels = spec.stem_channels
        for s, (width, stride) in enumerate(zip(spec.widths, spec.strides, strict=True), 1):
            for b in range(1, spec.blocks + 1):
                step = stride if b == 1 else 1
                out = conv_output_size(size, step)
                cost = spec.block_cost(channels, width, step, out)
                rows.append(
                    describe_row(f"{s}.b{b}", s, "block", 3, step, channels, width, size, out, cost)
                )
                channels, size = width, out
            for j, layer in enumerate(self.stages[s - 1], start=1):
                kernel = int(layer.op[-1]) if layer.op != "id" else None
                skips = "".join(map(str, layer.skips)) or None
                rows.append(
                    describe_row(
                        f"{s}.a{j}",
                        s,
                        layer.op,
                        kernel,
                        1,
                        channels,
                        channels,
                        size,
                        size,
                        addon_cost(layer.op, channels, size),
                        skip=skips,
                        skip_asked=skips,
                    )
                )
        if spec.preact:
            rows.append(
                describe_row(
                    "bn",
                    None,
                    "bn+relu",
                    None,
                    None,
                    channels,
                    channels,
                    size,
                    size,
                    spec.head_cost(channels),
                )
            )
        weights = channels * self.num_classes
        rows.append(
            describe_row(
                "fc",
                None,
                "linear",
                None,
                None,
                channels,
                self.num_classes,
                size,
                1,
                Cost(weights, weights + self.num_classes),
            )
        )
        return rows


def addon_cost(op: str, channels: int, size: int) -> Cost:
    """One add-on layer (stride 1, channels kept); identity and pooling cost nothing."""
    if op.startswith("conv"):
        return conv_bn_cost(channels, channels, int(op[-1]), size)
    if op.startswith("sep"):
        depthwise = conv_bn_cost(channels, channels, int(op[-1]), size, groups=channels)
        return depthwise + conv_bn_cost(channels, channels, 1, size)
    return ZERO


# ---------------------------------------------------------------------------------------------
# Decoding: strict, every error names the token, its character position and what was expected.

_HEADER = re.compile(r"([a-z0-9-]+)_in([1-9][0-9]*)_cls([1-9][0-9]*)")
_LAYER = re.compile(r"([a-z0-9]+)(?:-([01]+))?")


class AddonStringError(ValueError):
    pass


def _fail(token: str, position: int, where: str, problem: str) -> AddonStringError:
    return AddonStringError(
        f"bad addon string: token {token!r} at character {position} ({where}): {problem}. "
        "Grammar: README, 'KDAS'."
    )


def _parse(text: str) -> AddonNet:
    if not isinstance(text, str):
        raise ValueError(f"arch must be a string, got {type(text).__name__}")
    start = len(PREFIX) + 1
    if not text.startswith(PREFIX + ":"):
        raise _fail(text[:10], 0, "prefix", f"an addon string starts with '{PREFIX}:'")
    segments, pos = [], start
    for segment in text[start:].split("|"):
        segments.append((segment, pos))
        pos += len(segment) + 1
    (header, hpos), stage_segments = segments[0], segments[1:]
    match = _HEADER.fullmatch(header)
    if match is None:
        raise _fail(
            header,
            hpos,
            "header",
            "expected BACKBONE_in<pixels>_cls<classes>, e.g. resnet20_in32_cls10",
        )
    name, size, classes = match.group(1), int(match.group(2)), int(match.group(3))
    try:
        spec = backbone(name)
    except ValueError as error:
        raise _fail(name, hpos, "header, backbone", str(error)) from None
    if len(stage_segments) != len(spec.widths):
        raise _fail(
            text[start:][:40],
            start,
            "stages",
            f"{name} has {len(spec.widths)} stages, so the header is followed by "
            f"{len(spec.widths)} '|'-separated stage segments, got {len(stage_segments)}",
        )
    stages = tuple(
        _stage(segment, spos, s) for s, (segment, spos) in enumerate(stage_segments, start=1)
    )
    try:
        return AddonNet(name, size, classes, stages)
    except ValueError as error:
        raise _fail(header, hpos, "header", str(error)) from None


def _stage(segment: str, position: int, stage: int) -> tuple[AddonLayer, ...]:
    if segment == NO_ADDONS:
        return ()
    layers, pos = [], position
    for j, token in enumerate(segment.split("_"), start=1):
        where = f"stage {stage}, layer {j}"
        match = _LAYER.fullmatch(token)
        if match is None:
            raise _fail(
                token,
                pos,
                where,
                f"expected OP or OP-BITS with OP one of {OPS}, "
                f"or '{NO_ADDONS}' for a stage without add-ons",
            )
        op, bits = match.group(1), match.group(2) or ""
        if op not in OPS:
            raise _fail(token, pos, where, f"op must be one of {OPS}, got {op!r}")
        if len(bits) != j - 1:
            raise _fail(
                token,
                pos,
                where,
                f"layer {j} needs exactly {j - 1} skip bit(s) "
                f"(one per earlier add-on layer of the stage), got {len(bits)}",
            )
        layers.append(AddonLayer(op, tuple(int(b) for b in bits)))
        pos += len(token) + 1
    return tuple(layers)
