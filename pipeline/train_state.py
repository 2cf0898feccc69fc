"""The resume state of a training run (`pipeline.training`): what is saved after every finished
epoch (``state.pt``: weights, optimiser, RNG, curve, teacher metrics, the run's config) and the
check that a resumed run continues the same training."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from models.teacher_loading import atomic_save
from pipeline.train_settings import TrainingError


def run_config(settings, run_info: dict[str, Any]) -> dict[str, Any]:
    """Settings and run info as plain JSON values (tuples become lists, as when read back)."""
    return json.loads(json.dumps({"settings": asdict(settings), **run_info}))


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a config that must match for a resume to continue the same run."""
    return {
        "settings": config["settings"],
        "data": config.get("data"),
        "teacher": config.get("teacher"),
    }


def restore(state: dict | None, model, optimizer, place) -> tuple[list[dict[str, Any]], Any]:
    """``(curve, teacher metrics)`` of a resumed run, its weights, optimiser and RNG restored
    (the GPU's too when it was saved on one and resumes on one); ``([], None)`` for a new one."""
    if state is None:
        return [], None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    if "cuda_rng" in state and place.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], place.device)
    return json.loads(state["curve"]), json.loads(state["teacher_metrics"])


def save_state(path: Path, model, optimizer, curve, teacher_metrics, config, place) -> None:
    """Everything a resume needs after a finished epoch, in one atomic file."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": torch.get_rng_state(),
        "curve": json.dumps(curve),
        "teacher_metrics": json.dumps(teacher_metrics),
        "config": json.dumps(config),
    }
    if place.device.type == "cuda":  # dropout draws from the GPU's generator there
        state["cuda_rng"] = torch.cuda.get_rng_state(place.device)
    atomic_save(state, path)


def load_state(state_path: Path, config: dict[str, Any], resume: bool) -> dict | None:
    if not state_path.is_file():
        return None
    if not resume:
        raise TrainingError(
            f"{state_path.parent} already holds a training run; pass --resume to continue it "
            "or choose another output"
        )
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise TrainingError(
            f"{state_path}: unreadable training state ({error}); delete the run folder to "
            "start over"
        ) from None
    saved = comparable(json.loads(state["config"]))
    now = comparable(config)
    if saved != now:
        differing = differences(saved, now)
        raise TrainingError(
            f"{state_path.parent} was started with different settings ({differing}); resume "
            "with the same options or choose another output"
        )
    return state


def differences(saved: dict, now: dict, prefix: str = "") -> str:
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = differences(a, b, f"{prefix}{key}.")
            if inner:
                out.append(inner)
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} then, {b!r} now")
    return "; ".join(out)
