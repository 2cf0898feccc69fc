"""Latency as the gates' cost (`pipeline.gates.latency`): the slope fit and the prediction on
hand-computed numbers, a real fit timed on host:tflite, and the clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from models.widths_resnet import ResNetW
from pipeline.gates.latency import LatencyFit, fit_slopes, measure_fit, thinned
from pipeline.gates.layout import gates_for


def test_slopes_are_least_squares_through_the_origin_clamped_at_zero():
    # group 0: closing 2 saves 0.2 ms, closing 4 saves 0.3 ms -> (2*0.2 + 4*0.3) / (4 + 16)
    # group 1: slower when thinned (noise) -> 0; group 2: never sampled -> 0
    samples = [(0, 2, 0.8), (0, 4, 0.7), (1, 3, 1.05)]
    slopes = fit_slopes(1.0, samples, groups=3)
    assert slopes == pytest.approx((1.6 / 20, 0.0, 0.0))
    with pytest.raises(ValueError, match="closes 0 channels"):
        fit_slopes(1.0, [(0, 0, 0.9)], groups=1)


def test_alpha_and_prediction_follow_the_per_group_slopes():
    fit = LatencyFit(2.0, (0.1, 0.025), (), group_of_gate=(0, 0, 1, 1, 1))
    assert fit.alpha().tolist() == pytest.approx([1.0, 1.0, 0.25, 0.25, 0.25])
    keep = torch.tensor([True, False, False, False, True])
    assert fit.predict_ms(keep) == pytest.approx(2.0 - 0.1 - 2 * 0.025)
    with pytest.raises(ValueError, match="use gates.weighting = 'flops'"):
        LatencyFit(2.0, (0.0, 0.0), (), (0, 1)).alpha()


def test_thinning_spreads_over_the_group_and_keeps_one():
    helper = gates_for(ResNetW.full(8, 32, 10))
    layout = helper.layout
    inner = next(i for i, g in enumerate(layout.groups) if g.name.endswith("inner"))
    group = layout.groups[inner]
    keep = thinned(layout, inner, 0.5)
    closed = (~keep).nonzero().flatten().tolist()
    assert len(closed) == (group.stop - group.start) // 2
    assert all(group.start <= j < group.stop for j in closed)
    assert closed[0] == group.start and closed[-1] == group.stop - 1  # spread end to end
    assert int((~thinned(layout, inner, 1.0)).sum()) == group.stop - group.start - 1  # keep-one


def test_a_real_fit_on_host_tflite(tmp_path):
    """ResNet-8 and its 6 thinned copies exported and timed on this machine's LiteRT: thinning
    never predicts a negative saving, and the stem lanes (which run through every stage) cost
    more per channel than the inner channels of the last block."""
    from models.quiet import set_quiet
    from pipeline.latency_chain import LatencyChain

    set_quiet(True)
    chain = LatencyChain(["host:tflite"], export_cache_dir=tmp_path, threads=1)
    if chain.best_rank() is None:
        pytest.skip(f"host:tflite unavailable: {chain.status()}")
    helper = gates_for(ResNetW.full(8, 32, 10))
    fit = measure_fit(helper, lambda network: chain.measure(network).latency_ms)
    assert fit.teacher_ms > 0 and len(fit.samples) == len(helper.layout.groups) == 6
    assert all(slope >= 0 for slope in fit.slopes_ms)
    names = [g.name for g in helper.layout.groups]
    stem, last = names.index("lanes.stage1"), len(names) - 1
    assert fit.slopes_ms[stem] > fit.slopes_ms[last]
    everything = torch.zeros(helper.layout.size, dtype=torch.bool)
    assert fit.predict_ms(everything) < fit.teacher_ms


def test_latency_gates_need_a_backend_that_can_time_them(data_dir):
    from pipeline.config import ConfigError, load_config
    from pipeline.gates.method import GateSearch, GateSearchError

    base = {
        "data": {"path": str(data_dir / "cifar10_small.npz")},
        "teacher": {"spec": "builtin:resnet20_cifar10"},
        "search": {"method": "gates"},
        "gates": {"target_mmacs": 20.0, "weighting": "latency"},
    }
    with pytest.raises(ConfigError, match="set reward.cost = 'latency_ms'"):
        load_config(None, {**base, "reward": {"cost": "macs", "target": 2e7}})
    table_only = {
        **base,
        "reward": {"cost": "latency_ms", "target": 0.5},
        "latency": {"backends": ["table:missing.json"]},
    }
    with pytest.raises(GateSearchError, match="add 'host:tflite' or 'adb:SERIAL'"):
        GateSearch(load_config(None, table_only), None)
    with pytest.raises(ConfigError, match="not both"):
        load_config(None, {**base, "gates": {"target_mmacs": 20.0, "target_ms": 0.5}})


def test_a_latency_target_search_stops_on_the_predicted_ms(data_dir, tmp_path):
    """A real search with `gates.target_ms` and latency weights, resumed from a stored fit (the
    file a search writes after timing; 1 ms teacher, 0.01 ms per channel): its one snapshot is
    proxy-trained and timed on host:tflite like any candidate, and the outcome is in ms."""
    from models.files import atomic_write_json
    from pipeline.config import load_config
    from pipeline.gates.method import GateSearchError
    from pipeline.search import Search, build_setup
    from pipeline.store import ResultsStore

    if not (data_dir / "cifar10_small.npz").is_file():
        pytest.skip("cifar10_small.npz not found; set PEARL_DATA")
    fit = {"teacher_ms": 1.0, "slopes_ms_per_channel": [0.01] * 12, "samples": []}

    def run(target_ms: float, lines: list[str], folder) -> None:
        overrides = {
            "data": {"path": str(data_dir / "cifar10_small.npz"), "train_images": 64},
            "teacher": {"spec": "builtin:resnet20_cifar10"},
            "proxy": {"loss": "ce", "epochs": 1, "batch_size": 64, "warmup_epochs": 0},
            "reward": {"preset": "soft", "cost": "latency_ms", "target": 0.5},
            "latency": {"backends": ["host:tflite"], "export_cache_dir": str(tmp_path / "x")},
            "search": {"method": "gates", "batch_size": 1, "max_candidates": 3},
            "gates": {"target_ms": target_ms, "weighting": "latency", "max_steps": 1},
        }
        config = load_config(None, overrides)
        setup = build_setup(config, log=lines.append)
        try:
            with Search(config, folder, setup, resume=False, log=lines.append) as search:
                atomic_write_json(search.layout.gates / "latency_fit.json", fit)
                search.run()
        finally:
            setup.close()

    with pytest.raises(GateSearchError, match="below the teacher's measured 1.000 ms"):
        run(1.5, [], tmp_path / "above")
    lines: list[str] = []
    run(0.5, lines, tmp_path / "run")
    assert "gates: stopped at 1.000 ms predicted (40.55 MMACs) (step 1), target 0.500 ms" in lines
    with ResultsStore(tmp_path / "run" / "results.sqlite") as store:
        (row,) = store.candidates()
    assert row.latency_ms > 0 and row.latency_spec == "host:tflite"
    report = json.loads((tmp_path / "run" / "gates" / "gates.json").read_text())
    assert report["target_ms"] == 0.5
    assert [p["predicted_ms"] for p in report["trajectory"]] == [1.0, 1.0]
