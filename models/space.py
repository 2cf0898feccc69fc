"""The MnasNet factorized hierarchical search space, as used by AKD.

A fixed skeleton of 7 blocks (MobileNetV2's layout: base width, base depth and stride per block).
For each block the controller picks: conv op {conv, ds, mb3, mb6}, kernel {3, 5}, SE ratio
{0, 0.25}, skip op {noskip, id, pool}, filters {0.75, 1.0, 1.25} x base width (rounded to a
multiple of 8) and layers {base - 1, base, base + 1} (at least 1).  Options that round to the
same value are listed once, so every option of a decision gives a different network.

Two explicit variants differ only in where the network downsamples:

* ``mnas-imagenet``: stem stride 2, block strides 1,2,2,2,1,2,1 (total stride 32; 224x224 inputs).
* ``mnas-cifar``: stem stride 1, block strides 1,1,2,2,1,2,1 (total stride 8; 32x32 inputs keep
  a 4x4 map before the head, as in CIFAR versions of MobileNetV2).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from models.arch import Arch, BlockSpec, HeadSpec, StemSpec, make_divisible

# MobileNetV2's block layout: (base output channels, base layers).
MOBILENET_V2_BLOCKS = ((16, 1), (24, 2), (32, 3), (64, 4), (96, 3), (160, 3), (320, 1))


@dataclass(frozen=True)
class StrideLayout:
    stem_stride: int
    block_strides: tuple[int, ...]


STRIDE_LAYOUTS = {
    "imagenet": StrideLayout(2, (1, 2, 2, 2, 1, 2, 1)),
    "cifar": StrideLayout(1, (1, 1, 2, 2, 1, 2, 1)),
}


def default_layout(input_size: int) -> str:
    """The stride layout used when none is named: CIFAR's for inputs of 64 px or less."""
    return "cifar" if input_size <= 64 else "imagenet"


@dataclass(frozen=True)
class Decision:
    """One step of the controller: a named categorical choice."""

    name: str
    options: tuple


@dataclass(frozen=True)
class SearchSpace:
    name: str
    input_size: int
    num_classes: int
    layout: StrideLayout
    stem_channels: int = 32
    head_channels: int = 1280
    act: str = "re"  # MnasNet and AKD use ReLU
    base_blocks: tuple[tuple[int, int], ...] = MOBILENET_V2_BLOCKS
    ops: tuple[str, ...] = ("conv", "ds", "mb3", "mb6")
    kernels: tuple[int, ...] = (3, 5)
    se_ratios: tuple[float, ...] = (0.0, 0.25)
    skips: tuple[str, ...] = ("noskip", "id", "pool")
    width_multipliers: tuple[float, ...] = (0.75, 1.0, 1.25)
    layer_deltas: tuple[int, ...] = (-1, 0, 1)

    FIELDS = ("op", "kernel", "se", "skip", "channels", "layers")

    def __post_init__(self) -> None:
        if len(self.layout.block_strides) != len(self.base_blocks):
            raise ValueError("stride layout and skeleton must have the same number of blocks")

    def channel_options(self, base_channels: int) -> tuple[int, ...]:
        return _distinct(make_divisible(base_channels * m) for m in self.width_multipliers)

    def layer_options(self, base_layers: int) -> tuple[int, ...]:
        return _distinct(max(1, base_layers + d) for d in self.layer_deltas)

    def decisions(self) -> tuple[Decision, ...]:
        """The choices a controller emits, in order: six per block."""
        steps = []
        for index, (channels, layers) in enumerate(self.base_blocks, start=1):
            options = (
                self.ops,
                self.kernels,
                self.se_ratios,
                self.skips,
                self.channel_options(channels),
                self.layer_options(layers),
            )
            steps += [
                Decision(f"b{index}.{field}", opts)
                for field, opts in zip(self.FIELDS, options, strict=True)
            ]
        return tuple(steps)

    def arch_from(self, choices: Sequence[int]) -> Arch:
        """The architecture for one option index per decision."""
        decisions = self.decisions()
        if len(choices) != len(decisions):
            raise ValueError(
                f"space {self.name!r} has {len(decisions)} decisions, got {len(choices)} choices"
            )
        values = []
        for decision, choice in zip(decisions, choices, strict=True):
            if not (isinstance(choice, int) and 0 <= choice < len(decision.options)):
                raise ValueError(
                    f"choice {choice!r} for {decision.name} is out of range "
                    f"0..{len(decision.options) - 1} (options {decision.options})"
                )
            values.append(decision.options[choice])
        per_block = len(self.FIELDS)
        blocks = tuple(
            self._block(values[i : i + per_block], stride)
            for i, stride in zip(
                range(0, len(values), per_block), self.layout.block_strides, strict=True
            )
        )
        return Arch(
            input_size=self.input_size,
            num_classes=self.num_classes,
            stem=StemSpec(
                self.stem_channels, kernel=3, stride=self.layout.stem_stride, act=self.act
            ),
            blocks=blocks,
            head=HeadSpec(self.head_channels, act=self.act),
        )

    def _block(self, values: Sequence, stride: int) -> BlockSpec:
        op, kernel, se_ratio, skip, channels, layers = values
        expand = int(op[2:]) if op.startswith("mb") else 1
        return BlockSpec(
            op="mb" if op.startswith("mb") else op,
            kernel=kernel,
            stride=stride,
            out_channels=channels,
            layers=layers,
            expand=expand,
            se_ratio=se_ratio,
            skip=skip,
            act=self.act,
        )

    def choices_of(self, arch: Arch) -> list[int]:
        """The inverse of `arch_from`: option indices, or ValueError if `arch` is not in here."""
        decisions, values = self.decisions(), _values_of(arch)
        if len(values) != len(decisions):
            raise ValueError(
                f"arch has {len(arch.blocks)} blocks; space {self.name!r} has "
                f"{len(self.base_blocks)}"
            )
        choices = []
        for decision, value in zip(decisions, values, strict=True):
            if value not in decision.options:
                raise ValueError(f"{decision.name}={value!r} is not an option of {self.name!r}")
            choices.append(decision.options.index(value))
        if self.arch_from(choices) != arch:
            raise ValueError(f"arch is not in space {self.name!r}: {arch.encode()}")
        return choices

    def sample(self, rng: random.Random) -> Arch:
        """A uniformly random architecture."""
        return self.arch_from([rng.randrange(len(d.options)) for d in self.decisions()])

    def size(self) -> int:
        """Number of distinct choice vectors."""
        total = 1
        for decision in self.decisions():
            total *= len(decision.options)
        return total


def _values_of(arch: Arch) -> list:
    values = []
    for block in arch.blocks:
        values += [
            block.op_name,
            block.kernel,
            block.se_ratio,
            block.skip,
            block.out_channels,
            block.layers,
        ]
    return values


def _distinct(values) -> tuple:
    return tuple(dict.fromkeys(values))


SPACE_DEFAULTS = {
    # name -> (stride layout, default input size, default class count)
    "mnas-imagenet": ("imagenet", 224, 1000),
    "mnas-cifar": ("cifar", 32, 10),
}


def get_space(
    name: str, input_size: int | None = None, num_classes: int | None = None
) -> SearchSpace:
    """A named search space, with its default input size and class count unless given."""
    if name not in SPACE_DEFAULTS:
        raise ValueError(f"unknown search space {name!r}; choose one of {sorted(SPACE_DEFAULTS)}")
    layout, default_size, default_classes = SPACE_DEFAULTS[name]
    return SearchSpace(
        name=name,
        input_size=input_size or default_size,
        num_classes=num_classes or default_classes,
        layout=STRIDE_LAYOUTS[layout],
    )


def default_space_name(input_size: int) -> str:
    return f"mnas-{default_layout(input_size)}"
