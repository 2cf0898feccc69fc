"""`models.export.run_export`: the export library call behind `pearl export` and `pearl run`,
on real CIFAR images, in this process and in a worker process, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from export_helpers import FULL_BUNDLE, TINY, bundle_files, save_tiny_checkpoint

from models.arch import Arch
from models.baselines import baseline
from models.builder import build
from models.export import DEFAULT_FORMATS, ExportError, ExportRequest, ExportWorker, run_export
from models.normalisation import CIFAR10_MEAN, CIFAR10_STD
from pipeline.data import load_dataset


@pytest.fixture(scope="module")
def cifar_npz(data_dir) -> Path:
    path = data_dir / "cifar10_small.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found; set PEARL_DATA to the folder holding cifar10_small.npz")
    return path


def test_request_resolves_its_arch_and_checks_its_fields(tmp_path):
    request = ExportRequest("mobilenet_v2_0.35", tmp_path, input_size=32, num_classes=10)
    assert isinstance(request.arch, Arch) and request.arch.input_size == 32
    assert request.name == "mobilenet_v2_0.35" and request.out_dir == tmp_path
    assert request.format_names == ("tflite", "tflite-fp16", "onnx")  # no int8 without data
    with_data = ExportRequest(TINY, str(tmp_path), data_path="data.npz", formats=["onnx", "tflite"])
    assert with_data.name is None and with_data.data_path == Path("data.npz")
    assert with_data.format_names == ("tflite", "onnx")
    assert ExportRequest(TINY, tmp_path, data_path="data.npz").format_names == DEFAULT_FORMATS
    with pytest.raises(ExportError, match="neither a baseline name") as caught:
        ExportRequest("bogus", tmp_path)
    assert caught.value.field == "arch"
    with pytest.raises(ExportError, match="tflite-int8 needs calibration images"):
        ExportRequest(TINY, tmp_path, formats=("tflite-int8",))
    with pytest.raises(ExportError, match="--accuracy needs --calib"):
        ExportRequest(TINY, tmp_path, accuracy=True)


# a tiny untrained-looking network's int8 file may disagree with fp32 on a few of 16 images
@pytest.mark.filterwarnings("ignore::models.export.bundle.ExportWarning")
def test_run_export_from_a_checkpoint_on_cifar_images(cifar_npz, tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "bundle"
    request = ExportRequest(
        TINY,
        out,
        weights=checkpoint,
        data_path=cifar_npz,
        calib_images=50,
        parity_images=16,
        accuracy=True,
    )
    steps, notes = [], []
    meta = run_export(request, load_data=load_dataset, on_step=steps.append, on_note=notes.append)
    assert bundle_files(out) == FULL_BUNDLE
    assert json.loads((out / "metadata.json").read_text()) == meta
    assert meta["weights"]["trained"] and meta["weights"]["source"] == str(checkpoint.resolve())
    assert meta["calibration"]["images"] == 50
    assert meta["calibration"]["source"] == f"{cifar_npz} train split, 50 images"
    assert meta["parity_images"] == f"16 images, {cifar_npz} test split (first 16)"
    assert meta["files"]["tflite"]["parity"]["max_rel"] <= 1e-4
    assert meta["accuracy"]["images"] == 1000  # the whole test split of cifar10_small
    assert set(meta["accuracy"]["top1"]) == {"pytorch", *DEFAULT_FORMATS}
    assert (out / "labels.txt").read_text().split("\n")[:2] == ["airplane", "automobile"]
    # the checkpoint has no mean/std: CIFAR-10's is assumed for a 32 px input, and said so
    assert meta["input"]["mean"] == list(CIFAR10_MEAN) and meta["input"]["std"] == list(CIFAR10_STD)
    assert notes == [
        "normalising inputs with CIFAR-10 mean/std (set --mean/--std to match training)"
    ]
    assert steps[-1] == f"writing {out}"


def test_weights_of_another_arch_are_an_error_naming_the_file(tmp_path):
    other = tmp_path / "other.pt"
    torch.save(build(baseline("mobilenet_v2_0.35", 32, 10)).state_dict(), other)
    request = ExportRequest(TINY, tmp_path / "out", weights=other, formats=("onnx",))
    with pytest.raises(ExportError, match="does not fit this architecture") as caught:
        run_export(request)
    assert str(other) in str(caught.value) and "stem.0.weight" in str(caught.value)
    assert caught.value.field == "weights"
    assert not (tmp_path / "out").exists()


def test_a_missing_calibration_file_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere.npz"
    request = ExportRequest(TINY, tmp_path / "out", data_path=missing, formats=("onnx",))
    with pytest.raises(ExportError, match="does not exist") as caught:
        run_export(request, load_data=load_dataset)
    assert str(missing) in str(caught.value) and caught.value.field == "data_path"
    with pytest.raises(ExportError, match="no load_data function") as caught:
        run_export(request)
    assert caught.value.field == "data_path"
    assert not (tmp_path / "out").exists()


def test_run_export_in_a_worker_passes_notes_and_whole_errors_back(tmp_path):
    """What `pearl run` does: the request and the loader go to a fresh process; notes, the
    metadata and errors (with their field) come back."""
    notes = []
    missing = tmp_path / "nowhere.npz"
    with ExportWorker(warm_up=False) as worker:
        meta = worker.run_export(
            ExportRequest(TINY, tmp_path / "a", formats=("onnx",)), on_note=notes.append
        )
        with pytest.raises(ExportError, match="does not exist") as caught:
            worker.run_export(
                ExportRequest(TINY, tmp_path / "b", data_path=missing, formats=("onnx",)),
                load_data=load_dataset,
            )
    assert set(meta["files"]) == {"onnx"} and (tmp_path / "a" / "model.onnx").is_file()
    assert any("synthetic images" in note for note in notes)
    assert str(missing) in str(caught.value) and caught.value.field == "data_path"
