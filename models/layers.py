"""Expand an `Arch` into its concrete layers: the one place that works out channels, resolutions
and which skips apply.  The PyTorch builder, the MAC/parameter counter and the latency tables all
read this plan, so they cannot disagree about what a network is.  Pure Python, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.arch import Arch, BlockSpec


def conv_output_size(input_size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded conv or pool (odd kernel, padding kernel // 2)."""
    return (input_size - 1) // stride + 1


def se_channels(in_channels: int, se_ratio: float) -> int:
    """Squeeze-and-excite bottleneck width: a fraction of the layer's input channels (MnasNet)."""
    return max(1, round(in_channels * se_ratio))


@dataclass(frozen=True)
class LayerSpec:
    """One concrete layer of a block, with everything needed to build, count or time it.

    `skip` is the shortcut actually built: an ``id`` request on a layer whose stride or channels
    change becomes ``noskip`` here.
    """

    op: str
    kernel: int
    stride: int
    expand: int
    se_ratio: float
    skip: str
    in_channels: int
    out_channels: int
    input_size: int
    act: str

    @property
    def output_size(self) -> int:
        return conv_output_size(self.input_size, self.stride)

    @property
    def mid_channels(self) -> int:
        """Channels inside the layer (where the depthwise conv and SE act)."""
        if self.op == "mb":
            return self.in_channels * self.expand
        return self.in_channels if self.op == "ds" else self.out_channels

    @property
    def se_channels(self) -> int:
        return se_channels(self.in_channels, self.se_ratio) if self.se_ratio else 0

    @property
    def projects_shortcut(self) -> bool:
        """A pooling shortcut needs a 1x1 conv where the channel count changes."""
        return self.skip == "pool" and self.in_channels != self.out_channels


def expand_layers(arch: Arch) -> list[LayerSpec]:
    """All layers of all blocks, in order, with their input channels and resolution."""
    channels = arch.stem.out_channels
    size = conv_output_size(arch.input_size, arch.stem.stride)
    layers = []
    for block in arch.blocks:
        block_layers = expand_block(block, channels, size)
        layers.extend(block_layers)
        channels, size = block.out_channels, block_layers[-1].output_size
    return layers


def expand_block(block: BlockSpec, channels: int, size: int) -> list[LayerSpec]:
    """The layers of `block` entered with `channels` at resolution `size`."""
    layers = []
    for index in range(block.layers):
        stride = block.stride if index == 0 else 1
        skip = block.skip
        if skip == "id" and (stride != 1 or channels != block.out_channels):
            skip = "noskip"
        layer = LayerSpec(
            op=block.op,
            kernel=block.kernel,
            stride=stride,
            expand=block.expand,
            se_ratio=block.se_ratio,
            skip=skip,
            in_channels=channels,
            out_channels=block.out_channels,
            input_size=size,
            act=block.act,
        )
        layers.append(layer)
        channels, size = block.out_channels, layer.output_size
    return layers


def last_block_output(arch: Arch) -> tuple[int, int]:
    """(channels, spatial size) entering the head."""
    last = expand_layers(arch)[-1]
    return last.out_channels, last.output_size
