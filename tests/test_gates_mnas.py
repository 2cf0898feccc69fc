"""Gu & Tresp gates on MnasNet-space teachers: the ``mnasw:`` family (an Arch at full width
loads its weights and computes its logits; bad strings name the token; TFLite / ONNX parity and
host timing behind a refusing latency table), the gate layout (tied streams, tied depthwise
gates), extraction that computes what the gated network computes on real CIFAR images, and a
real gate search from a MnasNet-space checkpoint to a MAC target."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from models.arch import Arch
from models.network import decode_network
from models.widths_mnas import MnasW
from pipeline.batches import BatchLoader
from pipeline.gates.layout import gates_for
from pipeline.gates.optim import GatedNetwork

# every op, SE, id / pool / poolp skips, a stride-2 layer and a hard-swish head
TEACHER = Arch.decode(
    "in32_cls10|stem_k3_s1_c16_re|mb3_k5_s2_se25_id_c24_n2_r6|ds_k3_s1_se25_pool_c32_n1_hs"
    "|conv_k3_s1_se25_pool_c32_n1_re|mb4_k3_s1_se0_pool_c32_n1_r6|head_c64_hs"
)
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _randomised(model: nn.Module, seed: int) -> nn.Module:
    """BN statistics and shifts away from their defaults, logits O(1)."""
    torch.manual_seed(seed)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.bias.data.uniform_(-0.5, 0.5)
    with torch.no_grad():
        model.classifier[1].weight.mul_(100.0)
    return model.eval()


def _images(cifar_small, count: int = 32) -> torch.Tensor:
    _, test = cifar_small
    return next(iter(BatchLoader(test, count, train=False, mean=MEAN, std=STD)))[0]


def test_an_arch_at_full_width_loads_its_weights_and_computes_its_logits(cifar_small):
    network = MnasW.from_arch(TEACHER)
    assert network.encode() == (
        "mnasw:in32_cls10|stem_k3_s1_c16_re|mb_k5_s2_e48_q4_noskip_c24_r6"
        "|mb_k5_s1_e72_q6_id_c24_r6|ds_k3_s1_q6_poolp_c32_hs|conv_k3_s1_q8_pool_c32_re"
        "|mb_k3_s1_e128_q0_pool_c32_r6|head_c64_hs"
    )
    assert decode_network(network.encode()) == network
    assert network.cost() == TEACHER.cost()
    student = _randomised(TEACHER.build(), seed=0)
    model = network.build().eval()
    model.load_state_dict(student.state_dict())  # the same names and shapes
    images = _images(cifar_small)
    with torch.no_grad():
        torch.testing.assert_close(model(images), student(images), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mnasw:in32_cls10|stem_k3_s1_c8_re|head_c0_re", "token 3 'head_c0_re': expected stem_"),
        ("mnasw:in32_cls10|stem_k4_s1_c8_re|ds_k3_s1_q0_id_c8_re|head_c0_re", "token 2 .*kernel"),
        (
            "mnasw:in32_cls10|stem_k3_s1_c8_re|mb_k3_s1_q0_id_c8_re|head_c0_re",
            "token 3 'mb_k3_s1_q0_id_c8_re': an mb layer needs its expanded width",
        ),
        (
            "mnasw:in32_cls10|stem_k3_s1_c8_re|ds_k3_s2_q0_id_c8_re|head_c0_re",
            "token 3 .*id needs stride 1 .* write noskip",
        ),
        (
            "mnasw:in32_cls10|stem_k3_s1_c8_re|ds_k3_s1_q0_pool_c9_re|head_c0_re",
            "token 3 .*needs 8 output channels; write poolp",
        ),
        (
            "mnasw:in32_cls10|stem_k3_s1_c8_re|ds_k3_s1_q0_skip_c8_re|head_c0_re",
            r"token 3 .*expected <conv\|ds\|mb>.*<noskip\|id\|pool\|poolp>",
        ),
        ("mnasw:in32_cls10|stem_k3_s1_c8_re|ds_k3_s1_q0_id_c8_re|hd_c0", "token 4 .*head_c"),
    ],
)
def test_bad_mnasw_strings_name_the_token(text, message):
    with pytest.raises(ValueError, match=message):
        decode_network(text)


def test_mnasnet_checkpoints_are_gated_at_full_width():
    from models.baselines import baseline
    from pipeline.gates.method import width_network

    assert width_network(TEACHER.encode(), 32, 10) == MnasW.from_arch(TEACHER)
    network = width_network("mobilenet_v2_0.5", 32, 10)  # a baseline name, as trained
    assert network == MnasW.from_arch(baseline("mobilenet_v2_0.5", 32, 10))
    assert network.cost() == baseline("mobilenet_v2_0.5", 32, 10).cost()
    assert width_network(network.encode(), 32, 10) == network


def test_streams_tie_the_residual_layers_and_the_depthwise_inputs():
    helper = gates_for(MnasW.from_arch(TEACHER))
    names = [g.name for g in helper.layout.groups]
    # layer 2 (id) and layers 4-5 (pool without projection) add into their input's stream;
    # layer 3 (poolp) starts a new one; ds and conv layers have no inner gates
    assert names == [
        "stem.out",
        "layer1.inner",
        "layer1.out",
        "layer2.inner",
        "layer3.out",
        "layer5.inner",
        "head",
    ]
    points = {name: index.tolist() for name, index in helper.layout.points.items()}
    assert points["layers.0.body.0.1"] == points["layers.0.body.1.1"]  # expand = depthwise
    assert points["layers.0.body.3.1"] == points["layers.1.body.3.1"]  # the id stream
    assert points["layers.2.body.0.1"] == points["layers.1.body.3.1"]  # ds depthwise = input
    stream = points["layers.2.body.2.1"]
    assert points["layers.2.shortcut.1.1"] == stream == points["layers.3.body.0.1"]
    assert points["layers.4.body.2.1"] == stream


def test_the_extracted_mnasw_network_computes_what_the_gated_one_does(cifar_small):
    network = MnasW.from_arch(TEACHER)
    helper = gates_for(network)
    model = _randomised(network.build(), seed=1)
    gated = GatedNetwork(model, helper.layout).eval()
    generator = torch.Generator().manual_seed(3)
    keep = torch.rand(helper.layout.size, generator=generator) > 0.6
    for group in helper.layout.groups:
        if not keep[group.start : group.stop].any():
            keep[group.start] = True
    gates = (torch.rand(helper.layout.size, generator=generator) * 2 - 0.5) * keep
    with torch.no_grad():
        gated.gates.copy_(gates)
    small, extracted = helper.transfer(model, gates, keep)
    assert small.cost().macs < network.cost().macs / 3
    assert decode_network(small.encode()) == small and extracted.network == small
    images = _images(cifar_small, 64)
    with torch.no_grad():
        expected, got = gated(images), extracted.eval()(images)
    assert expected.abs().max() > 1
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    everything_closed = torch.zeros(helper.layout.size, dtype=torch.bool)
    for group in helper.layout.groups:
        everything_closed[group.start] = True  # keep-one: one channel left per group
    assert [layer.out_channels for layer in helper.shrink(everything_closed).layers] == [1] * 5


def test_a_thinned_mnasw_network_exports_and_is_timed_past_a_latency_table(data_dir, tmp_path):
    """TFLite and ONNX agree with PyTorch on real CIFAR images; a latency chain whose table
    cannot predict an ``mnasw:`` network falls through to timing it on this machine, which
    also times the thinned copies a latency fit needs."""
    from export_helpers import export_with_parity

    from device_bench.backends import backend_from_spec
    from device_bench.host import MeasureSettings
    from device_bench.measurement import MeasurementError
    from pipeline.gates.latency import measure_fit
    from pipeline.latency_chain import LatencyChain

    data = data_dir / "cifar10_small.npz"
    if not data.is_file():
        pytest.skip(f"{data} not found; set PEARL_DATA to the folder holding cifar10_small.npz")
    text = (
        "mnasw:in32_cls10|stem_k3_s2_c6_re|mb_k3_s2_e13_q3_noskip_c9_r6|ds_k3_s1_q2_pool_c9_hs"
        "|conv_k3_s1_q0_poolp_c7_re|head_c11_hs"
    )
    network = decode_network(text)
    model = _randomised(network.build(), seed=2)
    meta = export_with_parity(text, model, tmp_path, data, ("tflite", "onnx"))
    for fmt in ("tflite", "onnx"):
        parity = meta["files"][fmt]["parity"]
        assert parity["max_rel"] <= 1e-4 and parity["top1_agreement"] == 1.0, (fmt, parity)
    table = Path(__file__).parents[1] / "latency_tables" / "host_tflite_mnas-cifar_32.csv"
    specs = [f"table:{table}", "host:tflite"]
    quick = MeasureSettings(min_runs=20, max_runs=200, min_seconds=0.1, max_seconds=0.5)
    backends = [backend_from_spec(spec, quick) for spec in specs]  # a functional check: short
    chain = LatencyChain(specs, export_cache_dir=tmp_path / "cache", backends=backends)
    assert [entry["up"] for entry in chain.status()] == [True, True]
    with pytest.raises(MeasurementError, match="predicts MnasNet-space networks only"):
        chain.entries[0].backend.measure_arch(network)
    record = chain.measure(network)
    assert record.spec == "host:tflite" and record.source == "host" and record.latency_ms > 0
    # gates.weighting = "latency": the teacher and each gate group thinned, timed on the chain
    helper = gates_for(network)
    fit = measure_fit(helper, lambda net: chain.measure(net).latency_ms)
    assert [group for group, _, _ in fit.samples] == list(range(len(helper.layout.groups)))
    assert all(ms > 0 for _, _, ms in fit.samples) and min(fit.slopes_ms) >= 0


def test_flops_weights_follow_the_macs_a_channel_saves():
    from pipeline.gates.optim import cost_weights

    network = MnasW.from_arch(TEACHER)
    helper = gates_for(network)
    alpha = cost_weights(helper, "flops")
    groups = {g.name: g for g in helper.layout.groups}
    # an inner channel of layer 1 (mb3, 16 -> 48 -> 24, 5x5 stride 2 at 32 px, SE 48 <-> 4):
    # expansion 16 MACs at 32x32, depthwise 25 and projection 24 at 16x16, SE 2 x 4
    inner = 16 * 32 * 32 + (25 + 24) * 16 * 16 + 2 * 4
    saved = network.cost().macs - helper.shrink(_closing(helper, "layer1.inner")).cost().macs
    assert saved == inner
    largest = inner / float(alpha[groups["layer1.inner"].start])
    for name, group in groups.items():
        closed = network.cost().macs - helper.shrink(_closing(helper, name)).cost().macs
        assert float(alpha[group.start]) == pytest.approx(closed / largest), name
    assert alpha.max() == 1


def _closing(helper, name: str) -> torch.Tensor:
    """The keep vector with the first gate of group `name` closed."""
    keep = torch.ones(helper.layout.size, dtype=torch.bool)
    keep[next(g.start for g in helper.layout.groups if g.name == name)] = False
    return keep


SMALL_TEACHER = (
    "in32_cls10|stem_k3_s2_c8_re|mb3_k3_s2_se25_id_c16_n2_r6|ds_k3_s2_se0_noskip_c24_n1_re"
    "|head_c32_re"
)


def _small_teacher_checkpoint(data_dir: Path, tmp_path: Path) -> Path:
    """A Pearl checkpoint of `SMALL_TEACHER` with random weights (seed 0); skips without data."""
    from models.teacher_loading import save_checkpoint

    if not (data_dir / "cifar10_small.npz").is_file():
        pytest.skip("cifar10_small.npz not found; set PEARL_DATA")
    teacher = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    save_checkpoint(
        teacher, Arch.decode(SMALL_TEACHER).build(), model_name=SMALL_TEACHER, num_classes=10,
        input_size=32, mean=MEAN, std=STD,
    )  # fmt: skip
    return teacher


def test_a_gate_search_thins_a_mnasnet_checkpoint_to_its_target(data_dir, tmp_path):
    """A real search from a Pearl checkpoint of a 3-block MnasNet-space network (random
    weights): latency weights fitted on host:tflite, gates closing under a large lambda2 until
    the network left is under the MAC target; each snapshot (an ``mnasw:`` string) is decoded,
    built, costed, proxy-trained and timed by the shared evaluation."""
    from pipeline.config import load_config
    from pipeline.search import Search, build_setup
    from pipeline.store import ResultsStore

    teacher = _small_teacher_checkpoint(data_dir, tmp_path)
    arch = Arch.decode(SMALL_TEACHER)
    target_mmacs = round(0.75 * arch.cost().macs / 1e6, 3)
    overrides = {
        "data": {"path": str(data_dir / "cifar10_small.npz"), "train_images": 64},
        "teacher": {"spec": str(teacher)},
        "proxy": {"loss": "ce", "epochs": 1, "batch_size": 64, "warmup_epochs": 0},
        "reward": {"preset": "soft", "cost": "macs", "target": 3e5},
        "search": {"method": "gates", "batch_size": 1, "max_candidates": 4},
        "gates": {
            "target_mmacs": target_mmacs,
            "lambda2": 30.0,
            "batch_size": 16,
            "steps_per_generation": 2,
            "max_steps": 8,
        },
    }
    config = load_config(None, overrides)
    lines: list[str] = []
    setup = build_setup(config, log=lines.append)
    try:
        with Search(config, tmp_path / "run", setup, resume=False, log=lines.append) as search:
            search.run()
    finally:
        setup.close()
    assert any(line.startswith("gates: reached ") for line in lines), lines
    with ResultsStore(tmp_path / "run" / "results.sqlite") as store:
        rows = store.candidates()
    assert rows and all(row.arch.startswith("mnasw:in32_cls10|") for row in rows)
    assert all(row.status != "failed" and row.accuracy is not None for row in rows)
    student = decode_network(rows[-1].arch)
    assert student.cost().macs <= target_mmacs * 1e6 < arch.cost().macs
    assert student.build()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_gate_steps_do_not_depend_on_the_callers_random_state(data_dir, tmp_path):
    """A MnasNet teacher keeps its classifier's dropout during gate steps: the gates must come
    out the same whatever the process drew from torch's generator before (a `pearl run` draws
    more than a `pearl search`), and the caller's generator must be left as it was."""
    from pipeline.config import load_config
    from pipeline.gates.method import GateSearch

    teacher = _small_teacher_checkpoint(data_dir, tmp_path)
    config = load_config(
        None,
        {
            "data": {"path": str(data_dir / "cifar10_small.npz"), "train_images": 64},
            "teacher": {"spec": str(teacher)},
            "proxy": {"loss": "ce"},
            "reward": {"cost": "macs", "target": 3e5},
            "search": {"method": "gates"},
            "gates": {
                "target_mmacs": 0.05,
                "lambda2": 30.0,
                "batch_size": 16,
                "steps_per_generation": 3,
            },  # fmt: skip
        },
    )
    gates = []
    for draws in (0, 1000):
        method = GateSearch(config, None)
        torch.manual_seed(7)
        torch.rand(draws)
        before = torch.get_rng_state()
        method._advance()
        assert torch.equal(torch.get_rng_state(), before)
        gates.append(method.engine.gated.gates.detach().clone())
    assert torch.equal(gates[0], gates[1]) and not torch.equal(gates[0], torch.ones_like(gates[0]))
