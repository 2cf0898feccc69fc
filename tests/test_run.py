"""`pearl run` / `pearl report`: winner choice, report arithmetic, config sections, and the
whole pipeline end to end at a tiny budget on cifar10_small (real search, training, export,
LiteRT and ONNX Runtime timing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.report_plots import per_generation_medians
from pipeline.report_text import kd_gain, markdown_table, relative_gain
from pipeline.reward import RewardSpec
from pipeline.run import target_device
from pipeline.run_config import RUN_SECTIONS, RunConfig
from pipeline.winners import pick_winners

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    key: str
    accuracy: float | None
    latency_ms: float | None
    arch: str = "a"
    latency_source: str = "host"
    latency_spec: str = "host:tflite"
    macs: int = 1
    params: int = 1
    generation: int = 0
    memory_mb: float | None = None
    memory_source: str | None = None

    def cost(self, name: str):
        return getattr(self, name)


def test_winners_are_the_most_accurate_within_each_target_ties_to_the_faster():
    rows = [
        Row("slow-good", 0.80, 2.0),
        Row("fast-ok", 0.70, 0.5),
        Row("twin-slow", 0.70, 0.6),
        Row("unscored", None, 0.1),
    ]
    hard = RewardSpec.preset("hard", 1.0)
    winners = pick_winners(rows, [1.0, 3.0], hard)
    assert [w["key"] for w in winners] == ["fast-ok", "slow-good"]
    assert [w["within_target"] for w in winners] == [True, True]
    assert winners[0]["reward"] == pytest.approx(0.70)  # hard: the accuracy within the target
    # equal accuracy within the target: the lower latency wins
    tie = pick_winners([Row("b", 0.7, 0.6), Row("a", 0.7, 0.5)], [1.0], hard)
    assert tie[0]["key"] == "a"
    # soft: slow-good has the best reward (0.8 * 2 ** -0.07 = 0.762 > 0.735) but misses the
    # 1 ms budget, so it does not win that target
    soft = RewardSpec.preset("soft", 1.0)
    assert max(rows[:3], key=lambda r: soft(r.accuracy, r.latency_ms)).key == "slow-good"
    soft_winner = pick_winners(rows, [1.0], soft)[0]
    assert soft_winner["key"] == "fast-ok"
    assert soft_winner["reward"] == pytest.approx(soft(0.70, 0.5))
    # nothing within the target: the best reward, flagged and explained
    over = pick_winners(rows, [0.2], soft)[0]
    assert over["key"] == "slow-good" and over["within_target"] is False
    assert "raise the budget" in over["note"]
    assert pick_winners([Row("x", None, None)], [1.0], soft) == [{"target": 1.0, "arch": None}]


def test_report_arithmetic():
    done = {"finished": True}
    assert kd_gain({"kd": {"top1": 0.71, **done}, "ce": {"top1": 0.69, **done}}) == pytest.approx(
        2.0
    )
    assert kd_gain({"kd": {"top1": 0.71, **done}}) is None
    # a training that stopped early is no final result: it is left out of the gain
    assert kd_gain({"kd": {"top1": 0.71, "finished": False}, "ce": {"top1": 0.69, **done}}) is None
    assert relative_gain(2.0, 0.5) == pytest.approx(1.5)
    assert relative_gain(None, 0.5) is None
    assert per_generation_medians([1, 0, 1, 1], [3.0, 5.0, 1.0, 2.0]) == ([0, 1], [5.0, 2.0])
    assert markdown_table(["a", "b"], [(1, 2)]).splitlines() == [
        "| a | b |",
        "|---|---|",
        "| 1 | 2 |",
    ]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text('[teacher]\nspec = "builtin:resnet20_cifar10"\n' + text)
    return path


def _load(tmp_path: Path, text: str) -> RunConfig:
    return load_config(_write(tmp_path, text), None, RunConfig, RUN_SECTIONS)


def test_run_config_sections_and_errors(tmp_path):
    config = _load(tmp_path, '[train]\nepochs = 3\nlosses = ["ce"]\n[export]\ncalib_images = 10\n')
    assert config.train.epochs == 3 and config.train.losses == ("ce",)
    assert set(config.to_dict()) == set(RUN_SECTIONS)
    assert "train" not in config.search_config().to_dict()
    assert config.train_data() == config.data.path
    with pytest.raises(ConfigError, match=r"train\.epoch.*valid keys in \[train\]"):
        _load(tmp_path, "[train]\nepoch = 3\n")
    with pytest.raises(ConfigError, match="train.losses"):
        _load(tmp_path, '[train]\nlosses = ["kl"]\n')
    with pytest.raises(ConfigError, match="export.device"):
        load_config(
            _write(tmp_path, '[export]\ndevice = "table:x.csv"\n'), None, RunConfig, RUN_SECTIONS
        )


def test_target_device_prefers_a_phone_then_the_host_tflite(tmp_path):
    def config(backends, device=""):
        latency = f"[latency]\nbackends = {json.dumps(backends)}\n"
        return _load(tmp_path, latency + f"[export]\ndevice = {json.dumps(device)}\n")

    assert target_device(config(["table:t.csv", "adb:R58M", "host:tflite"])) == "adb:R58M"
    assert target_device(config(["table:t.csv", "host:onnx"])) == "host:tflite"
    assert target_device(config(["host:tflite"], "adb:10.0.0.2:5555")) == "adb:10.0.0.2:5555"


def test_export_stage_failure_carries_the_whole_export_error(tmp_path):
    from pipeline.run import RunError, stage_export
    from pipeline.training import MODEL_FILE

    config = _load(tmp_path, '[export]\nformats = ["onnx"]\n')
    units = [("baseline-mobilenet_v2_0.35", "mobilenet_v2_0.35")]
    with pytest.raises(RunError) as caught:
        stage_export(config, tmp_path / "run", units, log=lambda _: None)
    weights = tmp_path / "run" / "train" / "baseline-mobilenet_v2_0.35-kd" / MODEL_FILE
    assert str(caught.value) == (
        "export stage: exporting baseline-mobilenet_v2_0.35 failed: "
        f"checkpoint {weights} does not exist; check the --weights path"
    )


TINY = """
[data]
path = "{data}"
train_images = 200
val_images = 100
[space]
name = "mnas-imagenet"
input_size = 32
num_classes = 10
[teacher]
spec = "builtin:resnet20_cifar10"
cache_dir = "{tmp}/teacher_logits"
[proxy]
epochs = 1
batch_size = 50
[reward]
target = 0.5
[search]
batch_size = 2
max_candidates = 2
[latency]
backends = ["host:tflite"]
export_cache_dir = "{tmp}/artifacts"
measurement_cache = "{tmp}/measurements.sqlite"
[train]
epochs = 1
train_images = 300
test_images = 200
baseline = "mobilenet_v2_0.35"
[export]
formats = ["tflite", "tflite-int8", "onnx"]
calib_images = 20
"""


def _pearl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


@pytest.mark.slow
def test_pearl_run_end_to_end_then_resume_skips_every_stage(data_dir, tmp_path):
    checkpoint = REPO / "models" / "checkpoints" / "resnet20_cifar10.pt"
    if not checkpoint.is_file():
        pytest.skip(f"{checkpoint} (the shipped teacher) is missing")
    config = tmp_path / "tiny.toml"
    config.write_text(TINY.format(data=data_dir / "cifar10_small.npz", tmp=tmp_path))
    run_dir = tmp_path / "run"
    first = _pearl(
        "run",
        "--config",
        str(config),
        "--out",
        str(run_dir),
        "--json",
        "--no-progress",
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout)
    searched = [label for label in summary["final"] if label.startswith("searched-")]
    assert searched and "baseline-mobilenet_v2_0.35" in summary["final"]
    for label in summary["final"]:
        assert set(summary["final"][label]) == {"kd", "ce"}
        metadata = json.loads((run_dir / "export" / label / "metadata.json").read_text())
        assert set(metadata["files"]) == {"tflite", "tflite-int8", "onnx"}
        assert metadata["latency"], "re-timed latency is recorded in the bundle's metadata"
    latency = json.loads((run_dir / "latency.json").read_text())
    assert {row["spec"] for row in latency["rows"]} == {"host:tflite", "host:onnx"}
    assert all(row["min_ms"] > 0 for row in latency["rows"])
    report = (run_dir / "report.md").read_text()
    assert "Relative gain (AKD eq. 1)" in report and "Pareto front" in report
    for figure in ("search_front.png", "search_progress.png", "final_training.png"):
        assert (run_dir / "figures" / figure).stat().st_size > 10_000
    stamp = (run_dir / "latency.json").stat().st_mtime_ns

    again = _pearl("run", "--resume", str(run_dir), "--json", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "search: done" in again.stderr and "every model is trained, skipped" in again.stderr
    assert (run_dir / "latency.json").stat().st_mtime_ns == stamp
    assert json.loads(again.stdout)["final"] == summary["final"]

    refused = _pearl("run", "--config", str(config), "--out", str(run_dir), cwd=tmp_path)
    assert refused.returncode != 0 and "already holds a run" in refused.stderr


def test_report_of_a_folder_pearl_did_not_write(tmp_path):
    result = _pearl("report", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1 and "neither a search" in result.stderr
