"""The width families (`models.widths_resnet`, `models.widths_densenet`, `models.widths_mnas`):
canonical strings, errors that point at the token, costs that match the built modules, teacher
names, and one real TFLite export of a thinned DenseNet (channel gathers, dropped connections)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from models.network import decode_network
from models.teacher_loading import build_model, load_checkpoint, resolve_checkpoint_path
from models.widths_densenet import DenseNetW
from models.widths_resnet import ResNetW

THIN_DENSENET = "densenet:in32_cls10|c8|d0-3.6x8o4|t0-11o6|d0-5x4o2|d1.6-7x3o3|f1-7.9-10"
THIN_RESNET = "resnetw:in32_cls10|w8p0_7.7|w13p2_15.10|w28p4_27.29"
THIN_MNAS = (
    "mnasw:in32_cls10|stem_k3_s1_c5_re|mb_k5_s2_e15_q4_noskip_c11_r6|mb_k5_s1_e26_q6_id_c11_r6"
    "|ds_k3_s1_q6_poolp_c13_hs|conv_k3_s1_q8_pool_c13_re|mb_k3_s1_e52_q0_pool_c13_r6|head_c19_hs"
)


def counted(model: nn.Module, size: int = 32) -> tuple[int, int]:
    """``(MACs, parameters)`` counted with hooks on every conv and linear layer."""
    macs = 0

    def hook(module, inputs, output):
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            macs += module.weight[0].numel() * output[0].numel()
        else:
            macs += module.weight.numel()

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [m.register_forward_hook(hook) for m in layers]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for handle in handles:
        handle.remove()
    return macs, sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "text",
    [
        ResNetW.full(20).encode(),
        THIN_RESNET,
        DenseNetW.full(16, 6).encode(),
        THIN_DENSENET,
        THIN_MNAS,
    ],
)
def test_strings_round_trip_and_cost_matches_the_built_module(text):
    network = decode_network(f" {text}\n")
    assert network.encode() == text and decode_network(text) == network
    assert len(network.key()) == 16 and network.key() != decode_network(THIN_RESNET + "5").key()
    cost = network.cost()
    assert (cost.macs, cost.params) == counted(network.build())


def test_full_networks_match_the_papers_sizes_and_the_resnet_checkpoint():
    assert (
        ResNetW.full(20).encode()
        == "resnetw:in32_cls10|w16p0_16.16.16|w32p8_32.32.32|w64p16_64.64.64"
    )
    big = DenseNetW.full(100, 12).cost()  # the paper: 0.8M parameters, 296M FLOPs
    assert 0.75e6 < big.params < 0.8e6 and 280e6 < big.macs < 300e6
    assert build_model("densenet16_6", num_classes=10, input_size=32).network == DenseNetW.full(
        16, 6
    )
    # a resnet20 checkpoint loads into the resnetw module and computes the same logits
    teacher, _ = load_checkpoint(resolve_checkpoint_path("builtin:resnet20_cifar10"))
    model = ResNetW.full(20).build().eval()
    model.load_state_dict(teacher.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), teacher(x))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("resnetw:in32_cls10", "token 1 'in32_cls10': no stages"),
        ("resnetw:in32_cls10|w16p0_16|w32x8_32", r"token 3 'w32x8_32': expected w<width>p<pad>"),
        ("resnetw:in32_cls10|w16p0_16|w20p8_3", "token 3 .*cannot hold the previous stage's 16"),
        ("resnetw:in32_cls10|w16p2_16", "its pad must be p0"),
        ("resnetw:in32_cls10|w16p0_0", "inner width must be a positive integer"),
        ("densenet:in32_cls10|c8|d0-3.4x8o4|f0", "token 3 'd0-3.4x8o4': not canonical.*'0-4'"),
        ("densenet:in32_cls10|c8|d0-9x8o4|f0", "token 3 .*channel 9 is out of range: .* 8 chan"),
        ("densenet:in32_cls10|c8|d0-3x8o4|t0-3o2", "the last part must be the final f"),
        ("densenet:in32_cls10|c8|q|f0", "token 3 'q': expected d<set>"),
        ("densenet:in32_cls10|d0x1o1|f0", "token 2 .*expected c<stem>"),
        ("densenet:in8_cls1|c8|f0", "token 1 .*classes >= 2"),
    ],
)
def test_bad_strings_name_the_token_and_the_fix(text, message):
    with pytest.raises(ValueError, match=message):
        decode_network(text)


def test_bad_teacher_names_are_clear_errors():
    from models.teacher_loading import TeacherError

    with pytest.raises(TeacherError, match="depth must be 6n\\+4"):
        build_model("densenet41_12", num_classes=10, input_size=32)
    with pytest.raises(TeacherError, match="densenet<L>_<k>"):
        build_model("densenet", num_classes=10, input_size=32)


def test_a_thinned_densenet_exports_to_tflite_with_parity(data_dir, tmp_path):
    """Channel gathers (a part reading 0-3.6 of its input) and a dropped connection convert to
    TFLite and agree with PyTorch on real CIFAR test images."""
    from export_helpers import export_with_parity

    data = data_dir / "cifar10_small.npz"
    if not data.is_file():
        pytest.skip(f"{data} not found; set PEARL_DATA to the folder holding cifar10_small.npz")
    torch.manual_seed(0)
    model = decode_network(THIN_DENSENET).build()
    with torch.no_grad():
        model.classifier.weight.mul_(30.0)  # logits O(1): top-1 agreement means something
    meta = export_with_parity(THIN_DENSENET, model, tmp_path, data)
    assert json.loads(Path(tmp_path / "bundle" / "metadata.json").read_text()) == meta
    parity = meta["files"]["tflite"]["parity"]
    assert parity["max_rel"] <= 1e-4 and parity["top1_agreement"] == 1.0, parity
