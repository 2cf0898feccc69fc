"""The architecture language: `Arch`, `StemSpec`, `BlockSpec`, `HeadSpec` and their string form.

An architecture is a stem, a sequence of blocks (each a stack of identical layers) and a head.
Its canonical string (grammar in the README) is compact, human-readable and round-trips exactly:
``Arch.decode(a.encode()) == a``.  Example (MobileNetV2, 224x224, 1000 classes)::

    in224_cls1000|stem_k3_s2_c32_r6|ds_k3_s1_se0_noskip_c16_n1_r6|mb6_k3_s2_se0_id_c24_n2_r6|...
    |head_c1280_r6

Validation lives in the dataclasses, so an `Arch` built by keyword is checked exactly like one
decoded from a string.  This module is pure Python (no torch) so that encoding, decoding and
hashing are cheap inside the search loop and importable without heavy dependencies.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

ACTIVATIONS = ("re", "r6", "hs")  # ReLU, ReLU6, hard-swish
OPS = ("conv", "ds", "mb")  # regular conv, depthwise-separable conv, MBConv (inverted residual)
SKIPS = ("noskip", "id", "pool")  # no skip, identity residual, pooling shortcut
KERNELS = (1, 3, 5, 7)
STRIDES = (1, 2)


class ArchFieldError(ValueError):
    """An out-of-range field of a spec; `field` names it so the parser can point at its token."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _check(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ArchFieldError(field, message)


def _check_choice(value, choices: tuple, field: str, what: str) -> None:
    """ArchFieldError unless ``value`` is one of ``choices``; ``what`` names it in the message."""
    _check(value in choices, field, f"{what} must be one of {choices}, got {value!r}")


def _check_at_least(value: int, minimum: int, field: str, what: str) -> None:
    _check(value >= minimum, field, f"{what} must be >= {minimum}, got {value}")


@dataclass(frozen=True)
class StemSpec:
    """First layer: a regular kxk conv, BN, activation."""

    out_channels: int
    kernel: int = 3
    stride: int = 2
    act: str = "r6"

    def __post_init__(self) -> None:
        _check_choice(self.kernel, KERNELS, "kernel", "stem kernel")
        _check_choice(self.stride, STRIDES, "stride", "stem stride")
        _check_at_least(self.out_channels, 1, "channels", "stem channels")
        _check_choice(self.act, ACTIVATIONS, "act", "stem act")

    def encode(self) -> str:
        return f"stem_k{self.kernel}_s{self.stride}_c{self.out_channels}_{self.act}"


@dataclass(frozen=True)
class BlockSpec:
    """A block: `layers` identical layers; the first has `stride`, the rest stride 1.

    op: ``conv`` (kxk conv-BN-act), ``ds`` (depthwise kxk-BN-act, [SE], pointwise 1x1-BN,
    linear), ``mb`` (MBConv: 1x1 expand by `expand`-BN-act, depthwise kxk-BN-act, [SE],
    1x1 project-BN, linear).  `expand` is 1 for conv/ds and >= 2 for mb (``mb1`` would be ``ds``).
    se_ratio: squeeze-and-excite width as a fraction of the layer's input channels (MnasNet);
    0 disables it.  Written as a whole percentage (``se25`` = 0.25).
    skip: ``noskip``; ``id`` adds the input where stride is 1 and channels are unchanged;
    ``pool`` adds a 3x3 average-pooled input (the layer's stride, zero padding counted) on
    every layer, through a 1x1 conv-BN where channels change.
    """

    op: str
    kernel: int
    stride: int
    out_channels: int
    layers: int
    expand: int = 1
    se_ratio: float = 0.0
    skip: str = "noskip"
    act: str = "r6"

    def __post_init__(self) -> None:
        _check_choice(self.op, OPS, "op", "block op")
        if self.op == "mb":
            _check(
                isinstance(self.expand, int) and self.expand >= 2,
                "op",
                f"mb expand ratio must be an integer >= 2 (mb with expand 1 is 'ds'), "
                f"got {self.expand}",
            )
        else:
            _check(self.expand == 1, "op", f"{self.op} takes no expand ratio, got {self.expand}")
        _check_choice(self.kernel, KERNELS, "kernel", "kernel")
        _check_choice(self.stride, STRIDES, "stride", "stride")
        _check_at_least(self.out_channels, 1, "channels", "channels")
        _check_at_least(self.layers, 1, "layers", "layers")
        percent = round(self.se_ratio * 100)
        _check(
            0 <= percent < 100 and abs(percent / 100 - self.se_ratio) < 1e-12,
            "se",
            f"se_ratio must be a whole percentage in [0, 0.99], got {self.se_ratio}",
        )
        _check_choice(self.skip, SKIPS, "skip", "skip")
        _check_choice(self.act, ACTIVATIONS, "act", "act")

    @property
    def op_name(self) -> str:
        """The op token: ``conv``, ``ds`` or ``mb<expand>``."""
        return f"mb{self.expand}" if self.op == "mb" else self.op

    def encode(self) -> str:
        se_percent = round(self.se_ratio * 100)
        return (
            f"{self.op_name}_k{self.kernel}_s{self.stride}_se{se_percent}_{self.skip}"
            f"_c{self.out_channels}_n{self.layers}_{self.act}"
        )


@dataclass(frozen=True)
class HeadSpec:
    """Last layers: [1x1 conv to `channels`-BN-act], global average pool, linear classifier.

    channels == 0 means no 1x1 conv: pool the last block's output directly.
    """

    channels: int = 1280
    act: str = "r6"

    def __post_init__(self) -> None:
        _check_at_least(self.channels, 0, "channels", "head channels")
        _check_choice(self.act, ACTIVATIONS, "act", "head act")

    def encode(self) -> str:
        return f"head_c{self.channels}_{self.act}"


@dataclass(frozen=True)
class Arch:
    """A whole network: input resolution (square), class count, stem, blocks, head."""

    input_size: int
    num_classes: int
    stem: StemSpec
    blocks: tuple[BlockSpec, ...]
    head: HeadSpec

    def __post_init__(self) -> None:
        _check(self.input_size >= 1, "input", f"input size must be >= 1, got {self.input_size}")
        _check(
            self.num_classes >= 1, "classes", f"class count must be >= 1, got {self.num_classes}"
        )
        _check(isinstance(self.blocks, tuple), "blocks", "blocks must be a tuple of BlockSpec")
        _check(len(self.blocks) >= 1, "blocks", "an arch needs at least one block")

    def encode(self) -> str:
        parts = [f"in{self.input_size}_cls{self.num_classes}", self.stem.encode()]
        parts += [b.encode() for b in self.blocks]
        parts.append(self.head.encode())
        return "|".join(parts)

    def key(self) -> str:
        """Stable 16-hex-digit identity: sha256 of the canonical string."""
        return hashlib.sha256(self.encode().encode("ascii")).hexdigest()[:16]

    @classmethod
    def decode(cls, text: str) -> Arch:
        return _Parser(text).arch()

    def cost(self):
        """MACs and parameters (`models.costs.arch_cost`), without building the network."""
        from models.costs import arch_cost

        return arch_cost(self)

    def build(self, dropout: float = 0.2):
        """A freshly initialised network (`models.builder.build`)."""
        from models.builder import build

        return build(self, dropout)

    def __str__(self) -> str:
        return self.encode()


# ---------------------------------------------------------------------------------------------
# Decoding: a strict parser over the canonical form, with errors that point at the bad token.

_INT = r"([1-9][0-9]*)"
_FIELDS = {
    # field name -> (regex, converter, human description)
    "input": (rf"in{_INT}", int, "in<pixels>, e.g. in224"),
    "classes": (rf"cls{_INT}", int, "cls<count>, e.g. cls1000"),
    "op": (r"(conv|ds|mb[0-9]+)", str, "conv, ds or mb<expand> (e.g. mb6)"),
    "kernel": (rf"k{_INT}", int, "k<odd kernel>, e.g. k3"),
    "stride": (rf"s{_INT}", int, "s1 or s2"),
    "se": (r"se(0|[1-9][0-9]?)", int, "se<percent>, e.g. se0 or se25"),
    "skip": (r"(noskip|id|pool)", str, "noskip, id or pool"),
    "channels": (r"c(0|[1-9][0-9]*)", int, "c<channels>, e.g. c40"),
    "layers": (rf"n{_INT}", int, "n<layers>, e.g. n3"),
    "act": (r"(re|r6|hs)", str, "re, r6 or hs"),
}
_HEADER_FIELDS = ("input", "classes")
_STEM_FIELDS = ("stem", "kernel", "stride", "channels", "act")
_BLOCK_FIELDS = ("op", "kernel", "stride", "se", "skip", "channels", "layers", "act")
_HEAD_FIELDS = ("head", "channels", "act")


class _Parser:
    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise ValueError(f"arch must be a string, got {type(text).__name__}")
        self.text = text

    @staticmethod
    def fail(token: str, position: int, where: str, problem: str) -> ValueError:
        return ValueError(
            f"bad arch string: token {token!r} at character {position} ({where}): {problem}. "
            "Grammar: README, 'Architecture strings'."
        )

    def fields(self, segment: str, start: int, names: tuple[str, ...], part: str) -> list:
        """[(value, token, position, field)] for one '|'-separated segment."""
        tokens, pos = [], start
        for token in segment.split("_"):
            tokens.append((token, pos))
            pos += len(token) + 1
        if len(tokens) != len(names):
            expected = "_".join(n if n in ("stem", "head") else f"<{n}>" for n in names)
            raise ValueError(
                f"bad arch string: segment {segment!r} at character {start} ({part}) has "
                f"{len(tokens)} fields, expected {len(names)}: {expected}"
            )
        values = []
        for (token, pos), name in zip(tokens, names, strict=True):
            if name in ("stem", "head"):
                if token != name:
                    raise self.fail(token, pos, part, f"expected '{name}'")
                continue
            pattern, convert, expected = _FIELDS[name]
            match = re.fullmatch(pattern, token)
            if match is None:
                raise self.fail(token, pos, f"{part}, field '{name}'", f"expected {expected}")
            values.append((convert(match.group(1)), token, pos, name))
        return values

    def build(self, factory, values: list, part: str):
        """Call `factory` on the parsed values; range errors point at the offending token."""
        try:
            return factory(*[value for value, _, _, _ in values])
        except ArchFieldError as err:
            for _, token, pos, name in values:
                if name == err.field:
                    raise self.fail(token, pos, f"{part}, field '{name}'", str(err)) from None
            raise ValueError(f"bad arch string ({part}): {err}") from None

    def arch(self) -> Arch:
        segments, pos = [], 0
        for segment in self.text.split("|"):
            segments.append((segment, pos))
            pos += len(segment) + 1
        if len(segments) < 4:
            raise ValueError(
                f"bad arch string {self.text[:60]!r}: expected "
                "'in<N>_cls<C>|stem_...|<block>|...|head_...' with at least one block, "
                f"got {len(segments)} '|'-separated segment(s)"
            )
        (header, hpos), (stem, spos), (head, tpos) = segments[0], segments[1], segments[-1]
        header_values = self.fields(header, hpos, _HEADER_FIELDS, "header")
        stem_spec = self.build(_stem, self.fields(stem, spos, _STEM_FIELDS, "stem"), "stem")
        blocks = tuple(
            self.build(
                _block, self.fields(segment, bpos, _BLOCK_FIELDS, f"block {i}"), f"block {i}"
            )
            for i, (segment, bpos) in enumerate(segments[2:-1], start=1)
        )
        head_spec = self.build(_head, self.fields(head, tpos, _HEAD_FIELDS, "head"), "head")
        return self.build(
            lambda size, classes: Arch(size, classes, stem_spec, blocks, head_spec),
            header_values,
            "header",
        )


def _stem(kernel, stride, channels, act) -> StemSpec:
    return StemSpec(out_channels=channels, kernel=kernel, stride=stride, act=act)


def _head(channels, act) -> HeadSpec:
    return HeadSpec(channels=channels, act=act)


def _block(op, kernel, stride, se_percent, skip, channels, layers, act) -> BlockSpec:
    if op.startswith("mb"):
        op, expand = "mb", int(op[2:])
    else:
        expand = 1
    return BlockSpec(
        op=op,
        kernel=kernel,
        stride=stride,
        out_channels=channels,
        layers=layers,
        expand=expand,
        se_ratio=se_percent / 100,
        skip=skip,
        act=act,
    )


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of `divisor`, never below 90% of `value`.

    The rule used by MobileNetV2/MnasNet (and torchvision) to scale widths.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded
