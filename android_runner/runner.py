"""A benchmarking session on one phone: connect, probe, push `benchmark_model` and models
(skipping files already there with the same hash), run the tool pinned to the big cores,
wait for the phone to cool, parse the output, clean up.

Files go to a private folder, ``/data/local/tmp/pearl`` (the binary) and
``/data/local/tmp/pearl/models`` (models, named by content hash; removed by `cleanup`).
Whether a file is already there is decided by a hash computed *on the phone*: ``sha256sum``
(toybox, Android 8+), falling back to ``md5sum`` where sha256sum is missing.  A push cut short
by a dropped connection leaves a file whose hash differs, so it is pushed again next time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from android_runner.benchmark_output import (
    BenchmarkOutputError,
    BenchmarkResult,
    parse_benchmark_output,
)
from android_runner.connection import AdbConnection, ConnectionSettings, DeviceAddress
from android_runner.elf import check_binary_for_abi
from android_runner.errors import BenchmarkToolError, DeviceCommandError
from android_runner.op_profile import OpProfile, OpProfileError, parse_op_profile
from android_runner.probe import DeviceProbe, hottest_c, probe_device, read_temperatures

REMOTE_DIR = "/data/local/tmp/pearl"
BINARY_NAME = "benchmark_model"
RUN_TIMEOUT_S = 300.0  # default limit on one benchmark_model run
OP_PROFILE_FLAGS = ("--enable_op_profiling=true", "--use_xnnpack=false")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """benchmark_model's flags for one invocation: threads (pinned to as many big cores), the
    GPU delegate, warm-up runs / seconds, and timed runs / seconds (it runs at least `num_runs`
    and `min_secs`, stopping at `max_secs`)."""

    threads: int = 1
    use_gpu: bool = False
    warmup_runs: int = 5
    warmup_min_secs: float = 0.5
    num_runs: int = 50
    min_secs: float = 1.0
    max_secs: float = 60.0

    def __post_init__(self) -> None:
        for name in ("threads", "num_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"RunOptions.{name} must be >= 1, not {getattr(self, name)}")
        if self.warmup_runs < 0 or min(self.min_secs, self.warmup_min_secs) < 0:
            raise ValueError("RunOptions: warmup_runs and the *_secs values must be >= 0")
        if self.max_secs <= 0:
            raise ValueError("RunOptions.max_secs must be > 0")

    def flags(self, graph: str) -> list[str]:
        flags = [
            f"--graph={graph}",
            f"--num_threads={self.threads}",
            f"--warmup_runs={self.warmup_runs}",
            f"--warmup_min_secs={self.warmup_min_secs:g}",
            f"--num_runs={self.num_runs}",
            f"--min_secs={self.min_secs:g}",
            f"--max_secs={self.max_secs:g}",
        ]
        if self.use_gpu:
            flags.append("--use_gpu=true")
        return flags


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _signal_name(code: int) -> str:
    if code > 128:
        try:
            return f" (killed by {signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return ""


def _tail(text: str, lines: int = 6) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[:600] or "(no output)"


def interpret_run(output: str, exit_code: int, *, binary: str, abi: str) -> BenchmarkResult:
    """The parsed result of one run, or a `BenchmarkToolError` that says what happened."""
    if exit_code in (126, 127):
        raise BenchmarkToolError(
            f"benchmark_model could not be started on the phone (exit {exit_code}: "
            f"{_tail(output, 2)}): check that {binary} is an executable build for {abi}"
        )
    try:
        result = parse_benchmark_output(output)
    except BenchmarkOutputError as err:
        if exit_code != 0:
            raise BenchmarkToolError(
                f"benchmark_model exited with status {exit_code}{_signal_name(exit_code)}: "
                f"{err}. Last output: {_tail(output)}"
            ) from None
        raise BenchmarkToolError(
            f"benchmark_model output could not be used: {err}. Last output: {_tail(output)}"
        ) from None
    if exit_code != 0:
        raise BenchmarkToolError(
            f"benchmark_model printed timings but exited with status {exit_code}"
            f"{_signal_name(exit_code)}; not trusting them. Last output: {_tail(output)}"
        )
    return result


class PhoneSession:
    """Everything pearl does on one phone.  Not thread-safe: one job at a time per phone."""

    def __init__(
        self,
        address: DeviceAddress | str,
        benchmark_binary: str | Path,
        *,
        key_path: str | Path | None = None,
        connection_settings: ConnectionSettings | None = None,
        remote_dir: str = REMOTE_DIR,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.connection = AdbConnection(address, key_path=key_path, settings=connection_settings)
        self.address = self.connection.address
        self.binary = Path(benchmark_binary)
        self.remote_dir = remote_dir
        self.models_dir = posixpath.join(remote_dir, "models")
        self.log = log or (lambda message: None)
        self.probe: DeviceProbe | None = None
        self._hash_tool: str | None = None
        self._binary_ready = False
        self.pushed_bytes = 0

    # ------------------------------------------------------------------ connection
    def ensure_connected(self) -> DeviceProbe:
        if not self.connection.connected:
            self.connection.connect()
            self._binary_ready = False
            made = self.connection.run(["mkdir", "-p", self.models_dir])
            if made.exit_code != 0:
                raise DeviceCommandError(
                    f"adb:{self.address}: cannot create {self.models_dir} ({made.output.strip()})"
                )
        if self.probe is None:
            self.probe = probe_device(self.connection)
        return self.probe

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> PhoneSession:
        self.ensure_connected()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ files
    def _remote_hash(self, remote: str) -> tuple[str, str] | None:
        """``(algorithm, hex)`` of a file on the phone, or None if it is not there."""
        tools = [self._hash_tool] if self._hash_tool else ["sha256sum", "md5sum"]
        for tool in tools:
            result = self.connection.run([tool, remote])
            if result.exit_code == 0 and result.output.split():
                self._hash_tool = tool
                return tool.removesuffix("sum"), result.output.split()[0].lower()
            if result.exit_code not in (126, 127) and "not found" not in result.output:
                self._hash_tool = tool
                return None  # the tool works; the file is missing or unreadable
        raise DeviceCommandError(
            f"adb:{self.address}: neither sha256sum nor md5sum works on the phone; pearl "
            "needs one of them (toybox has both since Android 6)"
        )

    def push_if_changed(self, local: Path, remote: str, *, mode: int = 0o644) -> bool:
        """Push `local` unless `remote` already has the same content.  True if pushed."""
        existing = self._remote_hash(remote)
        if existing is not None and existing[1] == file_digest(local, existing[0]):
            return False
        self.connection.push(local, remote, mode=mode)
        self.connection.run(["chmod", f"{mode:o}", remote])
        self.pushed_bytes += local.stat().st_size
        check = self._remote_hash(remote)
        if check is None or check[1] != file_digest(local, check[0]):
            raise DeviceCommandError(
                f"adb:{self.address}: {remote} does not match {local} after the push (the "
                "phone may be out of space: check `adb shell df /data`)"
            )
        return True

    def ensure_binary(self) -> str:
        remote = posixpath.join(self.remote_dir, BINARY_NAME)
        if self._binary_ready:
            return remote
        probe = self.ensure_connected()
        if not self.binary.is_file():
            raise BenchmarkToolError(
                f"benchmark_model binary {self.binary} not found: pass --benchmark-model PATH "
                "or set PEARL_BENCHMARK_MODEL (see the README, 'On a real phone')"
            )
        with open(self.binary, "rb") as handle:
            header = handle.read(64)
        try:
            check_binary_for_abi(header, probe.abi, str(self.binary))
        except ValueError as err:
            raise BenchmarkToolError(str(err)) from None
        if self.push_if_changed(self.binary, remote, mode=0o755):
            self.log(f"pushed {self.binary.name} to adb:{self.address}:{remote}")
        self._binary_ready = True
        return remote

    def push_model(self, local: Path) -> str:
        self.ensure_connected()
        remote = posixpath.join(
            self.models_dir, f"{file_digest(local)[:16]}{local.suffix.lower() or '.tflite'}"
        )
        self.push_if_changed(local, remote)
        return remote

    def cleanup(self) -> None:
        """Remove the pushed models (the binary stays for the next session)."""
        if self.connection.connected:
            self.connection.run(["rm", "-rf", self.models_dir])

    # ------------------------------------------------------------------ thermal
    def temperature_c(self) -> float | None:
        self.ensure_connected()
        return hottest_c(read_temperatures(self.connection))

    def wait_until_cool(
        self, limit_c: float, *, timeout_s: float, poll_s: float
    ) -> tuple[float | None, float]:
        """Wait while the hottest CPU zone is above `limit_c`; ``(last temp, seconds waited)``.
        Gives up after `timeout_s` (logged) and lets the run go ahead."""
        started = time.monotonic()
        temp = self.temperature_c()
        while temp is not None and temp > limit_c:
            waited = time.monotonic() - started
            if waited >= timeout_s:
                self.log(
                    f"adb:{self.address} still at {temp:.1f} C after {waited:.0f} s "
                    f"(limit {limit_c:g} C); running anyway"
                )
                break
            self.log(f"adb:{self.address} at {temp:.1f} C, waiting to cool below {limit_c:g} C")
            time.sleep(min(poll_s, max(timeout_s - waited, 0.0)))
            temp = self.temperature_c()
        return temp, time.monotonic() - started

    # ------------------------------------------------------------------ benchmark
    def benchmark_argv(
        self, remote_model: str, options: RunOptions, extra_flags: Sequence[str] = ()
    ) -> list[str]:
        probe = self.ensure_connected()
        return [
            "taskset",
            probe.core_mask(options.threads),
            posixpath.join(self.remote_dir, BINARY_NAME),
            *options.flags(remote_model),
            *extra_flags,
        ]

    def run_benchmark(
        self, remote_model: str, options: RunOptions, *, timeout_s: float = RUN_TIMEOUT_S
    ) -> BenchmarkResult:
        """One benchmark_model run; `timeout_s` bounds its wall time."""
        binary = self.ensure_binary()
        argv = self.benchmark_argv(remote_model, options)
        result = self.connection.run(argv, timeout_s=timeout_s)
        return interpret_run(
            result.output,
            result.exit_code,
            binary=binary,
            abi=self.probe.abi if self.probe else "?",
        )

    def run_op_profile(
        self, remote_model: str, options: RunOptions, *, timeout_s: float = RUN_TIMEOUT_S
    ) -> tuple[BenchmarkResult, OpProfile]:
        """One run with ``--enable_op_profiling=true``: its timings and its per-operator
        profile.  XNNPACK is switched off (``--use_xnnpack=false``) so that every profiled node
        is a TFLite op of the file, named after its output tensor (with XNNPACK the tool
        reports the delegate's internal nodes, which name no op of the file)."""
        binary = self.ensure_binary()
        argv = self.benchmark_argv(remote_model, options, OP_PROFILE_FLAGS)
        result = self.connection.run(argv, timeout_s=timeout_s)
        timings = interpret_run(
            result.output,
            result.exit_code,
            binary=binary,
            abi=self.probe.abi if self.probe else "?",
        )
        try:
            return timings, parse_op_profile(result.output)
        except OpProfileError as err:
            raise BenchmarkToolError(f"{err}. Last output: {_tail(result.output)}") from None
