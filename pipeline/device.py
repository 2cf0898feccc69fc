"""Where training runs: the config's ``[compute]`` section (`pipeline.config.ComputeConfig`)
resolved to a torch device and how to use it (DESIGN.md "Search methods and where they run").

Every trainer (proxy training, teacher and final training, teacher logits, evaluation) asks
`placement(compute)` once and follows the `Placement` it gets:

* ``cpu``: fp32, nothing global changed (results are bit-identical to Pearl before devices).
* ``cuda`` / ``cuda:N``: mixed precision (bf16 where the GPU has it natively, else fp16 with a
  `torch.amp.GradScaler`) unless ``amp = false``; ``cudnn.benchmark`` unless ``deterministic``,
  which instead turns on ``torch.use_deterministic_algorithms`` and ``cudnn.deterministic``
  (cuBLAS then needs ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in the environment; it is set here when
  absent, which takes effect if nothing in the process used cuBLAS before).
* ``mps`` (Apple GPUs): fp32.
* ``auto``: cuda, then mps, then cpu.

A device this machine cannot give is a `DeviceError` raised at once, naming what was asked, what
is present and the fix.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.config import ComputeConfig


class DeviceError(Exception):
    """The configured device is not on this machine.  Deliberately not a ValueError or
    RuntimeError: it is no fault of a candidate, so an executor must not store it as one."""


def present_devices() -> list[str]:
    """What this machine offers, e.g. ``["cpu", "cuda:0 (NVIDIA H200)", "mps"]``."""
    present = ["cpu"]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            present.append(f"cuda:{index} ({torch.cuda.get_device_name(index)})")
    if _mps_available():
        present.append("mps")
    return present


def resolve_device(spec: str) -> torch.device:
    """``auto | cpu | cuda | cuda:N | mps`` -> the torch device, or `DeviceError` when this
    machine does not have it (checked here, never later as a hang or a failed candidate)."""
    kind, _, index_text = spec.partition(":")
    if spec == "auto":
        if torch.cuda.is_available():
            return resolve_device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise _missing(spec, "this machine has no Apple GPU (MPS) that torch can use")
        return torch.device("mps")
    if kind != "cuda" or (index_text and not index_text.isdigit()):
        raise DeviceError(
            f"device {spec!r} is not one of auto, cpu, cuda, cuda:N, mps; e.g. --device cuda:0"
        )
    if not torch.cuda.is_available():
        why = "torch was built without CUDA" if torch.version.cuda is None else "no GPU visible"
        raise _missing(spec, f"this machine has no CUDA GPU that torch can use ({why})")
    count = torch.cuda.device_count()
    index = int(index_text) if index_text else torch.cuda.current_device()
    if index >= count:
        raise _missing(spec, f"this machine has {count} CUDA device{'s' * (count != 1)}")
    return torch.device("cuda", index)


def _missing(spec: str, what: str) -> DeviceError:
    return DeviceError(
        f"device {spec!r}: {what}; present: {', '.join(present_devices())}. Use --device cpu "
        "(or auto), or set device in the config's [compute] section"
    )


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


@dataclass(frozen=True)
class Placement:
    """A resolved ``[compute]``: the device and the mixed-precision dtype (None: fp32)."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    deterministic: bool = False

    @property
    def on_cpu(self) -> bool:
        return self.device.type == "cpu"

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for forward passes (a no-op without AMP).  Compute losses outside
        it, on ``logits.float()``."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A fresh loss scaler for one training run when the AMP dtype is fp16, else None."""
        if self.amp_dtype != torch.float16:
            return None
        return torch.amp.GradScaler(self.device.type)

    def fork_rng(self) -> contextlib.AbstractContextManager:
        """`torch.random.fork_rng` for the CPU and this device (on the CPU exactly as before)."""
        if self.device.type == "cuda":
            return torch.random.fork_rng(devices=[self.device.index])
        if self.device.type == "mps":
            return torch.random.fork_rng(device_type="mps")
        return torch.random.fork_rng()

    def amp_name(self) -> str | None:
        """``"bfloat16"``, ``"float16"`` or None (fp32)."""
        return None if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")

    def describe(self) -> dict[str, Any]:
        """What a run records about where it trained (metrics.json ``"device"``)."""
        name = "cpu"
        if self.device.type == "cuda":
            name = torch.cuda.get_device_name(self.device)
        elif self.device.type == "mps":
            name = "Apple GPU (MPS)"
        return {
            "device": str(self.device),
            "name": name,
            "amp": self.amp_name(),
            "deterministic": self.deterministic,
        }


def placement(compute: ComputeConfig | Placement | None = None) -> Placement:
    """Resolve `compute` (default: ``ComputeConfig()``, i.e. auto) and set the process-wide
    kernel options it asks for on a CUDA device (none on CPU or MPS).  A `Placement` is used as
    given (tests and benchmarks use one to force a dtype, e.g. fp16 on a bf16 GPU)."""
    if isinstance(compute, Placement):
        return compute
    compute = compute or ComputeConfig()
    device = resolve_device(compute.device)
    if device.type != "cuda":
        return Placement(device)
    _configure_cuda_kernels(compute.deterministic)
    amp_dtype = None
    if compute.amp:
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        amp_dtype = torch.bfloat16 if native_bf16 else torch.float16
    return Placement(device, amp_dtype, compute.deterministic)


def _configure_cuda_kernels(deterministic: bool) -> None:
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def backward_and_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> None:
    """One optimiser step on `loss`, through the fp16 loss `scaler` when there is one."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
