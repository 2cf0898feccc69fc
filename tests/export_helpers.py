"""Shared by the export tests: a tiny network, a checkpoint of it, and the files of a bundle
with every format."""

from __future__ import annotations

from pathlib import Path

import torch

from models.arch import Arch
from models.builder import build

TINY = (
    "in32_cls10|stem_k3_s1_c8_re|ds_k3_s2_se25_id_c16_n1_re|mb3_k3_s2_se0_id_c24_n2_r6|head_c32_re"
)
FULL_BUNDLE = [
    "labels.txt",
    "metadata.json",
    "model.onnx",
    "model.tflite",
    "model_fp16.tflite",
    "model_int8.tflite",
]


def bundle_files(out: Path) -> list[str]:
    """The names in a bundle directory, sorted (compare with `FULL_BUNDLE`)."""
    return sorted(p.name for p in out.iterdir())


def save_tiny_checkpoint(path: Path) -> Path:
    """A seeded checkpoint of TINY that names its arch, its classifier scaled so that logits are
    O(1) (initial weights give near-tied logits, where top-1 agreement means nothing)."""
    torch.manual_seed(0)
    model = build(Arch.decode(TINY))
    with torch.no_grad():
        model.classifier[-1].weight.mul_(100.0)
    torch.save({"state_dict": model.state_dict(), "arch": TINY}, path)
    return path


def export_with_parity(text: str, model, folder: Path, data: Path, formats=("tflite",)) -> dict:
    """Export `model` (the network of arch string `text`) with its weights to ``folder/bundle``,
    with parity measured on 16 real images of `data`; the bundle's metadata."""
    from models.export import ExportRequest, run_export
    from pipeline.data import load_dataset

    torch.save({"state_dict": model.state_dict(), "arch": text}, folder / "m.pt")
    request = ExportRequest(
        text,
        folder / "bundle",
        weights=folder / "m.pt",
        data_path=data,
        formats=tuple(formats),
        parity_images=16,
        num_threads=1,
    )
    return run_export(request, load_data=load_dataset)
