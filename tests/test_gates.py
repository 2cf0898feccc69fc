"""Gu & Tresp gates (`pipeline.gates`): the proximal step against hand-computed numbers, tied
lanes, cost weights, extraction that computes exactly what the gated network computes on real
images, and a real gate search that stops short of its target and says so."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from models.teacher_loading import load_checkpoint, resolve_checkpoint_path
from models.widths_densenet import DenseNetW
from models.widths_resnet import ResNetW
from pipeline.batches import BatchLoader
from pipeline.gates.layout import GateLayout, gates_for
from pipeline.gates.optim import (
    GatedNetwork,
    ProximalState,
    cost_weights,
    keep_one,
    proximal_step,
    soft_threshold,
)


def test_soft_threshold_and_one_proximal_step_by_hand():
    z = torch.tensor([0.9, -0.3, 0.04, -0.05])
    expected = torch.tensor([0.85, -0.25, 0.0, 0.0])
    torch.testing.assert_close(soft_threshold(z, 0.05), expected)
    layout = GateLayout(0, [], {})
    layout.add("layer", 4, keep_one=False, layer=0)
    state = ProximalState(
        torch.tensor([1.0, 0.5, -0.2, 0.01]),
        torch.tensor([0.0, 0.1, 0.0, 0.0]),
        torch.zeros(4, dtype=torch.bool),
    )
    grad = torch.tensor([1.0, -2.0, 0.5, 0.0])
    threshold = torch.tensor([0.05, 0.05, 0.05, 0.05])
    new = proximal_step(state, grad, eta=0.1, mu=0.9, threshold=threshold, layout=layout)
    # z = g - 0.1 grad = [0.9, 0.7, -0.25, 0.01]; S(z) = [0.85, 0.65, -0.2, 0]
    # v = S(z) - g + 0.9 v = [-0.15, 0.24, 0, -0.01]; g = S(z) + 0.9 v
    torch.testing.assert_close(new.v, torch.tensor([-0.15, 0.24, 0.0, -0.01]))
    torch.testing.assert_close(new.g, torch.tensor([0.715, 0.866, -0.2, -0.009]))
    assert new.closed.tolist() == [False, False, False, True]


def test_keep_one_leaves_the_largest_gate_of_a_group_open():
    layout = GateLayout(0, [], {})
    layout.add("keeps", 3, keep_one=True, layer=0)
    layout.add("may close", 2, keep_one=False, layer=1)
    z = torch.tensor([0.01, -0.03, 0.02, 0.01, 0.02])
    shrunk = keep_one(soft_threshold(z, 0.05), z, layout)
    assert shrunk.tolist() == pytest.approx([0.0, -0.03, 0.0, 0.0, 0.0])


def test_resnet_lanes_tie_the_stream_across_stages():
    network = ResNetW.full(20)
    helper = gates_for(network)
    layout = helper.layout
    assert layout.size == 64 + 3 * (16 + 32 + 64)  # lanes + inner channels
    stage1, stage2, stage3 = helper.lanes
    assert stage2[8:24] == stage1 and stage3[16:48] == stage2  # option-A padding positions
    # closing lane 5 zeroes channel 5 of stage 1, 13 of stage 2 and 29 of stage 3 everywhere
    gated = GatedNetwork(network.build().eval(), layout)
    with torch.no_grad():
        gated.gates[stage1[5]] = 0.0
    outputs = []
    for block in gated.model.stages:
        block.register_forward_hook(lambda m, i, out: outputs.append(out))
    with torch.no_grad():
        gated(torch.randn(2, 3, 32, 32))
    channels = [5] * 3 + [13] * 3 + [29] * 3
    assert all(out[:, c].abs().max() == 0 for out, c in zip(outputs, channels, strict=True))
    assert all(out.abs().max() > 0 for out in outputs)
    shrunk = helper.shrink(
        ~torch.nn.functional.one_hot(torch.tensor(stage1[5]), layout.size).bool()
    )
    assert [s.width for s in shrunk.stages] == [15, 31, 63]


def test_cost_weights_are_macs_saved_relative_to_the_largest():
    network = ResNetW.full(20)
    helper = gates_for(network)
    alpha = cost_weights(helper, "flops")
    assert alpha.max() == 1 and alpha.min() > 0
    # an inner channel of stage 1: one output of conv1 and one input of conv2, 3x3 at 32x32
    inner = helper.layout.groups[3]
    assert inner.name == "stage1.block1.inner"
    full = network.cost().macs
    keep = [True] * helper.layout.size
    keep[inner.start] = False
    largest = max(full - helper.shrink(keep).cost().macs for keep in [keep])
    assert largest == 2 * 9 * 16 * 32 * 32
    saved_max = float(largest / alpha[inner.start])
    assert all(float(a) * saved_max > 0 for a in alpha)
    assert cost_weights(helper, "uniform").eq(1).all()
    with pytest.raises(ValueError, match="choose flops or uniform"):
        cost_weights(helper, "latency")


def _closed_at_random(layout, fraction: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    keep = torch.rand(layout.size, generator=generator) > fraction
    for group in layout.groups:
        if group.keep_one and not keep[group.start : group.stop].any():
            keep[group.start] = True
    return keep


@pytest.mark.parametrize("family", ["resnet", "densenet"])
def test_the_extracted_network_computes_what_the_gated_one_does(family, cifar_small):
    """On real CIFAR test images: the gated network (closed gates exactly 0, open ones anywhere
    in [-0.5, 1.5]) and the physically smaller extracted network give the same logits."""
    _, test = cifar_small
    if family == "resnet":
        model, payload = load_checkpoint(resolve_checkpoint_path("builtin:resnet20_cifar10"))
        network = ResNetW.full(20)
        weights = model.state_dict()
        mean, std = payload["mean"], payload["std"]
    else:
        network = DenseNetW.full(16, 6)
        torch.manual_seed(1)
        model = network.build()
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.bias.data.uniform_(-0.5, 0.5)
        weights, mean, std = model.state_dict(), (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    helper = gates_for(network)
    model = network.build()
    model.load_state_dict(weights)
    gated = GatedNetwork(model, helper.layout).eval()
    keep = _closed_at_random(helper.layout, 0.6, seed=3)
    gates = torch.rand(helper.layout.size, generator=torch.Generator().manual_seed(4)) * 2 - 0.5
    gates = gates * keep
    with torch.no_grad():
        gated.gates.copy_(gates)
    small, extracted = helper.transfer(model, gates, keep)
    assert small.cost().macs < network.cost().macs / 2
    assert extracted.network == small
    images, _ = next(iter(BatchLoader(test, 64, train=False, mean=mean, std=std)))
    with torch.no_grad():
        expected, got = gated(images), extracted.eval()(images)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    if family == "densenet":  # parts now read a thinned concatenation (gaps in their sets)
        assert sum("." in part.encode() for part in small.parts) >= len(small.parts) // 2


def test_a_layer_nobody_reads_is_removed_whole():
    network = DenseNetW.decode("densenet:in32_cls10|c4|d0-3x4o2|d0-5x4o2|f0-7")
    helper = gates_for(network)
    keep = torch.ones(helper.layout.size, dtype=torch.bool)
    # part 2 reads channels 4-5 (part 1's outputs) at reads positions 4, 5; f at 4, 5
    for group in ("part2.reads", "part3.reads"):
        g = next(g for g in helper.layout.groups if g.name == group)
        keep[g.start + 4 : g.start + 6] = False
    small = helper.shrink(keep)
    assert small.encode() == "densenet:in32_cls10|c4|d0-3x4o2|f0-5"
    # Fig. 5's matrix: the classifier reads all of the stem, none of part 1, all of part 2
    assert helper.connections(keep)[2] == [1.0, 0.0, 1.0, None]


def test_a_teacher_without_bn_to_gate_is_a_clear_error():
    from pipeline.gates.method import GateSearchError, width_network

    with pytest.raises(GateSearchError, match="need BN layers to gate.*densenet40_12"):
        width_network("vgg11", 32, 10)
    addon = "addon:resnet20_in32_cls10|conv3_sep5-1|none|max3_avg3-1"  # a KDAS network
    with pytest.raises(GateSearchError, match="'addon:resnet20.*MnasNet-space network"):
        width_network(addon, 32, 10)
    with pytest.raises(ValueError, match="need a teacher of the resnetw:, densenet: or mnasw:"):
        gates_for(object.__new__(type("Other", (), {"encode": lambda self: "x"})))


GATE_SEARCH = {
    "data": {"path": "{data}", "train_images": 128, "val_images": 64},
    "teacher": {"spec": "builtin:resnet20_cifar10"},
    "proxy": {"loss": "ce", "epochs": 1, "batch_size": 64, "threads": 1, "warmup_epochs": 0},
    "reward": {"preset": "soft", "cost": "macs", "target": 4e7},
    "search": {"method": "gates", "batch_size": 1, "max_candidates": 5},
    "gates": {"target_mmacs": 1.0, "max_steps": 2, "steps_per_generation": 1, "batch_size": 16},
}


def _gate_config(data_dir, **gates):
    from pipeline.config import load_config

    overrides = {section: dict(values) for section, values in GATE_SEARCH.items()}
    overrides["data"]["path"] = str(data_dir / "cifar10_small.npz")
    overrides["gates"].update(gates)
    return load_config(None, overrides)


def test_a_gate_search_that_cannot_reach_its_target_says_where_it_stopped(data_dir, tmp_path):
    """A real search (shipped ResNet-20 teacher, two gate steps, each snapshot proxy-trained and
    stored): the budget ends it short of an unreachable target, with a clear line."""
    from pipeline.search import Search, build_setup
    from pipeline.store import ResultsStore

    if not (data_dir / "cifar10_small.npz").is_file():
        pytest.skip("cifar10_small.npz not found; set PEARL_DATA")
    config = _gate_config(data_dir)
    lines: list[str] = []
    setup = build_setup(config, log=lines.append)
    try:
        with Search(
            config, tmp_path, setup, resume=False, log=lines.append, show_progress=False
        ) as search:
            search.run()
    finally:
        setup.close()
    assert "gates: stopped at 40.55 MMACs (step 2), target 1.00 MMACs" in lines
    with ResultsStore(tmp_path / "results.sqlite") as store:
        rows = store.candidates()
        state = store.last_generation()[1]
    assert len(rows) == 2 and all(row.arch.startswith("resnetw:in32_cls10|") for row in rows)
    assert all(row.status != "failed" and row.accuracy is not None for row in rows)
    assert state["steps"] == 2 and state["gates"]["g"].shape == (400,)
    assert [p["step"] for p in state["trajectory"]] == [0, 1, 2]
    report = json.loads((tmp_path / "gates" / "gates.json").read_text())
    assert report["outcome"].startswith("stopped at 40.55 MMACs")
    assert len(report["layers"]) == 3 + 9 and report["student"]["arch"] == rows[-1].arch
    assert all(
        (tmp_path / "gates" / name).stat().st_size > 10_000
        for name in ("trajectory.png", "kept.png")
    )
    from pipeline.gates.report import report_lines

    section = "\n".join(report_lines(tmp_path / "gates", tmp_path))
    assert "Outcome: stopped at 40.55 MMACs" in section and "(gates/kept.png)" in section
    # --resume with a bigger step budget continues the same optimisation (gates, weights, steps)
    from pipeline.config import load_config

    config = load_config(tmp_path / "config.toml", {"gates": {"max_steps": "3"}})
    setup = build_setup(config, log=lines.append)
    try:
        with Search(
            config, tmp_path, setup, resume=True, log=lines.append, show_progress=False
        ) as s:
            assert s.method.engine.steps == 2
            torch.testing.assert_close(s.method.engine.state.g, state["gates"]["g"])
            s.run()
    finally:
        setup.close()
    with ResultsStore(tmp_path / "results.sqlite") as store:
        assert len(store.candidates()) == 3
        assert [p["step"] for p in store.last_generation()[1]["trajectory"]] == [0, 1, 2, 3]


def test_a_target_above_the_teachers_cost_is_a_clear_error(data_dir, tmp_path):
    from pipeline.config import ConfigError
    from pipeline.gates.method import GateSearch, GateSearchError

    with pytest.raises(GateSearchError, match="between 0 and the teacher's 40.55 MMACs"):
        GateSearch(_gate_config(data_dir, target_mmacs=50.0), None)
    with pytest.raises(ConfigError, match="needs gates.target_mmacs"):
        _gate_config(data_dir, target_mmacs=0.0)
