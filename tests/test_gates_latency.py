"""Latency as the gates' cost (`pipeline.gates.latency`): the slope fit and the prediction on
hand-computed numbers, a real fit timed on host:tflite, and the clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from models.widths_resnet import ResNetW
from pipeline.gates.latency import LatencyFit, fit_slopes, thinned
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


def test_a_latency_search_times_its_fit_and_stops_on_the_predicted_ms(data_dir, tmp_path):
    """A real search on a ResNet-8 teacher (random weights: latency does not depend on them)
    with latency weights and `gates.target_ms`: the teacher and its 6 thinned copies are
    exported and timed on this machine's LiteRT, the fit is stored, the one snapshot is
    proxy-trained and timed like any candidate, and the outcome is in predicted ms."""
    from models.teacher_loading import save_checkpoint
    from pipeline.config import load_config
    from pipeline.gates.method import GateSearchError
    from pipeline.search import Search, build_setup
    from pipeline.store import ResultsStore

    if not (data_dir / "cifar10_small.npz").is_file():
        pytest.skip("cifar10_small.npz not found; set PEARL_DATA")
    network = ResNetW.full(8, 32, 10)
    teacher = tmp_path / "resnet8.pt"
    stats = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}
    save_checkpoint(
        teacher, network.build(), model_name=network.encode(), num_classes=10, input_size=32,
        **stats,
    )  # fmt: skip

    def run(target_ms: float, folder, lines: list[str], fit=None) -> None:
        overrides = {
            "data": {"path": str(data_dir / "cifar10_small.npz"), "train_images": 64},
            "teacher": {"spec": str(teacher)},
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
                if fit is not None:  # a stored fit (as a resumed search has)
                    (search.layout.gates).mkdir(parents=True, exist_ok=True)
                    (search.layout.gates / "latency_fit.json").write_text(fit)
                search.run()
        finally:
            setup.close()

    lines: list[str] = []
    run(0.001, tmp_path / "run", lines)
    fit_file = tmp_path / "run" / "gates" / "latency_fit.json"
    fit = json.loads(fit_file.read_text())
    slopes, teacher_ms = fit["slopes_ms_per_channel"], fit["teacher_ms"]
    assert len(fit["samples"]) == len(slopes) == 6 and all(s >= 0 for s in slopes)
    assert slopes[0] > slopes[-1]  # stem lanes run through every stage; the last block's don't
    mmacs = network.cost().macs / 1e6
    stopped = f"gates: stopped at {teacher_ms:.3f} ms predicted ({mmacs:.2f} MMACs) (step 1), "
    assert any(line.startswith(stopped) for line in lines), lines
    with ResultsStore(tmp_path / "run" / "results.sqlite") as store:
        (row,) = store.candidates()
    assert row.latency_ms > 0 and row.latency_spec == "host:tflite"
    report = json.loads((tmp_path / "run" / "gates" / "gates.json").read_text())
    assert report["target_ms"] == 0.001
    assert [p["predicted_ms"] for p in report["trajectory"]] == [round(teacher_ms, 4)] * 2
    with pytest.raises(GateSearchError, match="below the teacher's measured"):
        run(teacher_ms + 1, tmp_path / "above", [], fit=fit_file.read_text())
