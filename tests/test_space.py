"""The MnasNet-style search space: decisions, arch_from/choices_of, sampling, variants."""

import random

import pytest

from models.baselines import baseline
from models.layers import expand_layers
from models.space import SPACE_DEFAULTS, default_space_name, get_space


def test_decisions_are_six_per_block_with_the_akd_options():
    space = get_space("mnas-imagenet")
    decisions = space.decisions()
    assert len(decisions) == 7 * 6
    named = {d.name: d.options for d in decisions}
    assert named["b3.op"] == ("conv", "ds", "mb3", "mb6")
    assert named["b3.kernel"] == (3, 5)
    assert named["b3.se"] == (0.0, 0.25)
    assert named["b3.skip"] == ("noskip", "id", "pool")
    assert named["b3.channels"] == (24, 32, 40)  # 0.75, 1.0, 1.25 x 32, multiples of 8
    assert named["b3.layers"] == (2, 3, 4)  # base 3 +- 1
    assert named["b1.layers"] == (1, 2)  # base 1: never 0 layers
    assert named["b1.channels"] == (16, 24)  # 12 rounds up to 16, so 0.75x == 1.0x: listed once


@pytest.mark.parametrize("name", sorted(SPACE_DEFAULTS))
def test_every_choice_vector_maps_to_a_distinct_arch_and_back(name):
    space = get_space(name)
    rng = random.Random(3)
    seen = {}
    for _ in range(500):
        choices = [rng.randrange(len(d.options)) for d in space.decisions()]
        arch = space.arch_from(choices)
        assert space.choices_of(arch) == choices
        seen[arch.encode()] = choices
    assert len(seen) == 500


def test_variants_differ_only_in_downsampling():
    imagenet, cifar = get_space("mnas-imagenet"), get_space("mnas-cifar")
    assert imagenet.input_size == 224 and imagenet.num_classes == 1000
    assert cifar.input_size == 32 and cifar.num_classes == 10
    choices = [0] * len(cifar.decisions())
    final_size = {
        s.name: expand_layers(s.arch_from(choices))[-1].output_size for s in (imagenet, cifar)
    }
    assert final_size == {"mnas-imagenet": 7, "mnas-cifar": 4}  # total stride 32 vs 8
    assert default_space_name(32) == "mnas-cifar" and default_space_name(224) == "mnas-imagenet"
    assert get_space("mnas-cifar", 64, 100).arch_from(choices).num_classes == 100


def test_sampling_is_deterministic_per_seed():
    space = get_space("mnas-cifar")
    first = [space.sample(random.Random(11)).encode() for _ in range(3)]
    assert len(set(first)) == 1
    assert space.sample(random.Random(12)) != space.sample(random.Random(11))


def test_bad_choices_and_foreign_archs_are_rejected():
    space = get_space("mnas-cifar")
    with pytest.raises(ValueError, match="42 decisions"):
        space.arch_from([0, 1])
    with pytest.raises(ValueError, match=r"b1.op.*out of range"):
        space.arch_from([9] + [0] * 41)
    with pytest.raises(ValueError, match=r"b6.channels=192 is not an option"):
        space.choices_of(baseline("mnasnet_b1", 32, 10))  # grid there: 120, 160, 200
    with pytest.raises(ValueError, match="unknown search space"):
        get_space("darts")


def test_the_mnasnet_b1_ops_are_expressible_in_the_space_language():
    # The baselines live in the same language as candidates (their widths/depths may lie off
    # the space's grid, which is the point of a baseline).
    arch = baseline("mnasnet_b1", 32, 10)
    space = get_space("mnas-cifar")
    ops = {d.name: d.options for d in space.decisions()}
    for index, block in enumerate(arch.blocks[1:], start=2):
        assert block.op_name in ops[f"b{index}.op"]
        assert block.kernel in ops[f"b{index}.kernel"]
        assert block.stride == space.layout.block_strides[index - 1]
