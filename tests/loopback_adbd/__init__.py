"""A loopback ADB device for pearl's tests (a test double: no adbd exists for Linux x86).
See README.md in this folder."""

from .device import Cooling, DeviceScript, Faults, LoopbackDevice

__all__ = [
    "Cooling",
    "DeviceScript",
    "Faults",
    "LoopbackDevice",
    "conv_net_tflite",
    "fake_aarch64_binary",
]


def fake_aarch64_binary(path) -> None:
    """Write a file whose ELF header says aarch64 executable, standing for the user's
    benchmark_model build; the loopback device runs its stand-in for it."""
    import struct
    from pathlib import Path

    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack("<HHI", 2, 183, 1)
    Path(path).write_bytes(header + bytes(64 - len(header)) + b"loopback benchmark_model\n")


def conv_net_tflite(path, width: int, input_size: int):
    """Write a small real .tflite for the loopback's benchmark_model to time: three 3x3 convs
    of `width` channels (ReLU between) on an `input_size` square RGB input, converted with
    litert-torch from torch's current random state.  Returns the path."""
    import warnings
    from pathlib import Path

    import litert_torch
    import torch

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, width, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(width, width, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(width, width, 3, padding=1),
    ).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sample = (torch.randn(1, 3, input_size, input_size),)
        litert_torch.convert(net, sample).export(str(path))
    return Path(path)
