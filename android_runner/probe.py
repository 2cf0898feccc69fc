"""What a phone is: model, SoC, Android version, ABI, cores and their maximum frequencies,
scaling governor and temperatures.  `parse_probe` is a pure function over the text that
`PROBE_SCRIPT` prints; `probe_device` runs it over a connection.

The big cores come from each core's ``cpuinfo_max_freq``, never from a fixed mask:
`select_cores` takes the fastest cluster and, when more threads are asked for than it has cores,
adds the next-fastest cluster, and so on.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from android_runner.connection import join_command

_CPU_ROOT = "/sys/devices/system/cpu"
_THERMAL_ROOT = "/sys/class/thermal"
_SECTION = "@@pearl:"


def _section(name: str) -> str:
    return join_command(["echo", f"{_SECTION}{name}"])


# Fixed command text written here (globs must stay unquoted so the phone's shell expands them).
PROBE_SCRIPT = " ; ".join(
    [
        _section("getprop"),
        "getprop",
        _section("cpuinfo"),
        "cat /proc/cpuinfo 2>/dev/null",
        _section("possible"),
        f"cat {_CPU_ROOT}/possible 2>/dev/null",
        _section("cpufreq"),
        f"grep -H . {_CPU_ROOT}/cpu*/cpufreq/cpuinfo_max_freq "
        f"{_CPU_ROOT}/cpu*/cpufreq/scaling_governor 2>/dev/null",
        _section("thermal"),
        f"grep -H . {_THERMAL_ROOT}/thermal_zone*/type {_THERMAL_ROOT}/thermal_zone*/temp "
        "2>/dev/null",
        _section("end"),
    ]
)
THERMAL_SCRIPT = " ; ".join(
    [
        f"grep -H . {_THERMAL_ROOT}/thermal_zone*/type {_THERMAL_ROOT}/thermal_zone*/temp "
        "2>/dev/null",
        "true",
    ]
)

# Zone types that measure the CPU cluster or SoC die (vendors name them differently).
_CPU_ZONE_RE = re.compile(r"cpu|soc|tsens|little|mid|big|prime|gold|silver|apc|cluster", re.I)


@dataclasses.dataclass(frozen=True)
class CoreInfo:
    cpu: int
    max_freq_khz: int | None
    governor: str | None


@dataclasses.dataclass(frozen=True)
class ThermalZone:
    zone: str  # e.g. "thermal_zone3"
    type: str
    temp_c: float


@dataclasses.dataclass(frozen=True)
class DeviceProbe:
    """Everything pearl knows about a phone.  `fingerprint()` leaves out what changes from
    minute to minute (temperatures)."""

    manufacturer: str
    model: str
    device: str
    board: str
    soc: str
    android_version: str
    sdk: str
    abi: str
    build_fingerprint: str
    cpu_count: int
    cores: tuple[CoreInfo, ...]
    thermal: tuple[ThermalZone, ...] = ()

    @property
    def governors(self) -> tuple[str, ...]:
        return tuple(sorted({c.governor for c in self.cores if c.governor}))

    def big_cores(self, threads: int = 1) -> tuple[int, ...]:
        return select_cores({c.cpu: c.max_freq_khz for c in self.cores}, self.cpu_count, threads)

    def core_mask(self, threads: int = 1) -> str:
        return cpu_mask(self.big_cores(threads))

    def fingerprint(self) -> dict[str, Any]:
        return {
            "kind": "android",
            "manufacturer": self.manufacturer,
            "model": self.model,
            "device": self.device,
            "board": self.board,
            "soc": self.soc,
            "android_version": self.android_version,
            "sdk": self.sdk,
            "abi": self.abi,
            "build": self.build_fingerprint,
            "cpu_count": self.cpu_count,
            "max_freq_khz": [c.max_freq_khz for c in self.cores],
            "governors": list(self.governors),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.fingerprint(),
            "big_cores": list(self.big_cores()),
            "thermal": [dataclasses.asdict(z) for z in self.thermal],
            "max_temp_c": hottest_c(self.thermal),
        }


def parse_getprop(text: str) -> dict[str, str]:
    """``[key]: [value]`` lines of `getprop` (values may be empty)."""
    props = {}
    for match in re.finditer(r"^\[([^\]]+)\]: \[(.*)\]\s*$", text, re.M):
        props[match.group(1)] = match.group(2)
    return props


def parse_grep_h(text: str) -> dict[str, str]:
    """``path:value`` lines of ``grep -H .`` (first line per file)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        path, sep, value = line.partition(":")
        if sep and path.startswith("/") and path not in values:
            values[path] = value.strip()
    return values


def parse_cpu_list(text: str) -> list[int]:
    """``0-3,6`` -> [0, 1, 2, 3, 6] (the format of /sys/devices/system/cpu/possible)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise ValueError(f"not a CPU list: {text.strip()!r}")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def _millidegrees_to_c(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    celsius = number / 1000.0 if abs(number) >= 1000 else number  # most zones: millidegrees
    return celsius if -40.0 <= celsius <= 200.0 else None


def parse_thermal(values: Mapping[str, str]) -> tuple[ThermalZone, ...]:
    zones = []
    for path, value in values.items():
        match = re.fullmatch(rf"{_THERMAL_ROOT}/(thermal_zone\d+)/temp", path)
        if not match:
            continue
        temp = _millidegrees_to_c(value)
        if temp is None:
            continue
        kind = values.get(f"{_THERMAL_ROOT}/{match.group(1)}/type", "")
        zones.append(ThermalZone(match.group(1), kind, temp))
    return tuple(sorted(zones, key=lambda z: int(z.zone.removeprefix("thermal_zone"))))


def hottest_c(zones: Iterable[ThermalZone]) -> float | None:
    """The hottest CPU/SoC zone (all zones if none is recognisably a CPU one); None if none."""
    zones = list(zones)
    cpu_zones = [z for z in zones if _CPU_ZONE_RE.search(z.type)]
    chosen = cpu_zones or zones
    return max((z.temp_c for z in chosen), default=None)


def select_cores(
    max_freq_khz: Mapping[int, int | None], cpu_count: int, threads: int = 1
) -> tuple[int, ...]:
    """The cores to pin to: the fastest cluster (highest ``cpuinfo_max_freq``), then the next
    ones while there are fewer cores than `threads`.  Unknown frequencies: every core."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, not {threads}")
    known = {cpu: freq for cpu, freq in max_freq_khz.items() if freq}
    if not known:
        return tuple(range(max(cpu_count, 1)))
    chosen: list[int] = []
    for freq in sorted(set(known.values()), reverse=True):
        chosen.extend(sorted(cpu for cpu, f in known.items() if f == freq))
        if len(chosen) >= threads:
            break
    return tuple(sorted(chosen))


def cpu_mask(cpus: Iterable[int]) -> str:
    """Hex affinity mask for taskset: cores (7,) -> '80'."""
    mask = 0
    for cpu in cpus:
        mask |= 1 << cpu
    if not mask:
        raise ValueError("an affinity mask needs at least one core")
    return f"{mask:x}"


def _split_sections(text: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith(_SECTION):
            current = line[len(_SECTION) :].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {name: "\n".join(lines) for name, lines in sections.items()}


def parse_probe(text: str) -> DeviceProbe:
    """A `DeviceProbe` from the output of `PROBE_SCRIPT`.  Raises ValueError when the output
    is not a probe (e.g. the shell failed)."""
    sections = _split_sections(text)
    if "getprop" not in sections or "end" not in sections:
        raise ValueError(f"not the output of pearl's device probe: {text[:200]!r}")
    props = parse_getprop(sections["getprop"])
    cpuinfo = sections.get("cpuinfo", "")
    freq_values = parse_grep_h(sections.get("cpufreq", ""))
    cpus: dict[int, dict[str, Any]] = {}
    for path, value in freq_values.items():
        match = re.fullmatch(
            rf"{_CPU_ROOT}/cpu(\d+)/cpufreq/(cpuinfo_max_freq|scaling_governor)", path
        )
        if match:
            entry = cpus.setdefault(int(match.group(1)), {})
            entry[match.group(2)] = value
    try:
        possible = parse_cpu_list(sections.get("possible", ""))
    except ValueError:
        possible = []
    processors = re.findall(r"^processor\s*:\s*(\d+)", cpuinfo, re.M)
    cpu_count = max(len(possible), len(processors), (max(cpus) + 1) if cpus else 0, 1)
    cores = []
    for cpu in range(cpu_count):
        entry = cpus.get(cpu, {})
        freq = entry.get("cpuinfo_max_freq", "")
        cores.append(
            CoreInfo(
                cpu,
                int(freq) if freq.isdigit() and int(freq) > 0 else None,
                entry.get("scaling_governor") or None,
            )
        )
    hardware = ""
    match = re.search(r"^Hardware\s*:\s*(.+)$", cpuinfo, re.M)
    if match:
        hardware = match.group(1).strip()
    abi = props.get("ro.product.cpu.abi", "")
    if not props or not abi:
        raise ValueError(
            "the phone's getprop answered no ro.product.cpu.abi; is this an Android device?"
        )
    soc = (
        " ".join(
            p for p in (props.get("ro.soc.manufacturer", ""), props.get("ro.soc.model", "")) if p
        )
        or props.get("ro.board.platform", "")
        or hardware
    )
    return DeviceProbe(
        manufacturer=props.get("ro.product.manufacturer", ""),
        model=props.get("ro.product.model", ""),
        device=props.get("ro.product.device", ""),
        board=props.get("ro.product.board", "") or props.get("ro.board.platform", ""),
        soc=soc,
        android_version=props.get("ro.build.version.release", ""),
        sdk=props.get("ro.build.version.sdk", ""),
        abi=abi,
        build_fingerprint=props.get("ro.build.fingerprint", ""),
        cpu_count=cpu_count,
        cores=tuple(cores),
        thermal=parse_thermal(parse_grep_h(sections.get("thermal", ""))),
    )


def probe_device(connection) -> DeviceProbe:
    """Run the probe over an `AdbConnection`."""
    result = connection.run_line(PROBE_SCRIPT)
    try:
        return parse_probe(result.output)
    except ValueError as err:
        from android_runner.errors import DeviceCommandError

        raise DeviceCommandError(f"adb:{connection.address}: device probe failed: {err}") from None


def read_temperatures(connection) -> tuple[ThermalZone, ...]:
    return parse_thermal(parse_grep_h(connection.run_line(THERMAL_SCRIPT).output))
