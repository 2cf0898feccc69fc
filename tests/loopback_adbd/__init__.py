"""A loopback ADB device for pearl's tests (a test double: no adbd exists for Linux x86).
See README.md in this folder."""

from .device import Cooling, DeviceScript, Faults, LoopbackDevice

__all__ = ["Cooling", "DeviceScript", "Faults", "LoopbackDevice", "fake_aarch64_binary"]


def fake_aarch64_binary(path) -> None:
    """Write a file whose ELF header says aarch64 executable, standing for the user's
    benchmark_model build; the loopback device runs its stand-in for it."""
    import struct
    from pathlib import Path

    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack("<HHI", 2, 183, 1)
    Path(path).write_bytes(header + bytes(64 - len(header)) + b"loopback benchmark_model\n")
