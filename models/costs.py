"""Multiply-accumulates and parameter counts from an `Arch` alone (no torch, no forward pass).

Conventions (the usual ones for mobile networks, and what the builder's module hooks count):
MACs are those of convolutions and the classifier (including SE's 1x1 convs on the pooled
vector); batch norm, activations, pooling, SE scaling and residual adds cost no MACs.  Parameters
include batch-norm scale and shift (as torchvision counts them), not running statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.arch import Arch
from models.layers import LayerSpec, conv_output_size, expand_layers, last_block_output


@dataclass(frozen=True)
class Cost:
    macs: int
    params: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.macs + other.macs, self.params + other.params)


ZERO = Cost(0, 0)


def conv_bn_cost(
    in_channels: int, out_channels: int, kernel: int, output_size: int, groups: int = 1
) -> Cost:
    """A bias-free conv followed by batch norm."""
    weights = kernel * kernel * (in_channels // groups) * out_channels
    return Cost(weights * output_size * output_size, weights + 2 * out_channels)


def se_cost(channels: int, squeeze_channels: int) -> Cost:
    """Two 1x1 convs with bias on the pooled vector: reduce then expand."""
    macs = 2 * channels * squeeze_channels
    return Cost(macs, macs + squeeze_channels + channels)


def layer_cost(layer: LayerSpec) -> Cost:
    out = layer.output_size
    cin, cout, mid, k = layer.in_channels, layer.out_channels, layer.mid_channels, layer.kernel
    if layer.op == "conv":
        cost = conv_bn_cost(cin, cout, k, out)
    elif layer.op == "ds":
        cost = conv_bn_cost(cin, cin, k, out, groups=cin) + conv_bn_cost(cin, cout, 1, out)
    else:
        cost = (
            conv_bn_cost(cin, mid, 1, layer.input_size)
            + conv_bn_cost(mid, mid, k, out, groups=mid)
            + conv_bn_cost(mid, cout, 1, out)
        )
    if layer.se_channels:
        cost += se_cost(mid, layer.se_channels)
    if layer.projects_shortcut:
        cost += conv_bn_cost(cin, cout, 1, out)
    return cost


def stem_cost(arch: Arch, in_channels: int = 3) -> Cost:
    size = conv_output_size(arch.input_size, arch.stem.stride)
    return conv_bn_cost(in_channels, arch.stem.out_channels, arch.stem.kernel, size)


def head_conv_cost(arch: Arch) -> Cost:
    """The head's 1x1 conv + BN (none for ``head_c0``)."""
    channels, size = last_block_output(arch)
    return conv_bn_cost(channels, arch.head.channels, 1, size) if arch.head.channels else ZERO


def classifier_cost(arch: Arch) -> Cost:
    """Global pool (free) and the linear layer with bias."""
    channels = arch.head.channels or last_block_output(arch)[0]
    weights = channels * arch.num_classes
    return Cost(weights, weights + arch.num_classes)


def arch_cost(arch: Arch) -> Cost:
    """Stem + every layer (`layer_cost`) + head conv + classifier: the rows of `pearl arch
    describe` add up to this."""
    total = stem_cost(arch) + head_conv_cost(arch) + classifier_cost(arch)
    for layer in expand_layers(arch):
        total += layer_cost(layer)
    return total
