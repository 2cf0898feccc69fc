"""The add-on network family (KDAS): strings, errors with positions, costs without building
against the built module, forward shapes, and one real export + host:tflite timing."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from models.addon_net import OPS, AddonLayer, AddonNet
from models.addon_space import AddonSpace
from models.builder import count_module_costs
from models.network import decode_network, family_of
from models.teachers import cifar_resnet

# every op once, skips on and off, a stage with a single layer
EVERY_OP = "addon:resnet20_in32_cls10|conv3_sep5-1_id-01|max3_avg3-1_conv5-10|sep3"


def test_strings_round_trip_and_name_their_family():
    network = decode_network(f"  {EVERY_OP}\n")
    assert isinstance(network, AddonNet) and family_of(EVERY_OP).name == "addon"
    assert network.encode() == EVERY_OP and decode_network(network.encode()) == network
    assert network.stages[0][2] == AddonLayer("id", (0, 1))
    assert {layer.op for stage in network.stages for layer in stage} == set(OPS)
    assert len(network.key()) == 16 and network.key() != network.base.key()
    assert network.base.encode() == "addon:resnet20_in32_cls10|none|none|none"
    space = AddonSpace("resnet32", 32, 100, layers_per_stage=3)
    rng = random.Random(1)
    for _ in range(20):
        sampled = space.sample(rng)
        assert decode_network(sampled.encode()) == sampled
        assert space.arch_from(space.choices_of(sampled)) == sampled
    # L layers per stage: 7^L ops x 2^(L(L-1)/2) skips, per stage
    assert [len(d.options) for d in space.decisions()[:6]] == [7, 7, 2, 7, 2, 2]


@pytest.mark.parametrize(
    "text, match",
    [
        ("addon:resnet21_in32_cls10|none|none|none", r"'resnet21' at character 6 .*resnet20, "),
        ("addon:resnet20_in32_cls10|conv4|none|none", r"'conv4' at character 26 \(stage 1, "),
        ("addon:resnet20_in32_cls10|none|id_max3|none", r"'max3' at character 34 .*exactly 1"),
        ("addon:resnet20_in32_cls10|none|id_max3-11|none", r"'max3-11' at .*got 2"),
        ("addon:resnet20_in32_cls10|none|none", r"3 stages.*got 2"),
        ("addon:resnet20_in32|none|none|none", r"'resnet20_in32' at character 6 \(header\)"),
        ("addon:resnet20_in32_cls1|none|none|none", r"class count must be >= 2"),
        ("addon:resnet20_in32_cls10|none||none", r"token '' at character 31 \(stage 2, layer 1"),
    ],
)
def test_bad_strings_name_the_token_and_its_position(text, match):
    with pytest.raises(ValueError, match=match):
        decode_network(text)


def test_bad_networks_built_by_keyword_and_bad_spaces_are_errors():
    with pytest.raises(ValueError, match=r"stage 1, layer 2: needs exactly 1 skip bit"):
        AddonNet("resnet20", 32, 10, ((AddonLayer("id"), AddonLayer("id")), (), ()))
    with pytest.raises(ValueError, match="knows the stages of resnet20"):
        AddonSpace("wrn16", 32, 10, 2)
    with pytest.raises(
        ValueError, match="3 add-on layers in a stage; space addon-resnet20-L1 has 1"
    ):
        AddonSpace("resnet20", 32, 10, 1).choices_of(decode_network(EVERY_OP))
    with pytest.raises(ValueError, match="is not a network of space"):
        AddonSpace("resnet32", 32, 10, 3).choices_of(decode_network(EVERY_OP))
    with pytest.raises(ValueError, match=r"choice 7 for s1.a1.op .*expected 0..6"):
        AddonSpace("resnet20", 32, 10, 1).arch_from([7, 0, 0])


@pytest.mark.parametrize(
    "text",
    [
        EVERY_OP,
        "addon:resnet32_in24_cls100|none|sep5_conv3-1|avg3",
        "addon:resnet44_in16_cls10|avg3|none|conv5",
        "addon:wrn16-2_in32_cls100|conv3|sep5_avg3-1|none",
    ],
)
def test_cost_without_building_equals_the_module_and_the_forward_shape(text):
    network = decode_network(text)
    model = network.build()
    assert count_module_costs(model) == (network.cost().macs, network.cost().params)
    rows = network.rows()
    assert sum(r["params"] for r in rows) == network.cost().params
    assert model(torch.randn(2, 3, network.input_size, network.input_size)).shape == (
        2,
        network.num_classes,
    )


def test_pearl_arch_describe_shows_the_rows_of_an_add_on_network():
    import json

    from click.testing import CliRunner

    from pipeline.cli import cli

    result = CliRunner().invoke(cli, ["arch", "describe", EVERY_OP, "--json"])
    assert result.exit_code == 0, result.output
    described = json.loads(result.stdout)
    network = decode_network(EVERY_OP)
    assert (
        described["params"] == network.cost().params == sum(r["params"] for r in described["rows"])
    )
    assert [r["row"] for r in described["rows"] if r["block"] == 1][-3:] == ["1.a1", "1.a2", "1.a3"]
    assert described["rows"][-1]["op"] == "linear"


def test_the_backbone_alone_is_the_cifar_resnet_teacher():
    for depth in (20, 110):
        base = decode_network(f"addon:resnet{depth}_in32_cls10|none|none|none")
        teacher = cifar_resnet(f"resnet{depth}")
        assert base.cost().params == sum(p.numel() for p in teacher.parameters())


def test_wide_resnet_backbones_have_the_published_sizes():
    # Zagoruyko & Komodakis 2016 / KDAS Table 3 at 100 classes: WRN-16-2 0.7M, WRN-40-1 0.6M,
    # WRN-16-4 2.7M parameters
    sizes = {
        name: decode_network(f"addon:{name}_in32_cls100|none|none|none").cost().params
        for name in ("wrn16-2", "wrn40-1", "wrn16-4")
    }
    assert sizes == {"wrn16-2": 703_284, "wrn40-1": 569_780, "wrn16-4": 2_772_020}


def test_skips_add_earlier_add_on_outputs():
    net = AddonNet("resnet20", 8, 2, ((AddonLayer("id"), AddonLayer("id", (1,))), (), ()))
    stage = net.build().stages[0][-1]  # the add-on layers after stage 1
    x = torch.randn(1, 16, 8, 8)
    assert torch.equal(stage(x), x + x)  # layer 2 = id(layer 1) + layer 1


@pytest.mark.slow
def test_export_has_parity_and_times_on_host_tflite(tmp_path):
    from models.export import ExportRequest, run_export
    from pipeline.latency_chain import LatencyChain

    network = decode_network(EVERY_OP)
    out = tmp_path / "bundle"
    meta = run_export(ExportRequest(network, out, formats=("tflite", "onnx"), parity_images=4))
    for name in ("tflite", "onnx"):
        parity = meta["files"][name]["parity"]
        assert parity["passed"] and parity["max_rel"] <= 1e-4, (name, parity)
    assert meta["arch"] == EVERY_OP
    tflite = Path(meta["files"]["tflite"]["path"])
    tflite = tflite if tflite.is_absolute() else out / tflite
    chain = LatencyChain(
        ["host:tflite"], export_cache_dir=tmp_path / "cache", exporter=lambda arch, fmt: tflite
    )
    record = chain.measure(network)
    assert record.latency_ms > 0 and record.spec == "host:tflite" and record.source == "host"
