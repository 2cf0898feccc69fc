"""Parse the console output of TFLite/LiteRT's ``benchmark_model`` tool.

Pearl runs the ``benchmark_model`` binary on a phone over ADB and hands its
stdout/stderr (in any order, possibly with ``\\r\\n`` line endings) to
:func:`parse_benchmark_output`.  The module is pure: no I/O, no torch.

What the tool prints (checked against the tool's sources, see the notes at the
end of this docstring):

* Every log line may carry a severity prefix.  The tool's own logger prints
  ``INFO: ``/``WARN: `` on stdout and ``ERROR: ``/``FATAL: `` on stderr; the
  runtime's minimal logger prints ``VERBOSE: ``/``INFO: ``/``WARNING: ``/
  ``ERROR: `` on stderr.  Old builds printed no prefix at all.
* Each measurement phase starts with
  ``Running benchmark for at least N iterations and at least S seconds but
  terminate if exceeding M seconds.`` and ends with one statistics line.  The
  phases are not labelled: the first one is the warm-up, the second one the
  regular (measured) runs.
* A statistics line is ``count=0``, ``count=N curr=X`` (N == 1),
  ``count=N curr=X(all same)`` (N > 1, every sample equal) or
  ``count=N first=A curr=B min=C max=D avg=E std=F``; newer builds append
  `` p5=P median=Q p95=R``.  Every value is an integer number of microseconds
  except ``avg``, a double printed with 6 significant digits (so it may be
  ``1.23457e+06``).  ``std`` is the truncated population standard deviation.
* The summary ``Inference timings in us: Init: I, First inference: F,
  Warmup (avg): W, Inference (avg): A`` (older builds: ``Average inference
  timings in us: Warmup: W, Init: I, Inference: A`` / ``no stats: A``).
* Optional memory lines: ``Memory footprint delta from the start of the tool
  (MB): init=X overall=Y`` (older builds: ``Peak memory footprint (MB):
  init=X overall=Y``, the max RSS) and ``Overall peak memory footprint (MB)
  via periodic monitoring: Z``.
* A failed run ends with ``Benchmarking failed.`` after one or more ERROR
  lines, which this module maps onto :class:`ModelLoadError`,
  :class:`DelegateError` or the base :class:`BenchmarkOutputError`; output
  without any measured run raises :class:`NoTimingsError`.

Sources (read, not copied): ``tflite/tools/benchmark/benchmark_model.cc``,
``benchmark_tflite_model.cc``, ``benchmark_main.cc``, ``tflite/tools/logging.h``,
``tflite/minimal_logging*.cc``, ``tflite/tools/delegates/*_provider.cc`` of
LiteRT, and ``xla/tsl/util/stats_calculator.h`` (``Stat::OutputToStream``,
``StatWithPercentiles::OutputToStream``) used by TensorFlow.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BenchmarkOutputError",
    "BenchmarkResult",
    "DelegateError",
    "ModelLoadError",
    "NoTimingsError",
    "StatLineError",
    "TimingStats",
    "format_stat_line",
    "parse_benchmark_output",
    "parse_stat_line",
    "strip_log_prefix",
]

_US_PER_MS = 1000.0

# --------------------------------------------------------------------------- errors


class BenchmarkOutputError(RuntimeError):
    """The benchmark_model output reports a failure or cannot be interpreted.

    ``line`` is the tool line the message quotes (without its log prefix), if
    any; ``error_lines`` holds every ERROR/FATAL line of the output.
    """

    def __init__(
        self,
        message: str,
        *,
        line: str | None = None,
        error_lines: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.line = line
        self.error_lines = error_lines


class ModelLoadError(BenchmarkOutputError):
    """The tool could not load the model or build an interpreter for it."""


class DelegateError(BenchmarkOutputError):
    """A requested delegate (GPU, NNAPI, XNNPACK, ...) failed or was not used."""


class NoTimingsError(BenchmarkOutputError):
    """The output holds no measured inference run."""


class StatLineError(BenchmarkOutputError, ValueError):
    """A line is not a benchmark_model statistics line."""


# --------------------------------------------------------------------------- log prefixes

# tflite/tools/logging.h: INFO, WARN, ERROR, FATAL.
# tflite/minimal_logging.cc (runtime): VERBOSE, INFO, WARNING, ERROR.
_LOG_PREFIX_RE = re.compile(r"^(VERBOSE|INFO|WARNING|WARN|ERROR|FATAL): ?")
_ERROR_LEVELS = frozenset({"ERROR", "FATAL"})
_WARNING_LEVELS = frozenset({"WARN", "WARNING"})


def strip_log_prefix(line: str) -> tuple[str | None, str]:
    """Split ``"INFO: text"`` into ``("INFO", "text")``; unprefixed lines give ``None``.

    Surrounding whitespace (including a stray ``\\r`` from ``adb shell``) is removed.
    """
    stripped = line.strip()
    match = _LOG_PREFIX_RE.match(stripped)
    if match is None:
        return None, stripped
    return match.group(1), stripped[match.end() :].strip()


# --------------------------------------------------------------------------- stat lines

# A number as a C++ ostream prints int64 or double values (incl. %g exponents, nan, inf).
_NUM = r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"

_STAT_RE = re.compile(
    rf"""
    ^count=(?P<count>\d+)
    (?:
        \s+first=(?P<first>{_NUM})
        \s+curr=(?P<curr>{_NUM})
        \s+min=(?P<min>{_NUM})
        \s+max=(?P<max>{_NUM})
        \s+avg=(?P<avg>{_NUM})
        \s+std=(?P<std>{_NUM})
    |
        \s+curr=(?P<same>{_NUM})\s*(?P<all_same>\(all\ same\))?
    )?
    (?:
        \s+p5=(?P<p5>{_NUM})
        \s+median=(?P<median>{_NUM})
        \s+p95=(?P<p95>{_NUM})
    )?
    \s*$
    """,
    re.VERBOSE,
)


def _to_int(text: str, *, what: str, line: str) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    value = float(text)
    if not value.is_integer():
        raise StatLineError(
            f"{what}={text!r} in stat line {line!r} is not an integer number of microseconds",
            line=line,
        )
    return int(value)


def _in_ms(field: str) -> property:
    """A read-only view of the microsecond field `field` in milliseconds (None stays None)."""

    def get(self) -> float | None:
        value = getattr(self, field)
        return None if value is None else value / _US_PER_MS

    return property(get, doc=f"`{field}` in milliseconds.")


@dataclass(frozen=True, slots=True)
class TimingStats:
    """One statistics line of benchmark_model, in microseconds.

    ``count == 0`` (no run in that phase) has every value at 0 and no
    percentiles: the tool prints ``p5=0 median=0 p95=0`` there, which are not
    measurements.  The percentile fields are ``None`` for builds that do not
    print them.
    """

    count: int
    first_us: int
    curr_us: int
    min_us: int
    max_us: int
    avg_us: float
    std_us: int
    p5_us: int | None = None
    median_us: int | None = None
    p95_us: int | None = None

    @classmethod
    def empty(cls) -> TimingStats:
        """The statistics of a phase without any run (``count=0``)."""
        return cls(count=0, first_us=0, curr_us=0, min_us=0, max_us=0, avg_us=0.0, std_us=0)

    @classmethod
    def from_samples(cls, samples_us: Sequence[int], *, percentiles: bool = True) -> TimingStats:
        """Compute the statistics the tool would print for these run durations.

        Mirrors the tool's arithmetic: double average, population variance
        truncated to an integer, then its square root truncated; percentile
        ``p`` is the element at index ``n * p // 100`` of the sorted samples.
        """
        values = [int(v) for v in samples_us]
        if not values:
            return cls.empty()
        count = len(values)
        total = sum(values)
        avg = float(total) / count
        lo, hi = min(values), max(values)
        if lo == hi:
            std = 0
        else:
            squared_sum = 0.0
            for v in values:
                squared_sum += float(v) * v
            variance = int(squared_sum / count - avg * avg)
            std = int(math.sqrt(max(variance, 0)))
        p5 = median = p95 = None
        if percentiles:
            ordered = sorted(values)
            p5 = ordered[count * 5 // 100]
            median = ordered[count * 50 // 100]
            p95 = ordered[count * 95 // 100]
        return cls(
            count=count,
            first_us=values[0],
            curr_us=values[-1],
            min_us=lo,
            max_us=hi,
            avg_us=avg,
            std_us=std,
            p5_us=p5,
            median_us=median,
            p95_us=p95,
        )

    @property
    def is_empty(self) -> bool:
        return self.count == 0

    @property
    def all_same(self) -> bool:
        """True when every run took the same time (the tool's ``(all same)`` form)."""
        return self.count > 0 and self.min_us == self.max_us

    @property
    def has_percentiles(self) -> bool:
        return self.p5_us is not None and self.median_us is not None and self.p95_us is not None

    first_ms = _in_ms("first_us")
    curr_ms = _in_ms("curr_us")
    min_ms = _in_ms("min_us")
    max_ms = _in_ms("max_us")
    avg_ms = _in_ms("avg_us")
    std_ms = _in_ms("std_us")
    p5_ms = _in_ms("p5_us")  # None where the build prints no percentiles
    median_ms = _in_ms("median_us")
    p95_ms = _in_ms("p95_us")


def parse_stat_line(line: str) -> TimingStats:
    """Parse one statistics line such as ``INFO: count=50 first=... std=40``.

    Accepts an optional log prefix and surrounding whitespace.  Raises
    :class:`StatLineError` (a ``ValueError``) for anything else.
    """
    _, content = strip_log_prefix(line)
    match = _STAT_RE.match(content)
    if match is None:
        raise StatLineError(f"not a benchmark_model stat line: {line.strip()!r}", line=content)
    g = match.groupdict()
    count = int(g["count"])
    has_full = g["first"] is not None
    has_same = g["same"] is not None
    if count == 0:
        if has_full or has_same:
            raise StatLineError(f"stat line with count=0 carries values: {content!r}", line=content)
        return TimingStats.empty()
    if not (has_full or has_same):
        raise StatLineError(
            f"stat line with count={count} has no values: {content!r}", line=content
        )

    def as_int(key: str) -> int:
        return _to_int(g[key], what=key, line=content)

    percentiles: dict[str, int | None] = {"p5_us": None, "median_us": None, "p95_us": None}
    if g["p5"] is not None:
        percentiles = {
            "p5_us": as_int("p5"),
            "median_us": as_int("median"),
            "p95_us": as_int("p95"),
        }
    if has_same:
        value = as_int("same")
        return TimingStats(
            count=count,
            first_us=value,
            curr_us=value,
            min_us=value,
            max_us=value,
            avg_us=float(value),
            std_us=0,
            **percentiles,
        )
    return TimingStats(
        count=count,
        first_us=as_int("first"),
        curr_us=as_int("curr"),
        min_us=as_int("min"),
        max_us=as_int("max"),
        avg_us=float(g["avg"]),
        std_us=as_int("std"),
        **percentiles,
    )


def format_stat_line(stats: TimingStats, *, significant_digits: int | None = 6) -> str:
    """Render ``stats`` the way benchmark_model prints them (without log prefix).

    ``avg`` gets ``significant_digits`` significant digits like a default C++
    stream; ``None`` writes the shortest exact form instead.
    """
    if stats.count == 0:
        text = "count=0"
    elif stats.all_same:
        text = f"count={stats.count} curr={stats.curr_us}"
        if stats.count > 1:
            text += "(all same)"
    else:
        if significant_digits is None:
            avg = repr(stats.avg_us)
        else:
            avg = f"{stats.avg_us:.{significant_digits}g}"
        text = (
            f"count={stats.count} first={stats.first_us} curr={stats.curr_us}"
            f" min={stats.min_us} max={stats.max_us} avg={avg} std={stats.std_us}"
        )
    if stats.has_percentiles:
        text += f" p5={stats.p5_us} median={stats.median_us} p95={stats.p95_us}"
    return text


# --------------------------------------------------------------------------- result

MemoryMetric = Literal["footprint_delta", "max_rss"]


@dataclass(frozen=True, slots=True)
class BenchmarkResult:
    """Timings of one successful benchmark_model run (microseconds, ms properties).

    * ``warmup`` is ``None`` when the warm-up phase ran zero times.
    * ``first_inference_us`` is the first warm-up run (``None`` without warm-up).
    * Memory values are in MB.  ``memory_metric`` tells what init/overall mean:
      ``"footprint_delta"`` (current tool: footprint growth since start) or
      ``"max_rss"`` (older builds: peak resident set size).
    * ``warnings`` keeps the WARN/WARNING lines, without prefix.
    """

    init_us: int
    first_inference_us: int | None
    warmup: TimingStats | None
    inference: TimingStats
    init_memory_mb: float | None = None
    overall_memory_mb: float | None = None
    peak_memory_mb: float | None = None
    memory_metric: MemoryMetric | None = None
    model_size_mb: float | None = None
    graph: str | None = None
    num_threads: int | None = None
    warnings: tuple[str, ...] = ()

    @property
    def init_ms(self) -> float:
        return self.init_us / _US_PER_MS

    @property
    def first_inference_ms(self) -> float | None:
        if self.first_inference_us is None:
            return None
        return self.first_inference_us / _US_PER_MS

    @property
    def warmup_avg_ms(self) -> float | None:
        return None if self.warmup is None else self.warmup.avg_ms

    @property
    def inference_avg_ms(self) -> float:
        return self.inference.avg_ms

    @property
    def inference_std_ms(self) -> float:
        return self.inference.std_ms


# --------------------------------------------------------------------------- line patterns

_RUN_START_RE = re.compile(
    r"^Running benchmark for (?:at least )?(?P<runs>\d+) iterations"
    rf"(?: and at least (?P<min_secs>{_NUM}) seconds)?"
    rf"(?: but terminate if exceeding (?P<max_secs>{_NUM}) seconds)?\.?$"
)
_SUMMARY_RE = re.compile(
    rf"^Inference timings in us: Init: (?P<init>{_NUM}), First inference: (?P<first>{_NUM}), "
    rf"Warmup \(avg\): (?P<warmup>{_NUM}), Inference \(avg\): (?P<inference>{_NUM})$"
)
_LEGACY_SUMMARY_RE = re.compile(
    rf"^Average inference timings in us: Warmup: (?P<warmup>{_NUM}), Init: (?P<init>{_NUM}), "
    rf"(?:Inference|no stats): (?P<inference>{_NUM})$"
)
_SESSION_RE = re.compile(rf"^Initialized session in (?P<ms>{_NUM}) ?ms\.?$")
_MEMORY_DELTA_RE = re.compile(
    rf"^Memory footprint delta from the start of the tool \(MB\): "
    rf"init=(?P<init>{_NUM}) overall=(?P<overall>{_NUM})$"
)
_MEMORY_MAX_RSS_RE = re.compile(
    rf"^Peak memory footprint \(MB\): init=(?P<init>{_NUM}) overall=(?P<overall>{_NUM})$"
)
_PEAK_MEMORY_RE = re.compile(
    rf"^Overall peak memory footprint \(MB\) via periodic monitoring: (?P<peak>{_NUM})$"
)
_MODEL_SIZE_RE = re.compile(rf"^The input model file size \(MB\): (?P<mb>{_NUM})$")
_GRAPH_RE = re.compile(r"^Graph: \[(?P<graph>.*)\]$")
_NUM_THREADS_RE = re.compile(r"^Num threads: \[(?P<n>-?\d+)\]$")
_FAILED_LINE = "Benchmarking failed."
_STARTING_LINE = "STARTING!"


# --------------------------------------------------------------------------- error rules

_MODEL_PATH_ADVICE = (
    "Check the --graph path on the device (e.g. `adb shell ls -l <path>`): the file must exist "
    "and be readable by the shell user; push it again with `adb push` if needed."
)
_BAD_FLATBUFFER_ADVICE = (
    "The file is truncated or is not a .tflite model: compare its size with the local copy, "
    "push it again, and re-export the model if the local file is corrupt."
)
_OPS_ADVICE = (
    "The model needs operators this benchmark_model build does not have: use a binary at least "
    "as new as the converter that produced the model (the *_plus_flex build for TF select ops), "
    "or re-convert the model with builtin ops only."
)
_LOAD_ADVICE = (
    "Check that --graph points to an existing, readable .tflite file on the device and that the "
    "model was produced by a converter compatible with this benchmark_model binary."
)
_DELEGATE_ADVICE = (
    "Check that this benchmark_model binary was built with that delegate and that the phone "
    "supports it (GPU: OpenCL or OpenGL ES 3.1 drivers; NNAPI: a driver for the model's ops), "
    "or rerun without the delegate flag (e.g. drop --use_gpu=true) to benchmark on the CPU."
)
_FALLBACK_ADVICE = (
    "The timings were measured on the CPU, not with the requested delegate. Use a "
    "benchmark_model build and a phone that support the delegate, drop the delegate flag to "
    "measure the CPU on purpose, or pass allow_delegate_fallback=True to accept CPU numbers."
)
_XNNPACK_DEFAULT_ADVICE = (
    "Rerun with --use_xnnpack=false to benchmark the plain CPU kernels, or check the model for "
    "ops or dynamic shapes the XNNPACK delegate rejects."
)
_FULL_DELEGATION_ADVICE = (
    "Drop --require_full_delegation=true to allow partial delegation, or change the model so "
    "that every op is supported by the delegate."
)
_RUNTIME_OP_ADVICE = (
    "An operator failed at run time: check the input shapes (--input_layer_shape) and rerun "
    "without delegates (--use_gpu=false, --use_xnnpack=false) and with --num_threads=1 to find "
    "the failing backend."
)
_ALLOCATE_ADVICE = (
    "The phone may be out of memory or the input shapes are invalid: check "
    "--input_layer_shape, close other apps, or try a smaller model/batch."
)
_GENERIC_ADVICE = (
    "Run the same command by hand over `adb shell` (add --verbose=true) and read the ERROR "
    "lines; flags such as --help or --list_signatures also end the tool this way."
)


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: re.Pattern[str]
    error: type[BenchmarkOutputError]
    what: str
    advice: str


def _rule(pattern: str, error: type[BenchmarkOutputError], what: str, advice: str) -> _Rule:
    return _Rule(re.compile(pattern), error, what, advice)


# Checked in this order when a run failed; the first rule matching any line wins,
# so specific causes come before the generic lines the tool prints after them.
_FAILURE_RULES: tuple[_Rule, ...] = (
    # Model file and interpreter (benchmark_tflite_model.cc LoadModel/InitInterpreter,
    # mmap_allocation.cc, model_builder_base.h, op_resolver.cc, interpreter_builder.cc).
    _rule(
        r"^Could not open '.*'\.$",
        ModelLoadError,
        "benchmark_model could not open the model file",
        _MODEL_PATH_ADVICE,
    ),
    _rule(
        r"^(?:The model is not a valid Flatbuffer|Model provided must have at least"
        r"|Model provided has model identifier|mmap of size 0 requested)",
        ModelLoadError,
        "the model file is not a valid TFLite flatbuffer",
        _BAD_FLATBUFFER_ADVICE,
    ),
    _rule(
        r"^(?:Didn't find op for builtin opcode|Op builtin_code out of range"
        r"|Model provided is schema version|Encountered unresolved custom op"
        r"|Operator with CUSTOM builtin_code has no custom_code|Registration failed\.)",
        ModelLoadError,
        "the model uses operators this benchmark_model cannot run",
        _OPS_ADVICE,
    ),
    _rule(
        r"^(?:Failed to mmap model |Failed to load model |Failed to initialize model loader"
        r"|Failed to parse model path|model_path is empty|The model allocation is null/empty"
        r"|Please specify the name of your TF Lite input file with --graph"
        r"|Failed to construct interpreter|Failed to initialize the interpreter"
        r"|Could not build interpreter)",
        ModelLoadError,
        "benchmark_model failed to load the model",
        _LOAD_ADVICE,
    ),
    # Delegates (benchmark_tflite_model.cc Init, interpreter.cc, subgraph.cc, gpu/delegate.cc).
    _rule(
        r"^Disallowed CPU fallback detected\.$",
        DelegateError,
        "the delegate cannot run the whole graph and --require_full_delegation is set",
        _FULL_DELEGATION_ADVICE,
    ),
    _rule(
        r"^Failed to apply the default TensorFlow Lite delegate indexed at \d+\.$",
        DelegateError,
        "the default XNNPACK CPU delegate could not be applied",
        _XNNPACK_DEFAULT_ADVICE,
    ),
    _rule(
        r"^Failed to apply .+ delegate\.$",
        DelegateError,
        "benchmark_model could not apply the requested delegate",
        _DELEGATE_ADVICE,
    ),
    _rule(
        r"^(?:TfLiteGpuDelegate (?:Init|Prepare|Invoke)\b"
        r"|Restored original execution plan after delegate application failure)",
        DelegateError,
        "the delegate failed on this model",
        _DELEGATE_ADVICE,
    ),
    # Run time.
    _rule(
        r"^Node number \d+ \(.*\) failed to (?:invoke|prepare)\.$",
        BenchmarkOutputError,
        "a model operator failed",
        _RUNTIME_OP_ADVICE,
    ),
    _rule(
        r"^Failed to allocate tensors!$",
        BenchmarkOutputError,
        "benchmark_model could not allocate the model's tensors",
        _ALLOCATE_ADVICE,
    ),
)

# Checked on runs that succeeded: the requested delegate was silently not used
# (gpu/nnapi/coreml_delegate_provider.cc, benchmark_tflite_model.cc).
_FALLBACK_RULES: tuple[_Rule, ...] = (
    _rule(
        r"^.+ acceleration is unsupported on this platform\.$",
        DelegateError,
        "the requested delegate is not available, so the tool ran on the CPU",
        _FALLBACK_ADVICE,
    ),
    _rule(
        r"^Though .+ delegate is explicitly applied, the model graph will not be"
        r" executed by the delegate\.$",
        DelegateError,
        "the requested delegate took no part of the graph, so the tool ran on the CPU",
        _FALLBACK_ADVICE,
    ),
)


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class _Line:
    level: str | None
    text: str


def _split_lines(text: str) -> list[_Line]:
    lines = []
    for raw in text.splitlines():
        level, content = strip_log_prefix(raw)
        if content or level is not None:
            lines.append(_Line(level, content))
    return lines


def _first_match(rules: Sequence[_Rule], lines: Sequence[_Line]) -> tuple[_Rule, str] | None:
    for rule in rules:
        for line in lines:
            if rule.pattern.search(line.text):
                return rule, line.text
    return None


def _raise_for(rule: _Rule, line: str, error_lines: tuple[str, ...]) -> None:
    raise rule.error(
        f"{rule.what}: the tool printed {line!r}. {rule.advice}",
        line=line,
        error_lines=error_lines,
    )


def _float(text: str) -> float:
    return float(text)


def _int_us(text: str) -> int:
    value = float(text)
    return int(value) if math.isfinite(value) else 0


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return True
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=0.5)


def parse_benchmark_output(text: str, *, allow_delegate_fallback: bool = False) -> BenchmarkResult:
    """Parse the whole stdout+stderr of one benchmark_model run.

    Raises :class:`ModelLoadError`, :class:`DelegateError`,
    :class:`NoTimingsError` or :class:`BenchmarkOutputError` (other failures);
    every message quotes the tool line it is based on and says what to do.
    A run where the requested delegate was reported unavailable, so that the
    tool measured the CPU instead, raises :class:`DelegateError` unless
    ``allow_delegate_fallback`` is true.
    """
    lines = _split_lines(text)
    error_lines = tuple(
        ln.text for ln in lines if ln.level in _ERROR_LEVELS and ln.text != _FAILED_LINE
    )
    warnings = tuple(ln.text for ln in lines if ln.level in _WARNING_LEVELS)
    failed = any(ln.text == _FAILED_LINE for ln in lines) or any(
        ln.level == "FATAL" for ln in lines
    )

    # Measurement phases: a "Running benchmark ..." line, then its stat line.
    phases: list[TimingStats | None] = []
    summaries: list[re.Match[str]] = []
    legacy_summaries: list[re.Match[str]] = []
    session_ms: float | None = None
    init_mem = overall_mem = peak_mem = model_size = None
    memory_metric: MemoryMetric | None = None
    graph: str | None = None
    num_threads: int | None = None
    for line in lines:
        content = line.text
        if _RUN_START_RE.match(content):
            phases.append(None)
            continue
        if content.startswith("count="):
            if phases and phases[-1] is None:
                phases[-1] = parse_stat_line(content)
            continue
        if m := _SUMMARY_RE.match(content):
            summaries.append(m)
        elif m := _LEGACY_SUMMARY_RE.match(content):
            legacy_summaries.append(m)
        elif m := _SESSION_RE.match(content):
            session_ms = _float(m["ms"])
        elif m := _MEMORY_DELTA_RE.match(content):
            init_mem, overall_mem = _float(m["init"]), _float(m["overall"])
            memory_metric = "footprint_delta"
        elif m := _MEMORY_MAX_RSS_RE.match(content):
            init_mem, overall_mem = _float(m["init"]), _float(m["overall"])
            memory_metric = "max_rss"
        elif m := _PEAK_MEMORY_RE.match(content):
            peak_mem = _float(m["peak"])
        elif m := _MODEL_SIZE_RE.match(content):
            model_size = _float(m["mb"])
        elif m := _GRAPH_RE.match(content):
            graph = m["graph"]
        elif m := _NUM_THREADS_RE.match(content):
            num_threads = int(m["n"])

    inference = phases[1] if len(phases) >= 2 else None

    if failed or inference is None:
        found = _first_match(_FAILURE_RULES, lines)
        if found is not None:
            _raise_for(found[0], found[1], error_lines)
        if error_lines or failed:
            quoted = error_lines[0] if error_lines else _FAILED_LINE
            raise BenchmarkOutputError(
                f"benchmark_model reported an error: the tool printed {quoted!r}. "
                f"{_GENERIC_ADVICE}",
                line=quoted,
                error_lines=error_lines,
            )
        raise _no_timings(lines, phases)

    if len(phases) > 2 or len(summaries) + len(legacy_summaries) > 1:
        raise BenchmarkOutputError(
            f"the output holds {len(phases)} measurement phases (expected 2: warm-up, then "
            "inference), i.e. several benchmark runs. Parse the output of each "
            "benchmark_model invocation separately.",
            error_lines=error_lines,
        )
    if inference.is_empty:
        raise NoTimingsError(
            "benchmark_model measured no inference: the tool printed 'count=0' for the "
            "regular runs. Remove --dry_run and make sure --num_runs or --min_secs is > 0.",
            line="count=0",
            error_lines=error_lines,
        )

    if not allow_delegate_fallback:
        found = _first_match(_FALLBACK_RULES, lines)
        if found is not None:
            _raise_for(found[0], found[1], error_lines)

    warmup_phase = phases[0]
    warmup = None if warmup_phase is None or warmup_phase.is_empty else warmup_phase

    init_us: int | None = None
    if summaries:
        summary = summaries[0]
        init_us = _int_us(summary["init"])
        _check_consistent("Inference (avg)", _float(summary["inference"]), inference.avg_us)
        if warmup is not None:
            _check_consistent("Warmup (avg)", _float(summary["warmup"]), warmup.avg_us)
            _check_consistent("First inference", _float(summary["first"]), warmup.first_us)
    elif legacy_summaries:
        summary = legacy_summaries[0]
        init_us = _int_us(summary["init"])
        _check_consistent("Inference", _float(summary["inference"]), inference.avg_us)
    elif session_ms is not None and math.isfinite(session_ms):
        init_us = round(session_ms * _US_PER_MS)
    if init_us is None:
        raise NoTimingsError(
            "the benchmark_model output is incomplete: it has the stat lines but neither the "
            "'Inference timings in us: Init: ...' summary nor 'Initialized session in ...ms.'. "
            "Capture the whole stdout and stderr of the tool and make sure it was not killed "
            "before it finished.",
            error_lines=error_lines,
        )

    return BenchmarkResult(
        init_us=init_us,
        first_inference_us=None if warmup is None else warmup.first_us,
        warmup=warmup,
        inference=inference,
        init_memory_mb=init_mem,
        overall_memory_mb=overall_mem,
        peak_memory_mb=peak_mem,
        memory_metric=memory_metric,
        model_size_mb=model_size,
        graph=graph,
        num_threads=num_threads,
        warnings=warnings,
    )


def _check_consistent(label: str, summary_value: float, stat_value: float) -> None:
    if not _close(summary_value, stat_value):
        raise BenchmarkOutputError(
            f"the summary line says {label}: {summary_value:g} us but the matching stat line "
            f"says {stat_value:g} us; the output seems to mix several runs. Parse the output of "
            "each benchmark_model invocation separately."
        )


def _no_timings(lines: Sequence[_Line], phases: Sequence[TimingStats | None]) -> NoTimingsError:
    last = lines[-1].text if lines else ""
    started = any(ln.text == _STARTING_LINE for ln in lines)
    if not lines:
        detail = "the output is empty"
    elif not started:
        detail = (
            f"benchmark_model does not seem to have started (no 'STARTING!' line; last line: "
            f"{last!r}). Check the binary path on the device, that it is executable "
            "(chmod +x) and built for the phone's ABI"
        )
    elif phases:
        completed = sum(1 for phase in phases if phase is not None)
        detail = (
            f"the output stops after {completed} of 2 measurement phases (last line: "
            f"{last!r}). The tool was probably killed, timed out or crashed: rerun it with "
            "fewer runs (--num_runs, --max_secs) or --num_threads=1 and capture the whole output"
        )
    else:
        detail = (
            f"the tool started but never reached the benchmark runs (last line: {last!r}). "
            "It was probably killed or crashed while loading the model; rerun it by hand "
            "over `adb shell` with --verbose=true, or with --num_threads=1"
        )
    return NoTimingsError(
        f"no inference timings in the benchmark_model output: {detail}.",
        line=last or None,
    )
