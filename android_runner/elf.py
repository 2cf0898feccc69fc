"""Read an executable's ELF header to tell which Android ABI it was built for (pure)."""

from __future__ import annotations

import struct

# e_machine -> (Android ABI for 64-bit, for 32-bit)
_MACHINES = {183: "arm64-v8a", 40: "armeabi-v7a", 62: "x86_64", 3: "x86"}


def elf_abi(header: bytes) -> str | None:
    """The Android ABI of an ELF file from its first 20 bytes, or None if it is not ELF."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    endian = "<" if header[5] == 1 else ">"
    (machine,) = struct.unpack(f"{endian}H", header[18:20])
    return _MACHINES.get(machine, f"e_machine {machine}")


def check_binary_for_abi(header: bytes, abi: str, name: str) -> None:
    """Raise ValueError when `header` is not an executable the phone (`abi`) can run."""
    found = elf_abi(header)
    if found is None:
        raise ValueError(
            f"{name} is not an ELF executable: --benchmark-model must be TFLite's "
            "benchmark_model binary built for Android (e.g. android_aarch64_benchmark_model)"
        )
    compatible = {abi, *({"armeabi-v7a"} if abi == "arm64-v8a" else set())}
    compatible |= {"x86"} if abi == "x86_64" else set()
    if found not in compatible:
        raise ValueError(
            f"{name} is built for {found} but the phone's ABI is {abi}: use the benchmark_model "
            f"build for {abi}"
        )
