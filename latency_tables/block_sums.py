"""The predictor's per-arch path: a table's entries looked up per block, not per layer.

A block's layers depend only on the block and the channels and resolution it is entered with,
and all its layers after the first are the same layer (stride 1, channels out -> out).  So a
block's entries are two values: the first layer's and the later layers' (the layer count only
says how often the second is added).  The first time a block shape (everything but its layer
count, plus the channels and resolution entering it) is seen, its entries are looked up
(`models.layers.expand_block` -> key tuples -> values) and remembered; later archs reuse them,
so predicting an arch costs one dictionary lookup per block instead of building every layer
(`expand_layers`) and every key.  The values are added one at a time in layer order, exactly as
the plain sum over `arch_key_tuples` adds them: the result is bit-identical.  Standard library
only.
"""

from __future__ import annotations

from latency_tables.keys import head_key_tuple, layer_key_tuple, stem_key_tuple
from models.arch import Arch
from models.layers import conv_output_size, expand_block


class BlockSums:
    """Sums of a table's entries for whole archs; `values` maps key tuples to milliseconds
    (the table's own dict: `clear()` whenever it changes)."""

    def __init__(self, values: dict[tuple, float]) -> None:
        self.values = values
        self._stems: dict[tuple, float] = {}
        self._blocks: dict[tuple, tuple[float, float | None, int]] = {}
        self._heads: dict[tuple, float] = {}

    def clear(self) -> None:
        self._stems.clear()
        self._blocks.clear()
        self._heads.clear()

    def sum_ms(self, arch: Arch) -> float | None:
        """Plain sum of `arch`'s entries in layer order; None when one is missing (or `arch`
        is not a MnasNet-space `Arch`: the caller's general path answers)."""
        if not isinstance(arch, Arch):
            return None
        stem = arch.stem
        value = self._stems.get((stem, arch.input_size))
        if value is None:
            value = self.values.get(stem_key_tuple(arch))
            if value is None:
                return None
            self._stems[stem, arch.input_size] = value
        total = 0.0
        total += value
        channels, size = stem.out_channels, conv_output_size(arch.input_size, stem.stride)
        blocks = self._blocks
        for b in arch.blocks:
            shape = (b.op, b.kernel, b.stride, b.expand, b.se_ratio, b.skip, b.act,
                     b.out_channels, channels, size)  # fmt: skip
            found = blocks.get(shape)
            if found is None or (found[1] is None and b.layers > 1):
                found = self._look_up_block(b, shape, channels, size)
                if found is None:
                    return None
            first, rest, size = found
            total += first
            for _ in range(b.layers - 1):
                total += rest
            channels = b.out_channels
        head = (arch.head, arch.num_classes, channels, size)
        value = self._heads.get(head)
        if value is None:
            value = self.values.get(head_key_tuple(arch, channels, size))
            if value is None:
                return None
            self._heads[head] = value
        return total + value

    def _look_up_block(self, block, shape: tuple, channels: int, size: int):
        """(first layer's value, every later layer's value or None when not looked up yet,
        output size) of `block`: its layers after the first are all the same layer."""
        layers = expand_block(block, channels, size)[:2]
        values = [self.values.get(layer_key_tuple(s)) for s in layers]
        if None in values:
            return None
        found = (values[0], values[1] if len(values) > 1 else None, layers[-1].output_size)
        self._blocks[shape] = found
        return found
