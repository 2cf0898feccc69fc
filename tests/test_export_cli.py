"""`pearl export` end to end on the CIFAR data, and its error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from export_helpers import FULL_BUNDLE, TINY, bundle_files, save_tiny_checkpoint

from models.baselines import baseline
from models.builder import build
from pipeline.cli_export import export_command


def run(*args: str):
    return CliRunner().invoke(export_command, list(args))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def test_export_writes_a_checked_bundle(checkpoint, data_dir, tmp_path):
    out = tmp_path / "bundle"
    result = run(
        TINY,
        "--weights",
        str(checkpoint),
        "--calib",
        str(data_dir / "cifar10_small.npz"),
        "--calib-images",
        "100",
        "--parity-images",
        "16",
        "-o",
        str(out),
        "--json",
    )
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert bundle_files(out) == FULL_BUNDLE
    assert meta["weights"]["trained"] and len(meta["weights"]["sha256"]) == 64
    assert "untrained" not in result.stderr
    assert meta["calibration"]["images"] == 100
    assert "cifar10_small.npz test split" in meta["parity_images"]
    assert meta["files"]["tflite"]["parity"]["max_rel"] <= 1e-4
    assert meta["files"]["tflite"]["delegation"]["fully_delegated"]


def test_summary_for_a_baseline_without_data(tmp_path):
    result = run("mobilenet_v2_0.35", "--input", "32", "--classes", "10", "-o", str(tmp_path / "b"))
    assert result.exit_code == 0, result.output
    assert "model.onnx" in result.stdout and "max rel err" in result.stdout
    assert "synthetic images" in result.stderr and "skipping tflite-int8" in result.stderr
    assert "no --weights: the files hold untrained initialisation weights" in result.stderr
    meta = json.loads((tmp_path / "b" / "metadata.json").read_text())
    assert meta["name"] == "mobilenet_v2_0.35" and meta["labels"] is None
    assert set(meta["files"]) == {"tflite", "tflite-fp16", "onnx"}
    assert meta["weights"]["trained"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--formats", "tflite,coreml"], "unknown format 'coreml'"),
        (["--formats", "tflite-int8"], "tflite-int8 needs calibration images: pass --calib"),
        (["--weights", "/nonexistent/w.pt"], "checkpoint /nonexistent/w.pt does not exist"),
        (["--calib", "/nonexistent/data.npz", "--formats", "onnx"], "does not exist"),
        (["--accuracy", "--formats", "onnx"], "--accuracy needs --calib"),
        (["--mean", "0.5,0.5", "--formats", "onnx"], "three comma-separated numbers"),
    ],
)
def test_bad_arguments_fail_clearly(args, message, tmp_path):
    result = run(TINY, "-o", str(tmp_path / "out"), *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_bad_checkpoints_fail_clearly(checkpoint, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint")
    result = run(TINY, "--weights", str(corrupt), "-o", str(tmp_path / "a"))
    assert result.exit_code == 2 and "not a readable PyTorch weights file" in result.output

    # the checkpoint says which arch it was trained for
    result = run(
        "mobilenet_v2_0.35",
        "--input",
        "32",
        "--classes",
        "10",
        "--weights",
        str(checkpoint),
        "-o",
        str(tmp_path / "b"),
    )
    assert result.exit_code == 2 and "was saved for arch" in result.output

    # a bare state dict of another arch: the mismatching tensor is named
    other = tmp_path / "other.pt"
    torch.save(build(baseline("mobilenet_v2_0.35", 32, 10)).state_dict(), other)
    result = run(TINY, "--weights", str(other), "-o", str(tmp_path / "c"))
    assert result.exit_code == 2, result.output
    assert "shape mismatch" in result.output and "stem.0.weight" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.pt", "other.pt"]


def test_output_problems_fail_clearly_and_leave_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run(TINY, "--formats", "onnx", "-o", str(blocker / "out"))
    assert result.exit_code == 1 and "cannot write the bundle under" in result.output
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "old.txt").write_text("keep me")
    result = run(TINY, "--formats", "onnx", "-o", str(existing))
    assert result.exit_code == 1 and "pass --force" in result.output
    assert [p.name for p in existing.iterdir()] == ["old.txt"]
    result = run(TINY, "--formats", "onnx", "-o", str(existing), "--force")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in existing.iterdir()) == ["metadata.json", "model.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing", "file"]


def test_summary_does_not_judge_int8_agreement_of_untrained_weights(capsys):
    from pipeline.cli_export import _summary

    int8 = {
        "path": "model_int8.tflite",
        "bytes": 10**6,
        "parity": {"rtol": None, "max_rel": 0.3, "top1_agreement": 0.0},
    }
    document = {
        "arch_key": "k",
        "macs": 1e6,
        "params": 1e3,
        "files": {"tflite-int8": int8},
        "weights": {"trained": False},
    }
    _summary(Path("out"), document)
    assert "untrained: not judged" in capsys.readouterr().out
    document["weights"]["trained"] = True
    _summary(Path("out"), document)
    assert "top-1 agreement 0.0%" in capsys.readouterr().out
