"""Students built from archs: counts agree with the module, and the baselines are the real
torchvision networks (same parameter counts, same outputs with the same weights)."""

import random

import numpy as np
import pytest
import torch
import torchvision

from models.arch import Arch, BlockSpec, HeadSpec, StemSpec
from models.baselines import BASELINES, baseline
from models.builder import build, count_module_costs, load_state_dict_by_order
from models.costs import arch_cost
from models.space import SPACE_DEFAULTS, get_space


@pytest.mark.parametrize(
    "name, params, macs_m",
    [
        ("mobilenet_v2", 3_504_872, 300.8),  # torchvision mobilenet_v2(); paper: 300M MACs
        ("mnasnet_b1", 4_383_312, 314.4),  # torchvision mnasnet1_0()
        ("mnasnet_a1", 3_887_038, 311.6),  # MnasNet paper: 3.9M params, 312M MACs
    ],
)
def test_baseline_counts_match_the_published_networks(name, params, macs_m):
    cost = arch_cost(baseline(name, 224, 1000))
    assert cost.params == params
    assert cost.macs / 1e6 == pytest.approx(macs_m, abs=0.05)


def test_torchvision_parameter_counts_are_what_we_claim():
    assert sum(p.numel() for p in torchvision.models.mobilenet_v2().parameters()) == 3_504_872
    assert sum(p.numel() for p in torchvision.models.mnasnet1_0().parameters()) == 4_383_312


def _module_counts_agree(arch: Arch) -> None:
    cost = arch_cost(arch)
    assert count_module_costs(build(arch)) == (cost.macs, cost.params), arch.encode()


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("size_classes", [(224, 1000), (32, 10)])
def test_counts_from_the_arch_equal_counts_from_the_module_for_baselines(name, size_classes):
    _module_counts_agree(baseline(name, *size_classes))


@pytest.mark.parametrize("space_name", sorted(SPACE_DEFAULTS))
def test_counts_from_the_arch_equal_counts_from_the_module_for_random_archs(space_name):
    space = get_space(space_name, input_size=64 if space_name == "mnas-imagenet" else 32)
    rng = random.Random(5)
    for _ in range(15):
        _module_counts_agree(space.sample(rng))


def test_every_op_skip_and_activation_builds_and_counts():
    rng = random.Random(0)
    for op, expand in (("conv", 1), ("ds", 1), ("mb", 3)):
        for skip in ("noskip", "id", "pool"):
            for act in ("re", "r6", "hs"):
                block = BlockSpec(
                    op=op,
                    expand=expand,
                    kernel=rng.choice([3, 5, 7]),
                    stride=rng.choice([1, 2]),
                    out_channels=rng.choice([8, 16]),
                    layers=2,
                    se_ratio=0.25,
                    skip=skip,
                    act=act,
                )
                arch = Arch(33, 7, StemSpec(16, act=act), (block,), HeadSpec(0, act=act))
                _module_counts_agree(arch)
                out = build(arch).eval()(torch.zeros(2, 3, 33, 33))
                assert out.shape == (2, 7)


def _cifar_batch_at(cifar_small, size: int, count: int = 8) -> torch.Tensor:
    images = torch.from_numpy(cifar_small[1].images[:count]).permute(0, 3, 1, 2).float() / 255
    images = torch.nn.functional.interpolate(images, size=size, mode="bilinear")
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (images - mean) / std


@pytest.mark.parametrize(
    "name, reference",
    [
        ("mobilenet_v2", torchvision.models.mobilenet_v2),
        ("mnasnet_b1", torchvision.models.mnasnet1_0),
    ],
)
def test_torchvision_weights_load_into_our_build_and_give_identical_outputs(
    cifar_small, name, reference
):
    torch.manual_seed(0)
    theirs = reference().eval()
    # Make batch-norm statistics non-trivial, so a mis-mapped tensor cannot hide.
    with torch.no_grad():
        for module in theirs.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    ours = build(baseline(name, 224, 1000))
    load_state_dict_by_order(ours, theirs.state_dict())
    images = _cifar_batch_at(cifar_small, 224)
    with torch.no_grad():
        expected, actual = theirs(images), ours.eval()(images)
    assert torch.equal(actual.argmax(1), expected.argmax(1))
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=0, atol=1e-5)
    assert expected.std() > 1e-3  # the comparison is not between two near-constant outputs


def test_loading_weights_of_another_arch_names_the_mismatch():
    ours = build(baseline("mobilenet_v2_0.5", 224, 1000))
    with pytest.raises(ValueError, match=r"shape mismatch: model stem.0.weight \(16, 3, 3, 3\)"):
        load_state_dict_by_order(ours, torchvision.models.mobilenet_v2().state_dict())
    with_se = build(baseline("mnasnet_a1", 224, 1000))
    with pytest.raises(ValueError, match="not the same architecture"):
        load_state_dict_by_order(with_se, torchvision.models.mnasnet1_0().state_dict())
