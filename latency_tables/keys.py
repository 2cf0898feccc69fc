"""Table keys: what one row of a latency table stands for, and which rows a network or a whole
search space needs.  Layer geometry comes from `models.layers.expand_layers` only, so a table can
never disagree with the builder about what a layer is.  Standard library only (no torch).

A key is a stem, one layer of a block, or the head:

* ``stem``: regular kxk conv from 3 channels (``op`` is ``stem``);
* ``layer``: one `LayerSpec` (op ``conv``/``ds``/``mb``, kernel, expand, SE percent, the skip
  actually built, input/output channels, stride, input resolution, activation);
* ``head``: [1x1 conv to ``out_channels``], global pool and the classifier to ``classes``
  (``out_channels`` 0 means no 1x1 conv).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from models.arch import Arch
from models.layers import LayerSpec, expand_layers, last_block_output
from models.space import SearchSpace

KINDS = ("stem", "layer", "head")
# CSV columns of a key, in order (the table file writes them under these names)
KEY_FIELDS = (
    "kind",
    "op",
    "kernel",
    "expand",
    "se_percent",
    "skip",
    "in_channels",
    "out_channels",
    "stride",
    "input_size",
    "act",
    "classes",
)
_INT_FIELDS = frozenset(
    ("kernel", "expand", "se_percent", "in_channels", "out_channels", "stride", "input_size")
    + ("classes",)
)


@dataclass(frozen=True, order=True)
class LayerKey:
    kind: str
    op: str
    kernel: int
    expand: int
    se_percent: int
    skip: str
    in_channels: int
    out_channels: int
    stride: int
    input_size: int
    act: str
    classes: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"key kind must be one of {KINDS}, got {self.kind!r}")

    def encode(self) -> str:
        """Compact readable name, e.g. ``layer:mb6_k5_s2_se25_noskip_c24-40_in56_re``."""
        if self.kind == "head":
            return (
                f"head:c{self.in_channels}-{self.out_channels}_in{self.input_size}_{self.act}"
                f"_cls{self.classes}"
            )
        op = f"mb{self.expand}" if self.op == "mb" else self.op
        return (
            f"{self.kind}:{op}_k{self.kernel}_s{self.stride}_se{self.se_percent}_{self.skip}"
            f"_c{self.in_channels}-{self.out_channels}_in{self.input_size}_{self.act}"
        )

    def __str__(self) -> str:
        return self.encode()

    def as_tuple(self) -> tuple:
        """The fields in `KEY_FIELDS` order (what `arch_key_tuples` yields)."""
        return tuple(getattr(self, name) for name in KEY_FIELDS)

    def to_row(self) -> dict[str, str]:
        return {name: str(getattr(self, name)) for name in KEY_FIELDS}

    @classmethod
    def from_row(cls, row: dict[str, str]) -> LayerKey:
        values = {}
        for name in KEY_FIELDS:
            text = row.get(name)
            if text is None or text == "":
                raise ValueError(f"missing key column {name!r}")
            values[name] = int(text) if name in _INT_FIELDS else text
        return cls(**values)

    def layer_spec(self) -> LayerSpec:
        """The `LayerSpec` of a ``layer`` key (what the builder builds)."""
        if self.kind != "layer":
            raise ValueError(f"{self} is not a block layer")
        return LayerSpec(
            op=self.op,
            kernel=self.kernel,
            stride=self.stride,
            expand=self.expand,
            se_ratio=self.se_percent / 100,
            skip=self.skip,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            input_size=self.input_size,
            act=self.act,
        )


_ENCODED = re.compile(r"^(stem|layer|head):")


def layer_key(spec: LayerSpec) -> LayerKey:
    return LayerKey(
        kind="layer",
        op=spec.op,
        kernel=spec.kernel,
        expand=spec.expand,
        se_percent=round(spec.se_ratio * 100),
        skip=spec.skip,
        in_channels=spec.in_channels,
        out_channels=spec.out_channels,
        stride=spec.stride,
        input_size=spec.input_size,
        act=spec.act,
    )


def stem_key(arch: Arch) -> LayerKey:
    stem = arch.stem
    return LayerKey(
        kind="stem",
        op="stem",
        kernel=stem.kernel,
        expand=1,
        se_percent=0,
        skip="noskip",
        in_channels=3,
        out_channels=stem.out_channels,
        stride=stem.stride,
        input_size=arch.input_size,
        act=stem.act,
    )


def head_key(arch: Arch) -> LayerKey:
    channels, size = last_block_output(arch)
    return LayerKey(
        kind="head",
        op="head",
        kernel=1,
        expand=1,
        se_percent=0,
        skip="noskip",
        in_channels=channels,
        out_channels=arch.head.channels,
        stride=1,
        input_size=size,
        act=arch.head.act,
        classes=arch.num_classes,
    )


def arch_keys(arch: Arch) -> list[LayerKey]:
    """The keys whose entries sum to `arch`'s latency: stem, every layer in order, head."""
    return [stem_key(arch), *(layer_key(s) for s in expand_layers(arch)), head_key(arch)]


def arch_key_tuples(arch: Arch) -> list[tuple]:
    """`arch_keys` as plain tuples (`LayerKey.as_tuple` order), without building `LayerKey`
    objects (what the predictor looks up)."""
    layers = expand_layers(arch)
    keys = [stem_key_tuple(arch), *(layer_key_tuple(s) for s in layers)]
    keys.append(head_key_tuple(arch, layers[-1].out_channels, layers[-1].output_size))
    return keys


def stem_key_tuple(arch: Arch) -> tuple:
    stem = arch.stem
    return ("stem", "stem", stem.kernel, 1, 0, "noskip", 3, stem.out_channels, stem.stride,
            arch.input_size, stem.act, 0)  # fmt: skip


def layer_key_tuple(s: LayerSpec) -> tuple:
    return ("layer", s.op, s.kernel, s.expand, round(s.se_ratio * 100), s.skip, s.in_channels,
            s.out_channels, s.stride, s.input_size, s.act, 0)  # fmt: skip


def head_key_tuple(arch: Arch, channels: int, size: int) -> tuple:
    """The head's key entered with `channels` at resolution `size` (the last layer's output)."""
    return ("head", "head", 1, 1, 0, "noskip", channels, arch.head.channels, 1, size,
            arch.head.act, arch.num_classes)  # fmt: skip


def space_keys(space: SearchSpace) -> list[LayerKey]:
    """Every key reachable in `space` (sorted, no duplicates).

    For each block, every option of that block combined with every output-channel option of
    the block before it (the only thing outside a block that changes its layers) is expanded
    with `expand_layers` at the block's largest layer count; all later layers of a block are
    identical, so that covers every layer count.  The rest of the arch stays at option 0.
    """
    decisions = space.decisions()
    per_block = len(space.FIELDS)
    blocks = len(decisions) // per_block
    channel_field = space.FIELDS.index("channels")
    layers_field = space.FIELDS.index("layers")
    keys: set[LayerKey] = set()
    for block in range(blocks):
        own = decisions[block * per_block : (block + 1) * per_block]
        prev_channels = (
            range(len(decisions[(block - 1) * per_block + channel_field].options))
            if block
            else range(1)
        )
        for prev in prev_channels:
            for combo in _product([range(len(d.options)) for d in own]):
                if combo[layers_field] != _argmax(own[layers_field].options):
                    continue
                choices = [0] * len(decisions)
                choices[block * per_block : (block + 1) * per_block] = combo
                if block:
                    choices[(block - 1) * per_block + channel_field] = prev
                arch = space.arch_from(choices)
                first = sum(b.layers for b in arch.blocks[:block])
                for spec in expand_layers(arch)[first : first + arch.blocks[block].layers]:
                    keys.add(layer_key(spec))
                if block == 0:
                    keys.add(stem_key(arch))
                if block == blocks - 1:
                    keys.add(head_key(arch))
    return sorted(keys)


def _argmax(values) -> int:
    return max(range(len(values)), key=lambda i: values[i])


def _product(ranges):
    result = [[]]
    for options in ranges:
        result = [prefix + [value] for prefix in result for value in options]
    return [tuple(r) for r in result]


def looks_like_key(text: str) -> bool:
    return bool(_ENCODED.match(text))
