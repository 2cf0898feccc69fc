"""Tests for android_runner.benchmark_output.

The fixtures are composed by hand, line by line, from the format strings of
LiteRT's tflite/tools/benchmark/benchmark_model.cc, benchmark_tflite_model.cc,
benchmark_main.cc, tflite/tools/logging.h, the runtime's minimal logger and
xla/tsl/util/stats_calculator.h; the numbers are made up but consistent.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from android_runner.benchmark_output import (
    BenchmarkOutputError,
    BenchmarkResult,
    DelegateError,
    ModelLoadError,
    NoTimingsError,
    StatLineError,
    TimingStats,
    format_stat_line,
    parse_benchmark_output,
    parse_stat_line,
    strip_log_prefix,
)

GRAPH = "/data/local/tmp/pearl/student_mbv3_a.tflite"


def _phase(iterations: int, seconds: float, stat_line: str) -> str:
    """One measurement phase as benchmark_model.cc prints it: the announcement, the stat line
    and a blank line."""
    return (
        f"INFO: Running benchmark for at least {iterations} iterations and at least {seconds} "
        f"seconds but terminate if exceeding 150 seconds.\nINFO: {stat_line}\n\n"
    )


def _summary(init_us: int, first_us: int | None, warmup_avg_us: float, avg_us: float) -> str:
    """benchmark_tflite_model.cc's summary line (averages printed with 6 significant digits)."""
    return (
        f"INFO: Inference timings in us: Init: {init_us}, First inference: {first_us}, "
        f"Warmup (avg): {warmup_avg_us:g}, Inference (avg): {avg_us:g}\n"
    )


# Current LiteRT build: INFO/WARN prefixes, percentiles, footprint-delta memory lines,
# peak memory monitoring (--report_peak_memory_footprint=true), default XNNPACK.
MODERN_CPU = (
    f"""\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [4]
INFO: Report the peak memory footprint: [1]
INFO: Graph: [{GRAPH}]
INFO: #threads used for CPU inference: [4]
INFO: Loaded model {GRAPH}
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
VERBOSE: Replacing 64 out of 64 node(s) with delegate (TfLiteXNNPackDelegate) node, \
yielding 1 partitions for subgraph 0 (main).
INFO: The input model file size (MB): 4.21331
INFO: Initialized session in 38.412ms.
"""
    + _phase(
        1,
        0.5,
        "count=112 first=6021 curr=4380 min=4301 max=6021 avg=4466.43 std=187 p5=4322 "
        "median=4421 p95=4702",
    )
    + _phase(
        50,
        1,
        "count=226 first=4412 curr=4398 min=4288 max=5120 avg=4417.06 std=96 p5=4301 "
        "median=4399 p95=4580",
    )
    + _summary(38412, 6021, 4466.43, 4417.06)
    + """\
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only \
APPROXIMATE to the actual memory footprint of the model at runtime. Take the information \
at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=6.35938 overall=14.0117
INFO: Overall peak memory footprint (MB) via periodic monitoring: 19.4258
INFO: Memory status at the end of exeution:
INFO: - VmRSS              : 22 MB
INFO: + RssAnnon           : 13 MB
INFO: + RssFile + RssShmem : 9 MB
"""
)

# A TF 2.x-era build with the GPU delegate: INFO prefixes, no percentiles, the older
# max-RSS memory line, and --enable_op_profiling output whose lines also contain count=.
GPU_NO_PERCENTILES = (
    f"""\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [1]
INFO: Graph: [{GRAPH}]
INFO: Enable op profiling: [1]
INFO: #threads used for CPU inference: [1]
INFO: Use gpu: [1]
INFO: Loaded model {GRAPH}
INFO: GPU delegate created.
INFO: Created TensorFlow Lite delegate for GPU.
VERBOSE: Replacing 64 out of 64 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding \
1 partitions.
INFO: Initialized OpenCL-based API.
INFO: Created 1 GPU delegate kernels.
INFO: Explicitly applied GPU delegate, and the model graph will be completely executed by \
the delegate.
INFO: The input model file size (MB): 4.21331
INFO: Initialized session in 842.225ms.
"""
    + _phase(1, 0.5, "count=13 first=115098 curr=36666 min=32079 max=115098 avg=40199.8 std=21694")
    + _phase(50, 1, "count=56 first=35688 curr=33419 min=30394 max=42335 avg=35134.9 std=1733")
    + _summary(842225, 115098, 40199.8, 35134.9)
    + """\
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only \
APPROXIMATE to the actual memory footprint of the model at runtime. Take the information \
at your discretion.
INFO: Peak memory footprint (MB): init=63.4883 overall=71.2031
INFO: Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\
\t  [mem KB]\t[times called]\t[Name]
\t     TfLiteGpuDelegateV2\t            0.000\t   35.601\t   35.050\t100.000%\t100.000%\
\t     0.000\t        1\t[logits]:64

Timings (microseconds): count=56 first=35601 curr=33333 min=30310 max=42251 avg=35050.2 std=1731
Memory (bytes): count=0
1 nodes observed
"""
)

# An old build: no log prefixes, no "but terminate" clause, legacy summary line.
LEGACY_UNPREFIXED = f"""\
STARTING!
Min num runs: [50]
Min runs duration (seconds): [1]
Num threads: [2]
Graph: [{GRAPH}]
Loaded model {GRAPH}
The input model file size (MB): 4.21331
Initialized session in 1.892ms
Running benchmark for at least 1 iterations and at least 0.5 seconds
count=6 first=91810 curr=85097 min=84834 max=91810 avg=86184.3 std=2519

Running benchmark for at least 50 iterations and at least 1 seconds
count=50 first=118810 curr=114219 min=88216 max=129193 avg=115062 std=7678

Average inference timings in us: Warmup: 86184.3, Init: 1892, Inference: 115062
"""

# A slow model (> 1 s per run): the warm-up ran once (``count=1 curr=X``) and the average
# is printed in the %g exponent form.
SLOW_MODEL = (
    f"""\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [5]
INFO: Num threads: [1]
INFO: Graph: [{GRAPH}]
INFO: Loaded model {GRAPH}
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 98.1172
INFO: Initialized session in 1203.44ms.
"""
    + _phase(1, 0.5, "count=1 curr=1912337 p5=1912337 median=1912337 p95=1912337")
    + _phase(
        5,
        1,
        "count=5 first=1850112 curr=1849007 min=1846230 max=1850112 avg=1.84835e+06 std=1432 "
        "p5=1846230 median=1848412 p95=1850112",
    )
    + _summary(1203441, 1912337, 1.91234e06, 1.84835e06)
)

# Warm-up with every sample equal: ``count=N curr=X(all same)``.
ALL_SAME_WARMUP = (
    f"""\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [1]
INFO: Graph: [{GRAPH}]
INFO: Loaded model {GRAPH}
INFO: The input model file size (MB): 12.5013
INFO: Initialized session in 12.01ms.
"""
    + _phase(2, 0.5, "count=2 curr=260001(all same) p5=260001 median=260001 p95=260001")
    + _phase(
        50,
        1,
        "count=50 first=259870 curr=259990 min=259012 max=261533 avg=260114 std=402 "
        "p5=259311 median=260102 p95=260874",
    )
    + _summary(12010, 260001, 260001, 260114)
)

# --warmup_runs=0 --warmup_min_secs=0: the warm-up phase prints count=0 and the summary
# reports the int64 "NaN" (0) for its first/average values.
NO_WARMUP = (
    f"""\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [4]
INFO: Min warmup runs: [0]
INFO: Min warmup runs duration (seconds): [0]
INFO: Graph: [{GRAPH}]
INFO: Loaded model {GRAPH}
INFO: The input model file size (MB): 4.21331
INFO: Initialized session in 35.5ms.
"""
    + _phase(0, 0, "count=0 p5=0 median=0 p95=0")
    + _phase(
        50,
        1,
        "count=240 first=5903 curr=4170 min=4102 max=5903 avg=4190.55 std=121 p5=4110 "
        "median=4166 p95=4391",
    )
    + _summary(35500, 0, 0, 4190.55)
)

DRY_RUN = (
    f"""\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Run w/o invoking kernels: [1]
INFO: Graph: [{GRAPH}]
INFO: Loaded model {GRAPH}
INFO: The input model file size (MB): 4.21331
INFO: Initialized session in 30.1ms.
"""
    + _phase(0, -1, "count=0 p5=0 median=0 p95=0")
    + _phase(0, -1, "count=0 p5=0 median=0 p95=0")
    + _summary(30100, 0, 0, 0)
)

PREAMBLE = f"""\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [1]
INFO: Graph: [{GRAPH}]
"""

MISSING_MODEL = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [1]
INFO: Graph: [/data/local/tmp/pearl/missing.tflite]
ERROR: Could not open '/data/local/tmp/pearl/missing.tflite'.
ERROR: The model allocation is null/empty
ERROR: Failed to load model /data/local/tmp/pearl/missing.tflite
ERROR: Benchmarking failed.
"""

OLD_MMAP_FAILURE = """\
STARTING!
Num threads: [1]
Graph: [/data/local/tmp/pearl/missing.tflite]
Failed to mmap model /data/local/tmp/pearl/missing.tflite
Benchmarking failed.
"""

NOT_A_FLATBUFFER = (
    PREAMBLE
    + f"""\
ERROR: The model is not a valid Flatbuffer buffer
ERROR: Failed to load model {GRAPH}
ERROR: Benchmarking failed.
"""
)

OP_NOT_FOUND = (
    PREAMBLE
    + f"""\
INFO: Loaded model {GRAPH}
ERROR: Didn't find op for builtin opcode 'GELU' version '2'. An older version of this \
builtin might be supported. Are you using an old TFLite binary with a newer model?

ERROR: Registration failed.

ERROR: Failed to initialize the interpreter
ERROR: Benchmarking failed.
"""
)

GPU_APPLY_FAILED = (
    PREAMBLE
    + f"""\
INFO: Use gpu: [1]
INFO: Loaded model {GRAPH}
INFO: GPU delegate created.
INFO: Created TensorFlow Lite delegate for GPU.
ERROR: TfLiteGpuDelegate Init: MUL: Dimension can not be reduced to linear.
INFO: Created 0 GPU delegate kernels.
ERROR: TfLiteGpuDelegate Prepare: delegate is not initialized
ERROR: Node number 64 (TfLiteGpuDelegateV2) failed to prepare.
ERROR: Restored original execution plan after delegate application failure.
ERROR: Failed to apply GPU delegate.
ERROR: Benchmarking failed.
"""
)

FULL_DELEGATION_REQUIRED = (
    PREAMBLE
    + f"""\
INFO: Require full delegation: [1]
INFO: Use gpu: [1]
INFO: Loaded model {GRAPH}
INFO: GPU delegate created.
INFO: Created TensorFlow Lite delegate for GPU.
ERROR: Following operations are not supported by GPU delegate:
CUSTOM TFLite_Detection_PostProcess: TFLite_Detection_PostProcess
63 operations will run on the GPU, and the remaining 1 operations will run on the CPU.
INFO: Initialized OpenCL-based API.
INFO: Created 1 GPU delegate kernels.
ERROR: Disallowed CPU fallback detected.
ERROR: Benchmarking failed.
"""
)

XNNPACK_DEFAULT_FAILED = (
    PREAMBLE
    + f"""\
INFO: Loaded model {GRAPH}
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
ERROR: Failed to apply the default TensorFlow Lite delegate indexed at 0.
ERROR: Failed to allocate tensors!
ERROR: Benchmarking failed.
"""
)

_TIMINGS_TAIL = (
    """\
INFO: The input model file size (MB): 4.21331
INFO: Initialized session in 40.2ms.
"""
    + _phase(1, 0.5, "count=98 first=7012 curr=5001 min=4950 max=7012 avg=5102.2 std=230")
    + _phase(50, 1, "count=196 first=5060 curr=5011 min=4940 max=5600 avg=5089.7 std=88")
    + _summary(40200, 7012, 5102.2, 5089.7)
)

# The GPU delegate is missing from this build/phone: a WARN line, then a CPU run.
GPU_UNSUPPORTED = (
    PREAMBLE
    + "INFO: Use gpu: [1]\n"
    + f"INFO: Loaded model {GRAPH}\n"
    + "WARN: GPU acceleration is unsupported on this platform.\n"
    + "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
    + _TIMINGS_TAIL
)

# Partial delegation: the ERROR line about unsupported ops is not fatal.
GPU_PARTIAL = (
    PREAMBLE
    + "INFO: Use gpu: [1]\n"
    + f"INFO: Loaded model {GRAPH}\n"
    + "INFO: GPU delegate created.\n"
    + "INFO: Created TensorFlow Lite delegate for GPU.\n"
    + "ERROR: Following operations are not supported by GPU delegate:\n"
    + "CUSTOM TFLite_Detection_PostProcess: TFLite_Detection_PostProcess\n"
    + "63 operations will run on the GPU, and the remaining 1 operations will run on the CPU.\n"
    + "INFO: Initialized OpenCL-based API.\n"
    + "INFO: Created 1 GPU delegate kernels.\n"
    + "INFO: Explicitly applied GPU delegate, and the model graph will be partially executed "
    + "by the delegate w/ 1 delegate kernels.\n"
    + _TIMINGS_TAIL
)

# An invoke failure during the regular runs: the tool still prints the timings, then fails.
INVOKE_FAILED = (
    PREAMBLE
    + f"INFO: Loaded model {GRAPH}\n"
    + _TIMINGS_TAIL
    + "ERROR: Node number 12 (CONV_2D) failed to invoke.\n"
    + "ERROR: Benchmarking failed.\n"
)

# The output cut off after the regular phase's announcement.
TRUNCATED_AFTER_WARMUP = (
    PREAMBLE + f"INFO: Loaded model {GRAPH}\n" + _TIMINGS_TAIL.partition("INFO: count=196")[0]
)


# --------------------------------------------------------------------------- prefixes


@pytest.mark.parametrize(
    ("line", "level", "text"),
    [
        ("INFO: STARTING!", "INFO", "STARTING!"),
        ("WARN: Unconsumed cmdline flags: --foo", "WARN", "Unconsumed cmdline flags: --foo"),
        ("WARNING: something", "WARNING", "something"),
        ("ERROR: Benchmarking failed.\r", "ERROR", "Benchmarking failed."),
        ("FATAL: Inputs mismatch", "FATAL", "Inputs mismatch"),
        ("VERBOSE: Replacing 3 out of 3 node(s)", "VERBOSE", "Replacing 3 out of 3 node(s)"),
        ("  count=0  ", None, "count=0"),
        ("Timings (microseconds): count=1 curr=5", None, "Timings (microseconds): count=1 curr=5"),
    ],
)
def test_strip_log_prefix(line: str, level: str | None, text: str) -> None:
    assert strip_log_prefix(line) == (level, text)


# --------------------------------------------------------------------------- stat lines


def test_stat_line_full_without_percentiles() -> None:
    stats = parse_stat_line("count=50 first=1234 curr=1100 min=1050 max=1300 avg=1120.5 std=40")
    assert stats == TimingStats(
        count=50, first_us=1234, curr_us=1100, min_us=1050, max_us=1300, avg_us=1120.5, std_us=40
    )
    assert not stats.has_percentiles
    assert stats.p5_us is None and stats.median_ms is None
    assert stats.avg_ms == pytest.approx(1.1205)
    assert stats.std_ms == pytest.approx(0.040)


def test_stat_line_full_with_percentiles_and_prefix() -> None:
    stats = parse_stat_line(
        "INFO: count=50 first=1234 curr=1100 min=1050 max=1300 avg=1120.5 std=40 "
        "p5=1060 median=1110 p95=1250"
    )
    assert (stats.p5_us, stats.median_us, stats.p95_us) == (1060, 1110, 1250)
    assert stats.p95_ms == pytest.approx(1.25)
    assert stats.has_percentiles


def test_stat_line_all_same() -> None:
    stats = parse_stat_line("count=7 curr=2500(all same)")
    assert stats.all_same
    assert (stats.count, stats.first_us, stats.curr_us, stats.min_us, stats.max_us) == (
        7,
        2500,
        2500,
        2500,
        2500,
    )
    assert stats.avg_us == 2500.0 and stats.std_us == 0


def test_stat_line_all_same_with_percentiles() -> None:
    stats = parse_stat_line("INFO: count=3 curr=812(all same) p5=812 median=812 p95=812")
    assert stats.count == 3 and stats.avg_us == 812.0 and stats.median_us == 812


def test_stat_line_single_sample() -> None:
    stats = parse_stat_line("count=1 curr=1912337")
    assert stats.count == 1 and stats.first_us == 1912337 and stats.avg_ms == 1912.337


@pytest.mark.parametrize("line", ["count=0", "INFO: count=0 p5=0 median=0 p95=0"])
def test_stat_line_empty(line: str) -> None:
    stats = parse_stat_line(line)
    assert stats.is_empty and stats == TimingStats.empty()
    assert not stats.has_percentiles  # the tool's p5=0 etc. are not measurements


def test_stat_line_exponent_average() -> None:
    stats = parse_stat_line(
        "count=5 first=1850112 curr=1849007 min=1846230 max=1850112 avg=1.84835e+06 std=1432"
    )
    assert stats.avg_us == 1848350.0


@pytest.mark.parametrize(
    "line",
    [
        "",
        "count=",
        "count=5",  # values are missing
        "count=0 curr=12",  # count=0 never carries values
        "count=5 first=1 curr=2 min=1 max=2 avg=1.5",  # std missing
        "count=5 first=1.5 curr=2 min=1 max=2 avg=1.5 std=0",  # non-integer microseconds
        "Timings (microseconds): count=1 curr=5",
        "INFO: Inference timings in us: Init: 1, First inference: 2, Warmup (avg): 3, "
        "Inference (avg): 4",
    ],
)
def test_stat_line_rejects_other_lines(line: str) -> None:
    with pytest.raises(StatLineError):
        parse_stat_line(line)
    with pytest.raises(ValueError):  # StatLineError is also a ValueError
        parse_stat_line(line)


def test_from_samples_mirrors_the_tool() -> None:
    stats = TimingStats.from_samples([100, 200])
    # avg 150, population variance 2500 -> std 50; percentile p at index n*p//100.
    assert stats == TimingStats(
        count=2,
        first_us=100,
        curr_us=200,
        min_us=100,
        max_us=200,
        avg_us=150.0,
        std_us=50,
        p5_us=100,
        median_us=200,
        p95_us=200,
    )
    assert format_stat_line(stats) == (
        "count=2 first=100 curr=200 min=100 max=200 avg=150 std=50 p5=100 median=200 p95=200"
    )
    assert format_stat_line(TimingStats.from_samples([7, 7, 7])) == (
        "count=3 curr=7(all same) p5=7 median=7 p95=7"
    )
    assert format_stat_line(TimingStats.from_samples([7], percentiles=False)) == "count=1 curr=7"
    assert format_stat_line(TimingStats.from_samples([])) == "count=0"


# --------------------------------------------------------------------------- full outputs


def test_modern_cpu_output() -> None:
    result = parse_benchmark_output(MODERN_CPU)
    assert isinstance(result, BenchmarkResult)
    assert result.init_us == 38412 and result.init_ms == pytest.approx(38.412)
    assert result.first_inference_us == 6021 and result.first_inference_ms == pytest.approx(6.021)
    assert result.warmup == TimingStats(112, 6021, 4380, 4301, 6021, 4466.43, 187, 4322, 4421, 4702)
    assert result.inference == TimingStats(
        226, 4412, 4398, 4288, 5120, 4417.06, 96, 4301, 4399, 4580
    )
    assert result.inference_avg_ms == pytest.approx(4.41706)
    assert result.warmup_avg_ms == pytest.approx(4.46643)
    assert result.inference_std_ms == pytest.approx(0.096)
    assert result.memory_metric == "footprint_delta"
    assert result.init_memory_mb == pytest.approx(6.35938)
    assert result.overall_memory_mb == pytest.approx(14.0117)
    assert result.peak_memory_mb == pytest.approx(19.4258)
    assert result.model_size_mb == pytest.approx(4.21331)
    assert result.graph == GRAPH
    assert result.num_threads == 4
    assert result.warnings == ()


def test_gpu_output_without_percentiles_and_with_op_profiling() -> None:
    result = parse_benchmark_output(GPU_NO_PERCENTILES)
    assert result.init_us == 842225
    assert result.first_inference_us == 115098
    assert result.warmup is not None and result.warmup.count == 13
    assert result.warmup.avg_us == pytest.approx(40199.8)
    # The regular-run stat line, not the op-profiling "Timings (microseconds): count=..." one.
    assert result.inference == TimingStats(56, 35688, 33419, 30394, 42335, 35134.9, 1733)
    assert not result.inference.has_percentiles
    assert result.memory_metric == "max_rss"
    assert (result.init_memory_mb, result.overall_memory_mb) == (63.4883, 71.2031)
    assert result.peak_memory_mb is None
    assert result.num_threads == 1


def test_legacy_unprefixed_output() -> None:
    result = parse_benchmark_output(LEGACY_UNPREFIXED)
    assert result.init_us == 1892
    assert result.first_inference_us == 91810  # first warm-up run
    assert result.warmup is not None and result.warmup.avg_us == pytest.approx(86184.3)
    assert result.inference.count == 50 and result.inference.avg_us == 115062.0
    assert result.memory_metric is None and result.init_memory_mb is None
    assert result.num_threads == 2 and result.graph == GRAPH


def test_slow_model_single_warmup_run_and_exponent_average() -> None:
    result = parse_benchmark_output(SLOW_MODEL)
    assert result.warmup == TimingStats(
        1, 1912337, 1912337, 1912337, 1912337, 1912337.0, 0, 1912337, 1912337, 1912337
    )
    assert result.first_inference_us == 1912337
    assert result.inference.avg_us == 1848350.0
    assert result.inference_avg_ms == pytest.approx(1848.35)
    assert result.init_us == 1203441


def test_all_same_warmup() -> None:
    result = parse_benchmark_output(ALL_SAME_WARMUP)
    assert result.warmup is not None and result.warmup.all_same
    assert result.warmup.count == 2 and result.warmup.avg_us == 260001.0
    assert result.first_inference_us == 260001
    assert result.inference.median_us == 260102


def test_no_warmup_runs() -> None:
    result = parse_benchmark_output(NO_WARMUP)
    assert result.warmup is None
    assert result.first_inference_us is None and result.first_inference_ms is None
    assert result.warmup_avg_ms is None
    assert result.inference.count == 240
    assert result.init_us == 35500


def test_windows_line_endings_from_adb_pty() -> None:
    result = parse_benchmark_output(MODERN_CPU.replace("\n", "\r\n"))
    assert result == parse_benchmark_output(MODERN_CPU)


def test_stderr_before_stdout_is_fine() -> None:
    # Non-fatal ERROR lines (stderr) may come before or after stdout in the capture.
    stderr = "\n".join(line for line in GPU_PARTIAL.splitlines() if line.startswith("ERROR"))
    stdout = "\n".join(line for line in GPU_PARTIAL.splitlines() if not line.startswith("ERROR"))
    assert parse_benchmark_output(stderr + "\n" + stdout) == parse_benchmark_output(GPU_PARTIAL)


def test_partial_delegation_is_not_an_error() -> None:
    result = parse_benchmark_output(GPU_PARTIAL)
    assert result.inference.avg_us == pytest.approx(5089.7)
    assert result.first_inference_us == 7012


def test_summary_missing_falls_back_to_session_line() -> None:
    text = MODERN_CPU.split("INFO: Inference timings in us:")[0]
    result = parse_benchmark_output(text)
    assert result.init_us == 38412
    assert result.inference.count == 226


def test_warnings_are_kept() -> None:
    text = MODERN_CPU.replace(
        "INFO: Log parameter values verbosely: [0]\n",
        "WARN: Unconsumed cmdline flags: --use_hexagon=true\n"
        "INFO: Log parameter values verbosely: [0]\n",
    )
    result = parse_benchmark_output(text)
    assert result.warnings == ("Unconsumed cmdline flags: --use_hexagon=true",)


# --------------------------------------------------------------------------- errors


def _failure(text: str) -> BenchmarkOutputError:
    """The error `parse_benchmark_output` raises for ``text``."""
    with pytest.raises(BenchmarkOutputError) as info:
        parse_benchmark_output(text)
    return info.value


LIST_SIGNATURES = (
    PREAMBLE
    + f"INFO: Loaded model {GRAPH}\n"
    + "INFO: The Model contains 1 signature key(s).\n"
    + "INFO: They are listed below: \n"
    + "INFO: -> Signature Key: serving_default\n"
    + "ERROR: Benchmarking failed.\n"
)
UNKNOWN_FAILURE = PREAMBLE + "ERROR: Something new went wrong\nERROR: Benchmarking failed.\n"


@pytest.mark.parametrize(
    ("text", "error", "line", "hint"),
    [
        pytest.param(
            MISSING_MODEL,
            ModelLoadError,
            "Could not open '/data/local/tmp/pearl/missing.tflite'.",
            "--graph",
            id="missing-model",
        ),
        pytest.param(
            OLD_MMAP_FAILURE,
            ModelLoadError,
            "Failed to mmap model /data/local/tmp/pearl/missing.tflite",
            "--graph",
            id="old-failed-to-mmap",
        ),
        pytest.param(
            NOT_A_FLATBUFFER,
            ModelLoadError,
            "The model is not a valid Flatbuffer buffer",
            "push it again",
            id="invalid-flatbuffer",
        ),
        pytest.param(
            GPU_APPLY_FAILED,
            DelegateError,
            "Failed to apply GPU delegate.",
            "--use_gpu",
            id="gpu-delegate-failure",
        ),
        pytest.param(
            FULL_DELEGATION_REQUIRED,
            DelegateError,
            "Disallowed CPU fallback detected.",
            "--require_full_delegation",
            id="full-delegation-required",
        ),
        pytest.param(
            XNNPACK_DEFAULT_FAILED,
            DelegateError,
            "Failed to apply the default TensorFlow Lite delegate indexed at 0.",
            "--use_xnnpack=false",
            id="default-xnnpack-failure",
        ),
        pytest.param(
            GPU_UNSUPPORTED,
            DelegateError,
            "GPU acceleration is unsupported on this platform.",
            "allow_delegate_fallback",
            id="gpu-unsupported-falls-back-to-cpu",
        ),
        pytest.param(
            INVOKE_FAILED,
            BenchmarkOutputError,
            "Node number 12 (CONV_2D) failed to invoke.",
            "--num_threads=1",
            id="invoke-failure-after-timings",
        ),
        pytest.param(
            UNKNOWN_FAILURE,
            BenchmarkOutputError,
            "Something new went wrong",
            "Something new went wrong",
            id="unknown-failure-quotes-the-error-line",
        ),
        pytest.param(
            LIST_SIGNATURES,
            BenchmarkOutputError,
            "Benchmarking failed.",
            "--list_signatures",
            id="list-signatures-style-failure",
        ),
    ],
)
def test_failure_quotes_the_error_line_and_hints_at_a_fix(
    text: str, error: type[BenchmarkOutputError], line: str, hint: str
) -> None:
    failure = _failure(text)
    assert type(failure) is error
    assert failure.line == line
    assert hint in str(failure)


def test_missing_model_file_details() -> None:
    err = _failure(MISSING_MODEL)
    assert "Could not open '/data/local/tmp/pearl/missing.tflite'." in str(err)
    assert "adb push" in str(err)
    assert "Failed to load model /data/local/tmp/pearl/missing.tflite" in err.error_lines
    assert isinstance(err, RuntimeError)


def test_unsupported_op() -> None:
    err = _failure(OP_NOT_FOUND)
    assert type(err) is ModelLoadError
    assert err.line is not None
    assert err.line.startswith("Didn't find op for builtin opcode 'GELU' version '2'.")
    assert "plus_flex" in str(err)


def test_gpu_delegate_failure_keeps_the_delegate_error_lines() -> None:
    assert "TfLiteGpuDelegate Init: MUL: Dimension can not be reduced to linear." in (
        _failure(GPU_APPLY_FAILED).error_lines
    )


def test_unsupported_gpu_runs_on_cpu_when_fallback_is_allowed() -> None:
    result = parse_benchmark_output(GPU_UNSUPPORTED, allow_delegate_fallback=True)
    assert result.inference.count == 196
    assert result.warnings == ("GPU acceleration is unsupported on this platform.",)


def test_delegate_applied_but_unused_is_a_fallback() -> None:
    text = GPU_UNSUPPORTED.replace(
        "WARN: GPU acceleration is unsupported on this platform.\n",
        "INFO: Though GPU delegate is explicitly applied, the model graph will not be "
        "executed by the delegate.\n",
    )
    assert type(_failure(text)) is DelegateError
    assert parse_benchmark_output(text, allow_delegate_fallback=True).inference.count == 196


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("", "empty"),
        ("\n\n  \n", "empty"),
        ("/system/bin/sh: /data/local/tmp/benchmark_model: not found\n", "chmod +x"),
        (PREAMBLE + f"INFO: Loaded model {GRAPH}\nSegmentation fault\n", "Segmentation fault"),
        (TRUNCATED_AFTER_WARMUP, "1 of 2 measurement phases"),
        (DRY_RUN, "--dry_run"),
    ],
    ids=["empty", "blank", "binary-not-found", "crash-while-loading", "truncated", "dry-run"],
)
def test_no_timings(text: str, hint: str) -> None:
    with pytest.raises(NoTimingsError) as info:
        parse_benchmark_output(text)
    assert hint in str(info.value)


def test_several_runs_in_one_output_are_rejected() -> None:
    with pytest.raises(BenchmarkOutputError, match="separately"):
        parse_benchmark_output(MODERN_CPU + MODERN_CPU)


def test_summary_inconsistent_with_stat_lines() -> None:
    text = MODERN_CPU.replace("Inference (avg): 4417.06", "Inference (avg): 9999.99")
    with pytest.raises(BenchmarkOutputError, match="mix several runs"):
        parse_benchmark_output(text)


# --------------------------------------------------------------------------- properties

samples_strategy = st.lists(st.integers(min_value=0, max_value=10**9), max_size=120)
prefix_strategy = st.sampled_from(["", "INFO: ", "  INFO: ", "\t"])


@given(samples_strategy, st.booleans())
def test_round_trip_exact(samples: list[int], percentiles: bool) -> None:
    stats = TimingStats.from_samples(samples, percentiles=percentiles)
    assert parse_stat_line(format_stat_line(stats, significant_digits=None)) == stats


@given(samples_strategy, st.booleans(), prefix_strategy)
def test_round_trip_tool_precision(samples: list[int], percentiles: bool, prefix: str) -> None:
    stats = TimingStats.from_samples(samples, percentiles=percentiles)
    line = format_stat_line(stats)
    parsed = parse_stat_line(prefix + line + "\r")
    # Integers survive exactly; avg is printed with 6 significant digits like the tool.
    assert dataclasses.replace(parsed, avg_us=stats.avg_us) == stats
    assert math.isclose(parsed.avg_us, stats.avg_us, rel_tol=5e-6)
    assert format_stat_line(parsed) == line


@settings(max_examples=50)
@given(
    st.lists(st.integers(min_value=1, max_value=10**7), min_size=0, max_size=40),
    st.lists(st.integers(min_value=1, max_value=10**7), min_size=1, max_size=40),
    st.integers(min_value=0, max_value=10**7),
    st.booleans(),
)
def test_full_output_round_trip(
    warmup_samples: list[int], samples: list[int], init_us: int, percentiles: bool
) -> None:
    warmup = TimingStats.from_samples(warmup_samples, percentiles=percentiles)
    inference = TimingStats.from_samples(samples, percentiles=percentiles)
    stat_lines = []
    for stats in (warmup, inference):
        line = format_stat_line(stats)
        if stats.is_empty and percentiles:
            line += " p5=0 median=0 p95=0"  # what the tool prints for an empty phase
        stat_lines.append(line)
    text = (
        PREAMBLE
        + f"INFO: Loaded model {GRAPH}\n"
        + f"INFO: Initialized session in {init_us / 1e3:g}ms.\n"
        + _phase(1, 0.5, stat_lines[0])
        + _phase(50, 1, stat_lines[1])
        + _summary(init_us, warmup.first_us, warmup.avg_us, inference.avg_us)
    )
    result = parse_benchmark_output(text)
    assert result.init_us == init_us
    assert dataclasses.replace(result.inference, avg_us=inference.avg_us) == inference
    if warmup.is_empty:
        assert result.warmup is None and result.first_inference_us is None
    else:
        assert result.warmup is not None
        assert dataclasses.replace(result.warmup, avg_us=warmup.avg_us) == warmup
        assert result.first_inference_us == warmup_samples[0]
