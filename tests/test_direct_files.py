"""Latency files written directly vs real litert-torch conversions: the same graph in every TFLite
format, and the guard that compares them, falls back loudly and times both side by side."""

from __future__ import annotations

from functools import partial

import pytest
from export_helpers import TINY

from device_bench.direct_files import covers, direct_bytes, graph_differences, graph_signature
from models.arch import Arch
from pipeline.latency_files import LOUD, GuardedExporter

OTHER = "in32_cls10|stem_k3_s1_c8_re|ds_k3_s2_se0_id_c16_n1_re|head_c32_re"
# ends on a 1x1 map, squeeze-excite there: litert-torch drops that SE's pool and sums the head's
ONE_BY_ONE = (
    "in32_cls10|stem_k3_s2_c8_re|ds_k3_s2_se0_id_c16_n1_re|mb3_k3_s2_se0_id_c24_n1_r6|"
    "conv_k3_s2_se0_noskip_c32_n1_re|ds_k3_s2_se25_id_c32_n2_re|head_c32_re"
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The real latency-only files of TINY (one litert-torch conversion; fp16 and int8 derived),
    and the converter that made them."""
    from models.export import latency_artifact

    cache = tmp_path_factory.mktemp("artifacts")
    convert = partial(latency_artifact, cache_dir=cache)
    arch = Arch.decode(TINY)
    files = {fmt: convert(arch, fmt) for fmt in ("tflite", "tflite-fp16", "tflite-int8")}
    files["1x1"] = convert(Arch.decode(ONE_BY_ONE), "tflite")
    return files, convert


@pytest.mark.parametrize("fmt", ["tflite", "tflite-fp16", "tflite-int8"])
def test_direct_file_is_the_converters_graph(converted, fmt):
    files, _ = converted
    real = files[fmt].read_bytes()
    direct = direct_bytes(Arch.decode(TINY), fmt)
    assert graph_differences(direct, real) == []
    assert sum(graph_signature(direct).values()) >= 8  # stem, SE block, two mb layers, head
    # the comparison sees a different network (and a different precision)
    assert graph_differences(direct_bytes(Arch.decode(OTHER), fmt), real)
    if fmt != "tflite":
        assert graph_differences(direct_bytes(Arch.decode(TINY), "tflite"), real)


def test_direct_file_of_a_network_ending_on_a_1x1_map(converted):
    files, _ = converted
    direct = direct_bytes(Arch.decode(ONE_BY_ONE), "tflite")
    assert graph_differences(direct, files["1x1"].read_bytes()) == []
    assert "SUM" in {op[0] for op in graph_signature(direct)}


def test_coverage_refuses_hard_swish_and_onnx():
    hswish = Arch.decode(TINY.replace("_r6|", "_hs|"))
    assert covers(Arch.decode(TINY), "tflite-int8")
    assert not covers(hswish, "tflite")
    assert not covers(Arch.decode(TINY), "onnx")


def test_guard_checks_every_nth_arch_and_times_both_files(converted, tmp_path):
    from pipeline.latency_chain import LatencyChain

    files, convert = converted
    lines = []
    guard = GuardedExporter(tmp_path, convert, check_every=2, log=lines.append)
    tiny, other = Arch.decode(TINY), Arch.decode(OTHER)
    first = guard(tiny, "tflite")  # the first arch is always checked: a conversion
    assert first != files["tflite"]
    assert graph_differences(first.read_bytes(), files["tflite"].read_bytes()) == []
    assert guard(other, "tflite").parent.parent.parent == first.parent.parent.parent
    assert (guard.stats.direct, guard.stats.converted, guard.stats.checked) == (2, 1, 1)
    assert guard(tiny, "tflite") == first  # remembered: not written again
    assert guard.stats.direct == 2

    # the chain times the checked arch's two files side by side, once
    chain = LatencyChain(["host:tflite"], export_cache_dir=tmp_path, exporter=guard)
    record = chain.measure(tiny)
    assert record.latency_ms > 0 and len(guard.stats.ratios) == 1
    assert 0.5 < guard.stats.ratios[0] < 2.0, guard.stats.ratios
    assert any("timed side by side" in line for line in lines)
    chain.measure(tiny)
    assert len(guard.stats.ratios) == 1
    assert chain.verify_files([tiny]) == []  # already checked: no second conversion
    assert not guard.stats.mismatched
    assert guard.summary().startswith(
        "latency files: 2 written directly, 1 converted, 1 checked op by op, 0 mismatched"
    )


def test_guard_falls_back_loudly_on_a_mismatch(converted, tmp_path):
    files, _ = converted
    lines = []

    def wrong_network(arch, fmt):  # a converter whose graph differs from the direct file's
        return files[fmt]

    guard = GuardedExporter(tmp_path, wrong_network, check_every=50, log=lines.append)
    other = Arch.decode(OTHER)
    assert guard(other, "tflite-int8") == files["tflite-int8"]  # first arch: checked, mismatch
    assert guard.stats.mismatched == [other.key()]
    assert any(line.startswith(LOUD) and OTHER in line for line in lines)
    assert guard(other, "tflite") == files["tflite"]  # the arch stays on the converter
    assert guard.pending_pair(other, "tflite-int8") is None
    # a winner that was never checked is checked by verify and reported for re-timing
    late = Arch.decode(OTHER.replace("c16", "c24"))
    guard(Arch.decode(TINY.replace("c8", "c16")), "tflite")  # uses up a non-checked slot
    assert guard(late, "tflite").name == "model.tflite" and late.key() not in guard.stats.mismatched
    assert guard.verify([late], "tflite") == [late.key()]
    assert guard(late, "tflite") == files["tflite"]
    with pytest.raises(ValueError, match="check_every"):
        GuardedExporter(tmp_path, wrong_network, check_every=0)


def test_config_options_are_checked():
    from pipeline.config import ConfigError, load_config

    ce = {"proxy": {"loss": "ce"}}
    config = load_config(
        None, {**ce, "latency": {"direct_files": "false", "direct_check_every": "5"}}
    )
    assert config.latency.direct_files is False and config.latency.direct_check_every == 5
    with pytest.raises(ConfigError, match="latency.direct_check_every"):
        load_config(None, {**ce, "latency": {"direct_check_every": "0"}})


# every op the writer emits: SE (MEAN, LOGISTIC, MUL), identity and pool skips (ADD, PAD,
# AVERAGE_POOL_2D), a projected pool skip, depthwise and plain convs, the head's FC
MIXED = (
    "in32_cls10|stem_k3_s1_c8_re|mb3_k3_s2_se25_pool_c16_n1_r6|ds_k5_s1_se0_id_c16_n1_re|"
    "conv_k3_s2_se25_pool_c24_n1_re|head_c32_re"
)


@pytest.mark.parametrize("text", [MIXED, ONE_BY_ONE], ids=["mixed", "1x1"])
def test_timing_int8_file_is_the_calibrated_graph_without_calibration(text):
    """The fast int8 latency file (fixed ranges) and the calibrated one of the same fp32 graph:
    the same ops, tensor shapes and types, options; only the scales differ; both run."""
    import numpy as np

    from device_bench.layer_writer import write_network
    from models.export import tflite
    from models.export.cache import LATENCY_CALIBRATION_IMAGES, latency_calibration

    arch = Arch.decode(text)
    fp32 = write_network(arch)
    fast = tflite.quantize_int8_for_timing(fp32)
    calibrated = tflite.quantize_int8(fp32, latency_calibration(arch, LATENCY_CALIBRATION_IMAGES))
    assert graph_differences(fast, calibrated) == []
    assert direct_bytes(arch, "tflite-int8") == fast
    ops = {op[0] for op in graph_signature(fast)}
    assert {"QUANTIZE", "DEQUANTIZE", "CONV_2D", "FULLY_CONNECTED"} <= ops
    assert fast != calibrated  # not calibrated: other scales
    images = np.random.default_rng(0).standard_normal((2, 32, 32, 3), np.float32)
    for model in (fast, calibrated):
        assert tflite.run(model, images, num_threads=1).shape == (2, 10)
