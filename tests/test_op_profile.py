"""benchmark_model's per-operator profile: the parser on real published outputs
(tests/data/op_profile/README.md says where each came from), the per-layer attribution, and
`pearl bench --op-profile` end to end through the loopback phone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from android_runner.benchmark_output import parse_benchmark_output
from android_runner.op_profile import OpProfileError, parse_op_profile
from device_bench.op_layers import op_parts
from device_bench.phone import combine_runs, run_memory_mb

DATA = Path(__file__).resolve().parent / "data" / "op_profile"


def _read(name: str) -> str:
    return (DATA / name).read_text()


def test_old_layout_tabs_start_column_no_title():
    """TensorFlow's README sample: tab-separated, [start] column, no section title."""
    profile = parse_op_profile(_read("tensorflow_readme_mobilenet_v1_quant.txt"))
    assert len(profile.run_order) == 31  # "Number of nodes executed: 31"
    first, last = profile.run_order[0], profile.run_order[-1]
    assert (first.node_type, first.start_ms, first.avg_ms) == ("CONV_2D", 0.0, 4.269)
    assert first.name == "[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]" and first.node_index is None
    assert (last.node_type, last.start_ms, last.avg_ms) == ("SOFTMAX", 79.443, 0.029)
    # the Top by Computation Time block is not read as more nodes
    assert sum(row.node_type == "CONV_2D" for row in profile.run_order) == 15
    assert [(r.node_type, r.count) for r in profile.by_type] == [
        ("CONV_2D", 15), ("DEPTHWISE_CONV_2D", 13), ("SOFTMAX", 1), ("RESHAPE", 1),
        ("AVERAGE_POOL_2D", 1),
    ]  # fmt: skip
    assert profile.timings.count == 50 and profile.timings.first_us == 79449
    # the nodes' times add up to the profiled first inference (79.449 ms)
    assert profile.total_avg_ms == pytest.approx(79.449, abs=0.01)


def test_new_layout_spaces_info_prefix_and_initialisation_section():
    text = _read("litert_x86_efficientdet_lite0_int8.excerpt.txt")
    profile = parse_op_profile(text)
    types = [row.node_type for row in profile.run_order]
    assert "ModifyGraphWithDelegate" not in types and "AllocateTensors" not in types
    assert len(profile.run_order) == 11 and profile.run_order[0].start_ms is None
    conv = profile.run_order[1]
    assert conv.node_type == "Convolution (NHWC, QC8) IGEMM"  # spaces inside a node type
    assert conv.name == "Delegate/Convolution (NHWC, QC8) IGEMM:0" and conv.node_index == 0
    assert profile.run_order[2].times_called == 13
    gemm = profile.by_type[0]
    assert (gemm.node_type, gemm.count, gemm.avg_ms, gemm.times_called) == (
        "Convolution (NHWC, QC8) GEMM", 62, 5.236, 101,
    )  # fmt: skip
    assert sum(row.count for row in profile.by_type) == 171  # "171 nodes observed"
    assert profile.timings.count == 64
    # the same output still parses as a timing run, with its memory line
    result = parse_benchmark_output(text)
    assert result.inference.count == 64 and result.overall_memory_mb == 34.8281
    assert run_memory_mb(result) == 34.8281


def test_space_layout_with_start_and_delegate_nodes():
    profile = parse_op_profile(_read("multibranch_hexagon_gpu_run_order.excerpt.txt"))
    assert len(profile.run_order) == 18 and profile.by_type == () and profile.timings is None
    hexagon = profile.run_order[3]
    assert hexagon.node_type == "TfLiteHexagonDelegate" and hexagon.start_ms == 3.934
    assert hexagon.node_index == 96
    assert profile.run_order[16].name == "[StatefulPartitionedCall:01]:94"


@pytest.mark.parametrize(
    "name",
    [
        "tensorflow_readme_mobilenet_v1_quant.txt",
        "litert_x86_efficientdet_lite0_int8.excerpt.txt",
        "multibranch_hexagon_gpu_run_order.excerpt.txt",
    ],
)
def test_with_and_without_info_prefixes_and_crlf(name):
    """The logger's `INFO: ` prefix added to every line, or removed, and \\r\\n line ends
    (variants made here from the real text, not stored)."""
    text = _read(name)
    plain = parse_op_profile(text)
    prefixed = "\r\n".join(
        line if line.startswith("INFO: ") else f"INFO: {line}" for line in text.splitlines()
    )
    stripped = "\n".join(line.removeprefix("INFO: ") for line in text.splitlines())
    assert parse_op_profile(prefixed) == plain == parse_op_profile(stripped)


def test_no_profile_and_broken_rows_are_clear():
    timing_only = "\n".join(
        line
        for line in _read("litert_x86_efficientdet_lite0_int8.excerpt.txt").splitlines()
        if not line.startswith("INFO: Operator-wise")
    ).split("INFO: Profiling Info")[0]
    with pytest.raises(OpProfileError, match="--enable_op_profiling=true"):
        parse_op_profile(timing_only)
    broken = _read("multibranch_hexagon_gpu_run_order.excerpt.txt").replace("0.093", "abc")
    with pytest.raises(OpProfileError, match=r"cannot read this operator-profile row: .*QUANTIZE"):
        parse_op_profile(broken)


def test_op_names_map_to_pearl_layers():
    prefix = "litert_torch._convert.to_channel_last_io.ChannelLastIOWrapper/models.builder."
    names = [
        f"[{prefix}Student_wrapped/models.builder.ConvBN_stem/torch.nn.modules.conv.Conv2d_0;1]:0",
        f"[{prefix}Student_wrapped/torch.nn.modules.container.Sequential_layers/models.builder."
        f"Layer_0/x/y;;{prefix}Student_wrapped/models.builder.Layer_1/z;]:1",
        f"[{prefix}Student_wrapped/torch.nn.modules.container.Sequential_layers/models.builder."
        "Layer_12;]:2",
        f"[{prefix}Student_wrapped/models.builder.ConvBN_head/torch.nn.modules.conv.Conv2d_0;]:3",
        "[serving_default_output_0_output]:4",
    ]
    assert op_parts(names) == ["stem", "layer 0", "layer 12", "head", "head"]
    with pytest.raises(ValueError, match="not a pearl export"):
        op_parts(["Delegate/Convolution (NHWC, F32) GEMM:3"])


def test_phone_memory_becomes_part_of_the_measurement():
    result = parse_benchmark_output(_read("litert_x86_efficientdet_lite0_int8.excerpt.txt"))
    m = combine_runs([result.inference], device="x", memory_mb=[run_memory_mb(result), None])
    assert m.peak_memory_mb == 34.8281
    assert combine_runs([result.inference], device="x").peak_memory_mb is None
    from device_bench.measurement import Measurement

    assert Measurement.from_dict(m.to_dict()) == m
    old = {k: v for k, v in m.to_dict().items() if k != "peak_memory_mb"}  # cached before
    assert Measurement.from_dict(old).peak_memory_mb is None


def test_pearl_bench_op_profile_through_the_loopback_phone(device, monkeypatch, tmp_path):
    """A real pearl export profiled on the loopback phone, whose benchmark_model prints the
    real format (its per-op times are a split of the measured time: a test double)."""
    from export_helpers import TINY
    from loopback_adbd import fake_aarch64_binary

    from pipeline.cli import cli as main

    binary = tmp_path / "android_aarch64_benchmark_model"
    fake_aarch64_binary(binary)
    monkeypatch.setenv("PEARL_BENCHMARK_MODEL", str(binary))
    args = ["bench", TINY, "--device", device.spec, "--runs", "20", "--no-cache", "--op-profile"]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    layers = data["op_profile"]["layers"]
    assert [row["part"] for row in layers] == ["stem", "layer 0", "layer 1", "layer 2", "head"]
    assert layers[1]["key"] == "layer:ds_k3_s2_se25_noskip_c8-16_in32_re"
    assert all(row["ops"] >= 1 and row["avg_ms"] >= 0 for row in layers)
    assert sum(row["share"] for row in layers) == pytest.approx(1.0, abs=1e-6)
    assert data["peak_memory_mb"] is not None and data["peak_memory_mb"] > 0
    run_line = [line for line in device.command_log if "enable_op_profiling" in line][-1]
    assert "--use_xnnpack=false" in run_line
    text = CliRunner().invoke(main, args)
    assert "layer 2" in text.stdout and "CONV_2D" in text.stdout, text.output
    host = CliRunner().invoke(main, ["bench", TINY, "--op-profile"])
    assert host.exit_code == 2 and "--op-profile needs a phone" in host.output
