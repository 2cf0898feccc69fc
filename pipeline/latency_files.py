"""The files the search times: written directly (`device_bench.direct_files`, ~50 ms) instead
of converted with litert-torch (~7 s), with a guard that keeps them honest.

`GuardedExporter` is an ``exporter(arch, fmt) -> path`` for `LatencyChain`.  It writes TFLite
files directly; every `check_every`-th new arch (the first included) and every arch passed to
`verify` (the search's winners and Pareto front) is also converted by the `converter` (the
litert-torch path) and the two graphs are compared op by op (ops, tensor shapes and types,
options).  A mismatch is logged loudly (``DIRECT FILE MISMATCH``) and that arch uses the
converted file from then on.  When the two agree, the chain times both files side by side once
(`pending_pair`) and records the ratio.  Archs the writer does not cover (hard-swish) and
formats it does not write (ONNX) go to the converter.  Shipped files are never direct: the
export of winners (`models.export`) always converts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

LOUD = "DIRECT FILE MISMATCH"


@dataclass
class GuardStats:
    direct: int = 0  # files written directly
    converted: int = 0  # files from the converter (not covered, mismatched, or checked)
    checked: int = 0  # archs compared op by op
    mismatched: list[str] = field(default_factory=list)  # arch keys that fell back
    ratios: list[float] = field(default_factory=list)  # direct / converted timing, side by side


class GuardedExporter:
    def __init__(
        self,
        cache_dir: str | Path,
        converter: Callable[[object, str], Path],
        *,
        check_every: int = 20,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if check_every < 1:
            raise ValueError(f"check_every must be >= 1 (1: convert every arch), got {check_every}")
        self.cache_dir = Path(cache_dir).expanduser()
        self.converter = converter
        self.check_every = check_every
        self.log = log or (lambda message: None)
        self.stats = GuardStats()
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}  # arch key -> order in which it was first asked for
        self._files: dict[tuple[str, str], Path] = {}  # (arch key, fmt) -> file to time
        self._fallback: set[str] = set()  # arch keys whose direct file did not match
        self._checked: set[tuple[str, str]] = set()
        self._pairs: dict[tuple[str, str], Path] = {}  # matched, not yet timed side by side
        self._file_locks: dict[tuple[str, str], threading.Lock] = {}  # one maker per file

    def __call__(self, arch, fmt: str) -> Path:
        from device_bench.direct_files import covers

        key = arch.key()
        with self._file_lock(key, fmt):  # the background export and the timing ask at once
            with self._lock:
                if (key, fmt) in self._files:
                    return self._files[key, fmt]
                order = self._seen.setdefault(key, len(self._seen))
                use_converter = key in self._fallback or not covers(arch, fmt)
            if use_converter:
                return self._remember(key, fmt, self._convert(arch, fmt))
            if order % self.check_every == 0:
                return self._check(arch, fmt)
            return self._remember(key, fmt, self._write(arch, fmt))

    def verify(self, archs: Iterable, fmt: str) -> list[str]:
        """Compare the direct `fmt` files of `archs` with conversions (the search's winners);
        returns the keys of those that did not match (they now use the converted file and
        must be timed again)."""
        from device_bench.direct_files import covers

        fell_back = []
        for arch in archs:
            key = arch.key()
            if not covers(arch, fmt):
                continue
            with self._file_lock(key, fmt):
                with self._lock:
                    done = (key, fmt) in self._checked or key in self._fallback
                if not done:
                    self._check(arch, fmt)
            with self._lock:
                if not done and key in self._fallback:
                    fell_back.append(key)
        return fell_back

    def pending_pair(self, arch, fmt: str) -> Path | None:
        """The converted file to time beside the direct one, once per checked arch."""
        with self._lock:
            return self._pairs.pop((arch.key(), fmt), None)

    def record_ratio(self, arch, direct_ms: float, converted_ms: float) -> None:
        ratio = direct_ms / converted_ms
        with self._lock:
            self.stats.ratios.append(ratio)
        self.log(
            f"direct file check {arch.key()}: timed side by side, direct {direct_ms:.3f} ms, "
            f"converted {converted_ms:.3f} ms (ratio {ratio:.3f})"
        )

    def summary(self) -> str:
        """One line: how many files were written directly, converted, checked, mismatched."""
        import statistics

        with self._lock:
            stats = self.stats
            ratios = (
                f", direct/converted timing ratio median {statistics.median(stats.ratios):.3f} "
                f"over {len(stats.ratios)}"
                if stats.ratios
                else ""
            )
            return (
                f"latency files: {stats.direct} written directly, {stats.converted} converted, "
                f"{stats.checked} checked op by op, {len(stats.mismatched)} mismatched"
                + (f" ({', '.join(stats.mismatched)})" if stats.mismatched else "")
                + ratios
            )

    # -- pieces ----------------------------------------------------------------------------

    def _file_lock(self, key: str, fmt: str) -> threading.Lock:
        with self._lock:
            return self._file_locks.setdefault((key, fmt), threading.Lock())

    def _write(self, arch, fmt: str) -> Path:
        from device_bench.direct_files import write_direct

        path = write_direct(self.cache_dir, arch, fmt)
        with self._lock:
            self.stats.direct += 1
        return path

    def _convert(self, arch, fmt: str) -> Path:
        path = Path(self.converter(arch, fmt))
        with self._lock:
            self.stats.converted += 1
        return path

    def _remember(self, key: str, fmt: str, path: Path) -> Path:
        with self._lock:
            self._files[key, fmt] = path
        return path

    def _check(self, arch, fmt: str) -> Path:
        """Write directly and convert; the direct file when the graphs agree, else (loudly)
        the converted one."""
        from device_bench.direct_files import graph_differences

        key = arch.key()
        direct = self._write(arch, fmt)
        converted = self._convert(arch, fmt)
        differences = graph_differences(direct.read_bytes(), converted.read_bytes())
        with self._lock:
            self.stats.checked += 1
            self._checked.add((key, fmt))
            if differences:
                self._fallback.add(key)
                self.stats.mismatched.append(key)
                self._files[key, fmt] = converted
            else:
                self._pairs[key, fmt] = converted
                self._files[key, fmt] = direct
        if differences:
            self.log(
                f"{LOUD}: {arch.encode()} ({fmt}): the direct file is not the converter's graph; "
                f"this arch is timed from the litert-torch file from now on. "
                + "; ".join(differences)
                + ". Please report the arch string (device_bench/layer_writer.py)."
            )
            return converted
        return direct
