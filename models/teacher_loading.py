"""Teachers and trained networks on disk: Pearl checkpoints, torchvision models with local
weights, and ensembles of either.

A *teacher spec* is one of

- a path to a Pearl checkpoint (``.pt`` written by `pipeline.training`);
- ``builtin:NAME``: a checkpoint shipped in ``models/checkpoints/NAME.pt``
  (``builtin:resnet20_cifar10``);
- ``torchvision:NAME=PATH``: torchvision classification model NAME built with ``weights=None``
  and loaded from the local state-dict file PATH (nothing is ever downloaded);
- several of the above separated by commas: an `Ensemble` that averages their logits;
- an ensemble spec file (``*.json``, `models.ensembles`), alone or as one of the parts.

A Pearl checkpoint is a plain dict (loadable with ``torch.load(..., weights_only=True)``)::

    format "pearl-checkpoint", version 1, model (CIFAR ResNet name, baseline name or arch
    string), num_classes, input_size, mean, std (input normalisation, per channel in [0, 1]),
    class_names, state_dict, test_top1, test_top5 (fractions or None), command

The network it holds expects inputs normalised with its ``mean``/``std``; `load_teacher` given
other statistics wraps it so that it accepts inputs normalised those other ways.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.baselines import resolve_arch
from models.files import atomic_write
from models.teachers import CIFAR_RESNET_DEPTHS, Ensemble, cifar_resnet
from models.widths_densenet import named_densenet

CHECKPOINT_FORMAT = "pearl-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINTS_DIR = Path(__file__).resolve().parent / "checkpoints"
BUILTIN_PREFIX = "builtin:"
TORCHVISION_PREFIX = "torchvision:"
CIFAR_RESNETS = tuple(f"resnet{depth}" for depth in CIFAR_RESNET_DEPTHS)
_REQUIRED_KEYS = ("format", "version", "model", "num_classes", "input_size", "state_dict")


class TeacherError(ValueError):
    """A teacher spec or checkpoint is unusable; the message says what and how to fix it."""


# --------------------------------------------------------------------------------------------
# Networks by name


def build_model(name: str, *, num_classes: int, input_size: int, dropout: float = 0.2) -> nn.Module:
    """A freshly initialised network: a CIFAR ResNet (``resnet20`` .. ``resnet110``), a baseline
    name (``mobilenet_v2_0.5``, ...), a DenseNet-BC (``densenet100_12``, `named_densenet`) or
    an arch string of any family."""
    if name in CIFAR_RESNETS:
        return cifar_resnet(name, num_classes)
    try:
        densenet = named_densenet(name, input_size, num_classes)
    except ValueError as error:
        raise TeacherError(str(error)) from None
    if densenet is not None:
        return densenet.build(dropout)
    try:
        arch = resolve_arch(name, input_size, num_classes)
    except ValueError as error:
        raise TeacherError(
            f"{error}; CIFAR ResNets ({', '.join(CIFAR_RESNETS)}) and DenseNet-BCs "
            "(densenet<L>_<k>, e.g. densenet100_12) are also accepted"
        ) from None
    return arch.build(dropout)


# --------------------------------------------------------------------------------------------
# Checkpoint files


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save` to a temporary sibling, then rename over `path`: readers (and a resume
    after a kill) never see a half-written file.  Serialised in memory first, so a full disk is
    an `OSError` ENOSPC naming `path` (torch's own file writer reports a cryptic
    ``RuntimeError``)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, buffer.getvalue())


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    model_name: str,
    num_classes: int,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str] = (),
    test_top1: float | None = None,
    test_top5: float | None = None,
    command: str = "",
) -> Path:
    """Write `model` as a Pearl checkpoint (atomically).  Tensors are stored contiguous on the
    CPU, so the file loads anywhere."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": model_name,
        "num_classes": int(num_classes),
        "input_size": int(input_size),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "class_names": list(class_names),
        "state_dict": state,
        "test_top1": test_top1,
        "test_top5": test_top5,
        "command": command,
    }
    return atomic_save(payload, path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The validated dict of a Pearl checkpoint file (weights not yet loaded into a network)."""
    path = Path(path)
    if not path.is_file():
        raise TeacherError(
            f"{path}: no such checkpoint file; train one with `pearl teacher train` or give "
            f"{BUILTIN_PREFIX}NAME / {TORCHVISION_PREFIX}NAME=PATH"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt zip, pickle with unsafe objects, truncated file, ...
        raise TeacherError(f"{path}: not a readable PyTorch checkpoint ({error})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise TeacherError(
            f"{path}: not a Pearl checkpoint (no format tag {CHECKPOINT_FORMAT!r}); for a bare "
            f"torchvision state dict use {TORCHVISION_PREFIX}NAME={path}"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in payload]
    if missing:
        raise TeacherError(f"{path}: Pearl checkpoint lacks {', '.join(missing)}")
    if payload["version"] > CHECKPOINT_VERSION:
        raise TeacherError(
            f"{path}: checkpoint version {payload['version']} is newer than this Pearl "
            f"understands ({CHECKPOINT_VERSION}); upgrade Pearl"
        )
    return payload


def load_checkpoint(path: str | os.PathLike, *, dropout: float = 0.2) -> tuple[nn.Module, dict]:
    """``(network in eval mode with the checkpoint's weights, checkpoint dict)``."""
    payload = read_checkpoint(path)
    model = build_model(
        payload["model"],
        num_classes=payload["num_classes"],
        input_size=payload["input_size"],
        dropout=dropout,
    )
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        raise TeacherError(
            f"{path}: weights do not fit a {payload['model']!r} network ({error})"
        ) from None
    return model.eval(), payload


# --------------------------------------------------------------------------------------------
# Teacher specs


class Renormalize(nn.Module):
    """Feed a network trained on inputs normalised with (`mean_to`, `std_to`) with inputs
    normalised with (`mean_from`, `std_from`): ``x' = (x * std_from + mean_from - mean_to) /
    std_to`` per channel, then the network."""

    def __init__(self, model: nn.Module, mean_from, std_from, mean_to, std_to):
        super().__init__()
        self.model = model
        std_from, std_to = torch.tensor(std_from), torch.tensor(std_to)
        mean_from, mean_to = torch.tensor(mean_from), torch.tensor(mean_to)
        self.register_buffer("scale", (std_from / std_to).view(1, -1, 1, 1), persistent=False)
        shift = ((mean_from - mean_to) / std_to).view(1, -1, 1, 1)
        self.register_buffer("shift", shift, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.scale + self.shift)


def load_teacher(
    spec: str,
    *,
    num_classes: int,
    input_size: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Module:
    """The teacher described by `spec` (see the module docstring), in eval mode.

    `num_classes` and `input_size` are those of the data it will see; a checkpoint made for
    other ones is an error.  With `mean`/`std` (the normalisation of the inputs it will get), a
    Pearl checkpoint recorded with different statistics is wrapped in `Renormalize`.
    """
    from models.ensembles import agreement_problem, member_specs

    parts = [part.strip() for part in spec.split(",")]
    if not spec.strip() or any(not part for part in parts):
        raise TeacherError(f"empty teacher spec in {spec!r}; {_SPEC_FORMS}")
    names = member_specs(spec)
    loaded = [
        _load_one(name, num_classes=num_classes, input_size=input_size, mean=mean, std=std)
        for name in names
    ]
    checkpoints = [(name, pay) for name, (_, pay) in zip(names, loaded, strict=True) if pay]
    for part, payload in checkpoints[1:]:
        problem = agreement_problem(checkpoints[0][1], payload, normalisation=False)
        if problem:
            raise TeacherError(
                f"ensemble member {part} has {problem} (member {checkpoints[0][0]} sets the "
                "reference); use members trained on the same label set"
            )
    members = [model for model, _ in loaded]
    teacher = members[0] if len(members) == 1 else Ensemble(members)
    return teacher.eval()


_SPEC_FORMS = (
    "a teacher is a Pearl checkpoint path, builtin:NAME, torchvision:NAME=WEIGHTS_FILE, "
    "an ensemble spec file (.json), or a comma-separated list of these (an ensemble)"
)


def _load_one(spec, *, num_classes, input_size, mean, std) -> tuple[nn.Module, dict | None]:
    """``(network, its checkpoint dict or None for a torchvision model)``."""
    if spec.startswith(TORCHVISION_PREFIX):
        return _load_torchvision(spec.removeprefix(TORCHVISION_PREFIX), num_classes), None
    path = resolve_checkpoint_path(spec)
    model, payload = load_checkpoint(path)
    if payload["num_classes"] != num_classes:
        raise TeacherError(
            f"{path}: teacher predicts {payload['num_classes']} classes but the data has "
            f"{num_classes}; use a teacher trained on this label set"
        )
    if payload["input_size"] != input_size:
        raise TeacherError(
            f"{path}: teacher was trained on {payload['input_size']} px images but the data is "
            f"{input_size} px; use a teacher trained at this resolution"
        )
    saved_mean, saved_std = payload.get("mean"), payload.get("std")
    if mean is not None and std is not None and saved_mean and saved_std:
        if not _close(mean, saved_mean) or not _close(std, saved_std):
            model = Renormalize(model, mean, std, saved_mean, saved_std)
    return model, payload


def resolve_checkpoint_path(spec: str) -> Path:
    """The file a checkpoint spec (a path or ``builtin:NAME``) names."""
    if spec.startswith(BUILTIN_PREFIX):
        name = spec.removeprefix(BUILTIN_PREFIX)
        path = CHECKPOINTS_DIR / f"{name}.pt"
        if not path.is_file():
            shipped = sorted(p.stem for p in CHECKPOINTS_DIR.glob("*.pt"))
            raise TeacherError(
                f"no shipped checkpoint {name!r}; shipped: {', '.join(shipped) or 'none'}"
            )
        return path
    return Path(spec).expanduser()


def _close(a: Sequence[float], b: Sequence[float], tolerance: float = 1e-4) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _load_torchvision(rest: str, num_classes: int) -> nn.Module:
    import torchvision

    name, sep, weights = rest.partition("=")
    if not sep or not name or not weights:
        raise TeacherError(
            f"torchvision teacher {TORCHVISION_PREFIX}{rest!r} needs the form "
            f"{TORCHVISION_PREFIX}NAME=WEIGHTS_FILE (a local state dict; nothing is downloaded)"
        )
    names = _torchvision_names()
    if name not in names:
        raise TeacherError(
            f"unknown torchvision classification model {name!r}; choose one of {', '.join(names)}"
        )
    path = Path(weights).expanduser()
    if not path.is_file():
        raise TeacherError(
            f"{path}: no such weights file for torchvision model {name!r}; give a local state "
            "dict saved with torch.save(model.state_dict(), PATH)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise TeacherError(f"{path}: not a readable PyTorch state dict ({error})") from None
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        raise TeacherError(f"{path} is a Pearl checkpoint: give its path without torchvision:")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TeacherError(f"{path}: expected a state dict (parameter name -> tensor)")
    file_classes = _classifier_outputs(state)
    if file_classes is not None and file_classes != num_classes:
        raise TeacherError(
            f"{path}: {name} weights predict {file_classes} classes but the data has "
            f"{num_classes}; fine-tune the model on this label set first"
        )
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise TeacherError(f"{path}: weights do not fit torchvision {name} ({error})") from None
    return model.eval()


def _classifier_outputs(state: dict[str, torch.Tensor]) -> int | None:
    """Output count of the last 2-D weight (the classifier of every torchvision classifier)."""
    matrices = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return int(matrices[-1].shape[0]) if matrices else None


def describe_teacher(spec: str) -> str:
    """One line per member for reports: what the teacher is and its recorded test accuracy."""
    from models.ensembles import member_specs

    lines = []
    for part in member_specs(spec):
        if part.startswith(TORCHVISION_PREFIX):
            name, _, weights = part.removeprefix(TORCHVISION_PREFIX).partition("=")
            lines.append(f"torchvision {name} with weights {weights}")
            continue
        path = resolve_checkpoint_path(part)
        payload = read_checkpoint(path)
        top1 = payload.get("test_top1")
        accuracy = f", test top-1 {100 * top1:.2f}%" if top1 is not None else ""
        lines.append(
            f"{payload['model']} ({payload['num_classes']} classes, {payload['input_size']} px"
            f"{accuracy}) from {path}"
        )
    if len(lines) > 1:
        return f"ensemble of {len(lines)} (logit average):\n" + "\n".join(
            f"  - {line}" for line in lines
        )
    return lines[0]
