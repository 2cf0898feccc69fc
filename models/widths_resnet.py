"""CIFAR ResNets with per-layer widths: the ``resnetw:`` family (`models.network`).

A CIFAR ResNet (`models.teachers.CifarResNet`) is a 3x3 stem conv, stages of basic blocks
(3x3 conv, BN, ReLU, 3x3 conv, BN, add the shortcut, ReLU) and a linear classifier.  Here every
block's inner width is free, and so is the width of each stage's residual stream.  The stream is
shared by every block of a stage (they all add into it), and a stage inherits the previous
stage's stream through the parameter-free shortcut (stride-2 subsampling, zero channels padded
``front`` before and the rest after: "option A").  So one string::

    resnetw:in32_cls10|w16p0_16.16.16|w32p8_32.32.32|w64p16_64.64.64

is ResNet-20: per stage ``w<stream width>p<zero channels padded in front>_<inner widths>`` (one
inner width per block; the first stage has ``p0``, its stream starts at the stem).  Stage 1 runs
at full resolution, later ones halve it in their first block.  With full widths the module's
weights are named as `CifarResNet`'s, so a ``resnet20`` checkpoint loads into it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from models.widths_common import (
    construct,
    fail,
    key_of,
    parse_header,
    positive_int,
    split_tokens,
)

PREFIX = "resnetw"
_STAGE = re.compile(r"w(\w+?)p(\w+?)_(.+)")


@dataclass(frozen=True)
class ResNetStage:
    width: int  # channels of the residual stream
    front: int  # zero channels padded before the inherited stream (0 in the first stage)
    inner: tuple[int, ...]  # per block: channels between its two convs

    def back(self, previous_width: int) -> int:
        return self.width - previous_width - self.front


@dataclass(frozen=True)
class ResNetW:
    input_size: int
    num_classes: int
    stages: tuple[ResNetStage, ...]

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a resnetw network needs at least one stage")
        if self.stages[0].front:
            raise ValueError("the first stage's stream starts at the stem: its pad must be p0")
        for index, stage in enumerate(self.stages):
            if stage.width < 1 or not stage.inner or min(stage.inner) < 1:
                raise ValueError(f"stage {index + 1}: widths must be >= 1 and blocks >= 1")
            if index and stage.back(self.stages[index - 1].width) < 0:
                previous = self.stages[index - 1].width
                raise ValueError(
                    f"stage {index + 1}: stream w{stage.width} cannot hold the previous stage's "
                    f"{previous} channels plus p{stage.front} in front"
                )

    @classmethod
    def full(cls, depth: int, input_size: int = 32, num_classes: int = 10) -> ResNetW:
        """The CIFAR ResNet of `depth` (6n+2): widths 16, 32, 64, option-A padding."""
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (e.g. 20, 56), got {depth}")
        n = (depth - 2) // 6
        stages, previous = [], 16
        for width in (16, 32, 64):
            front = (width - previous) // 2
            stages.append(ResNetStage(width, front, (width,) * n))
            previous = width
        return cls(input_size, num_classes, tuple(stages))

    # -- the string ---------------------------------------------------------------------------

    def encode(self) -> str:
        stages = (f"w{s.width}p{s.front}_{'.'.join(str(w) for w in s.inner)}" for s in self.stages)
        return "|".join([f"{PREFIX}:in{self.input_size}_cls{self.num_classes}", *stages])

    @classmethod
    def decode(cls, text: str) -> ResNetW:
        tokens = split_tokens(text, PREFIX)
        size, classes = parse_header(text, tokens[0])
        stages = []
        for position, token in enumerate(tokens[1:], start=2):
            match = _STAGE.fullmatch(token)
            if not match:
                fail(text, position, token, "expected w<width>p<pad>_<inner>.<inner>...")
            width = positive_int(text, position, token, "stream width", match.group(1))
            if not match.group(2).isdigit():
                fail(text, position, token, f"pad must be an integer, got {match.group(2)!r}")
            inner = tuple(
                positive_int(text, position, token, "inner width", w)
                for w in match.group(3).split(".")
            )
            stages.append(ResNetStage(width, int(match.group(2)), inner))
        if not stages:
            fail(text, 1, tokens[0], "no stages follow the header")
        return construct(text, tokens, lambda: cls(size, classes, tuple(stages)))

    def key(self) -> str:
        return key_of(self.encode())

    # -- what it costs, without building it ---------------------------------------------------

    def blocks(self):
        """Per block: ``(stage index, in channels, inner, out channels, stride, front, back,
        output size)``."""
        size, previous = self.input_size, self.stages[0].width
        for index, stage in enumerate(self.stages):
            for number, inner in enumerate(stage.inner):
                first = number == 0
                stride = 2 if index and first else 1
                size = (size + 1) // 2 if stride == 2 else size
                front = stage.front if first else 0
                back = stage.back(previous) if first else 0
                yield index, previous, inner, stage.width, stride, front, back, size
                previous = stage.width

    def cost(self):
        from models.costs import Cost, conv_bn_cost

        total = conv_bn_cost(3, self.stages[0].width, 3, self.input_size)
        for _, cin, inner, cout, _, _, _, size in self.blocks():
            total += conv_bn_cost(cin, inner, 3, size) + conv_bn_cost(inner, cout, 3, size)
        weights = self.stages[-1].width * self.num_classes
        return total + Cost(weights, weights + self.num_classes)

    def build(self, dropout: float = 0.2):
        """A freshly initialised module (`dropout` is unused: CIFAR ResNets have none)."""
        from models.widths_modules import WidthResNet

        return WidthResNet(self)
