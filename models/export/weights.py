"""Read a checkpoint and load it into a built network, with errors that say what is wrong.

Accepted checkpoint layouts (all read with ``torch.load(weights_only=True)``):

* a bare state dict (``torch.save(model.state_dict(), path)``);
* a dict with the state dict under ``"state_dict"`` or ``"model"``, optionally with ``"arch"``
  (the arch string it was trained as), ``"mean"``/``"std"`` (input normalisation) and
  ``"class_names"``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.export.common import ExportError


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    state_dict: dict[str, torch.Tensor]
    arch: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: tuple[str, ...] | None = None


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"checkpoint {path} does not exist; check the --weights path")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a bad file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(
            f"checkpoint {path} is not a readable PyTorch weights file ({reason}); "
            "save one with torch.save(model.state_dict(), path)"
        ) from None
    extras: dict = {}
    if isinstance(data, Mapping) and not _is_state_dict(data):
        inner = next((data[k] for k in ("state_dict", "model") if k in data), None)
        if not (isinstance(inner, Mapping) and _is_state_dict(inner)):
            raise ExportError(
                f"checkpoint {path} holds a dict with keys {sorted(map(str, data))[:8]} but no "
                "state dict (expected tensors, or a 'state_dict' or 'model' entry of tensors)"
            )
        extras = {k: data[k] for k in ("arch", "mean", "std", "class_names") if k in data}
        data = inner
    if not (isinstance(data, Mapping) and _is_state_dict(data)):
        raise ExportError(
            f"checkpoint {path} holds a {type(data).__name__}, not a state dict of tensors"
        )
    return Checkpoint(
        path=path,
        state_dict=dict(data),
        arch=str(extras["arch"]) if "arch" in extras else None,
        mean=_floats(extras.get("mean")),
        std=_floats(extras.get("std")),
        class_names=tuple(map(str, extras["class_names"])) if "class_names" in extras else None,
    )


def _is_state_dict(data: Mapping) -> bool:
    return bool(data) and all(isinstance(v, torch.Tensor) for v in data.values())


def _floats(value) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    return tuple(float(v) for v in value)


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load `state_dict` into `model` exactly (same names, same shapes), or raise `ExportError`
    naming the first mismatches.  A ``module.`` prefix (DataParallel) is accepted."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es), first: {'; '.join(mismatched[:3])}")
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing, first: {', '.join(missing[:3])}")
    if unexpected:
        problems.append(
            f"{len(unexpected)} unexpected tensor(s), first: {', '.join(unexpected[:3])}"
        )
    if problems:
        raise ExportError(
            f"checkpoint {source} does not fit this architecture ({'; '.join(problems)}); "
            "it was probably trained for another arch: pass the arch string it was trained with"
        )
    model.load_state_dict(state_dict)
