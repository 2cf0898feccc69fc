"""The analytic memory estimate (`models.memory`): hand-computed op lists and a tiny module, and
every network family against its built module."""

import random

import pytest
from torch import nn

from models.memory import MemoryEstimateError, Op, estimate_memory, module_memory
from models.memory import peak_activation_bytes as peak


def test_a_chain_keeps_only_the_input_and_output_of_each_op_alive():
    ops = [Op("x", (), 100), Op("a", ("x",), 300), Op("b", ("a",), 50)]
    # step 1: x + a = 400; step 2: a + b = 350 (x was last read at step 1)
    assert peak(ops, ["b"]) == 400


def test_a_residual_input_stays_alive_until_the_add_and_in_place_ops_share_a_buffer():
    ops = [
        Op("x", (), 100),
        Op("a", ("x",), 200),
        Op("r", ("a",), 200, in_place=True),  # relu into a's buffer: a is its only reader
        Op("add", ("x", "r"), 200),
    ]
    assert peak(ops, ["add"]) == 100 + 200 + 200  # x, a/r and the sum at the add


def test_an_op_cannot_write_into_a_tensor_that_another_op_still_reads():
    ops = [
        Op("x", (), 100),
        Op("a", ("x",), 200),
        Op("r", ("a",), 200, in_place=True),  # a is read again by the add: r needs its own
        Op("add", ("a", "r"), 200),
    ]
    assert peak(ops, ["add"]) == 200 + 200 + 200


def test_the_output_stays_alive_to_the_end():
    ops = [Op("x", (), 10), Op("out", ("x",), 40), Op("side", ("x",), 5)]
    assert peak(ops, ["out"]) == 10 + 40 + 5
    assert peak(ops, ["side"]) == 50  # out dies after its step when it is not an output


def test_a_tiny_conv_net_by_hand():
    module = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),  # 216 weights
        nn.BatchNorm2d(8),  # 16 (scale, shift), folded: writes into the conv's buffer
        nn.ReLU(),  # fused: same buffer
        nn.Conv2d(8, 4, 1),  # 32 weights + 4 biases
    )
    estimate = module_memory(module, input_size=8)
    assert estimate.param_bytes == (216 + 16 + 36) * 4
    # image 3x8x8 = 768 B; conv1 out 8x8x8 = 2048 B; conv2 out 4x8x8 = 1024 B.
    # at conv1: 768 + 2048 = 2816; at conv2: 2048 + 1024 = 3072 (the image is dead)
    assert estimate.peak_activation_bytes == 3072
    assert estimate.memory_mb == pytest.approx((1072 + 3072) / 1e6)


def _networks():
    from models.addon_space import AddonSpace
    from models.space import get_space
    from models.widths_densenet import DenseNetW
    from models.widths_resnet import ResNetW

    return {
        "mnas": get_space("mnas-cifar", 32, 10).sample(random.Random(0)),
        "addon": AddonSpace("resnet20", 32, 10, 2).sample(random.Random(0)),
        "resnetw": ResNetW.full(20),
        "densenet": DenseNetW.full(40, 12),
    }


@pytest.mark.parametrize("family", ["mnas", "addon", "resnetw", "densenet"])
def test_every_family_is_estimated_from_its_built_module(family):
    network = _networks()[family]
    estimate = estimate_memory(network)
    module = network.build()
    assert estimate.param_bytes == sum(p.numel() for p in module.parameters()) * 4
    assert estimate.param_bytes == network.cost().params * 4
    image = 3 * network.input_size**2 * 4
    assert estimate.peak_activation_bytes > image  # the image and the first feature map
    # never more than every activation of the network at once
    everything = sum(op_bytes for op_bytes in _all_activation_bytes(module, network.input_size))
    assert estimate.peak_activation_bytes < everything


def _all_activation_bytes(module, input_size):
    from models.memory import traced_ops

    ops, _ = traced_ops(module, input_size)
    return [op.out_bytes for op in ops]


def test_a_module_that_cannot_be_traced_is_a_clear_error():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x  # data-dependent control flow

    class Net:
        input_size = 8

        def build(self, dropout=0.0):
            return Branchy()

        def encode(self):
            return "branchy"

    with pytest.raises(MemoryEstimateError, match="reward.memory_source = 'measured'"):
        estimate_memory(Net())
