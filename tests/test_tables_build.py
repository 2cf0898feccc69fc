"""Building and validating latency tables for real: litert-torch conversion, the direct layer
writer, LiteRT timing in fresh processes, resume after an interruption, the CLI's JSON."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from device_bench.direct_files import graph_differences
from latency_tables.keys import arch_keys, space_keys
from models.space import get_space

pytestmark = pytest.mark.slow


def _variety(space):
    """One key of each structure the writer distinguishes."""
    keys = space_keys(space)
    wanted = [
        lambda k: k.kind == "stem",
        lambda k: k.kind == "head",
        lambda k: k.op == "ds" and k.stride == 2 and k.skip == "pool" and k.kernel == 3,
        lambda k: k.op == "conv" and k.stride == 2 and k.skip == "pool" and k.kernel == 5,
        lambda k: k.op == "mb" and k.stride == 2 and k.skip == "pool" and k.se_percent > 0,
        lambda k: k.op == "mb" and k.stride == 1 and k.skip == "id" and k.se_percent > 0,
    ]  # fmt: skip
    return [next(k for k in keys if rule(k)) for rule in wanted]


def test_litert_chunks_split_exactly_and_direct_writer_matches_them():
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from device_bench.layer_models import convert_chunk, layer_module
    from device_bench.layer_writer import write_layer

    keys = _variety(get_space("mnas-cifar", 16, 10))
    converted = convert_chunk(keys)  # one litert-torch conversion, split per layer
    rng = np.random.default_rng(0)
    for key, data in zip(keys, converted, strict=True):
        # the split file computes exactly the PyTorch layer
        runner = Interpreter(model_content=data).get_signature_runner("serving_default")
        x = rng.standard_normal((1, key.input_size, key.input_size, key.in_channels))
        x = x.astype(np.float32)
        y = runner(args_0=x)["output_0"]
        with torch.no_grad():
            reference = layer_module(key)(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
        if reference.ndim == 4:
            reference = reference.transpose(0, 2, 3, 1)
        np.testing.assert_allclose(y, reference, rtol=1e-4, atol=1e-4, err_msg=key.encode())
        # and the direct writer lays out the same graph, op for op
        assert graph_differences(write_layer(key), data) == [], key.encode()


def _tiny_space():
    base = get_space("mnas-cifar", 16, 10)
    return dataclasses.replace(
        base,
        ops=("ds", "mb3"),
        kernels=(3,),
        se_ratios=(0.0,),
        skips=("pool",),
        width_multipliers=(0.5,),
        layer_deltas=(0,),
        base_blocks=((16, 1), (24, 2), (32, 1)),
        layout=dataclasses.replace(base.layout, block_strides=(1, 2, 2)),
        head_channels=64,
    )


def test_build_resumes_after_interruption_and_validate_cli_reports(tmp_path):
    from click.testing import CliRunner

    from device_bench.host import HostTFLiteBackend
    from device_bench.measurement import fingerprint_id
    from device_bench.table_build import BuildOptions, build_table
    from device_bench.table_measure import LAYER_SETTINGS
    from latency_tables.identity import with_precision
    from latency_tables.table import LatencyTable
    from pipeline.cli import cli

    space = _tiny_space()
    keys = space_keys(space)
    assert 8 <= len(keys) <= 30
    options = BuildOptions(passes=2, calibrate=2, calibration_seed=5, batch=6, max_passes=3)
    out = tmp_path / "tiny.csv"
    cache = tmp_path / "cache"
    counts: dict[str, int] = {}

    class Interrupt(Exception):
        pass

    def stop_early(phase: str, total: int):
        counts[phase] = total

        def advance(n: int) -> None:
            counts[phase + " done"] = counts.get(phase + " done", 0) + n
            if phase.startswith("measuring") and counts[phase + " done"] >= 8:
                raise Interrupt

        return advance

    with pytest.raises(Interrupt):
        build_table("host:tflite", space, out, options=options, cache_dir=cache,
                    progress=stop_early)  # fmt: skip
    state = json.loads((tmp_path / "tiny.csv.state.json").read_text())
    measured_first = sum(len(v) for v in state["passes"].values())
    assert measured_first >= 6 and not out.exists()  # the finished batch was kept

    totals: dict[str, int] = {}

    def record(phase: str, total: int):
        totals[phase] = total
        return lambda n: None

    table = build_table("host:tflite", space, out, options=options, cache_dir=cache,
                        progress=record)  # fmt: skip
    items = len(keys) + 2  # layers + calibration networks
    assert totals["measuring (2+ passes)"] == 2 * items - measured_first  # nothing timed twice
    loaded = LatencyTable.load(out, fingerprint=HostTFLiteBackend().fingerprint())
    assert set(loaded.entries) == set(keys)
    fingerprint = with_precision(HostTFLiteBackend().fingerprint(), "fp32")
    assert loaded.fingerprint_id == fingerprint_id(fingerprint)
    for entry in loaded.entries.values():
        assert 2 <= entry.passes <= 3 and entry.runs >= 2 * LAYER_SETTINGS.min_runs
        assert 0 < entry.min_ms <= entry.median_ms * 1.5  # a normalised value may exceed it
    # every batch timed the reference network first; the modes are recorded in the header
    state = json.loads((tmp_path / "tiny.csv.state.json").read_text())
    reference = loaded.header["protocol"]["reference"]
    assert reference["batches"] == len(state["batches"]) >= 4 and reference["fast_ms"] > 0
    assert loaded.header["protocol"]["passes_run"] in (2, 3)
    assert 0.5 < table.correction.scale < 2.0
    assert table.correction.fit["networks"] == 2
    assert loaded.header["space"]["ops"] == ["ds", "mb3"]  # the custom space is recorded

    # the real exports of the calibration networks are op for op the direct writer's graphs
    from device_bench.layer_writer import write_network
    from device_bench.table_build import network_files, sample_archs

    for arch in sample_archs(space, 2, 5):
        real = network_files([arch], cache, lambda n: None)[arch.encode()].read_bytes()
        assert graph_differences(write_network(arch), real) == [], arch.encode()

    # validate through the CLI on the calibration archs (already converted: no new conversion)
    result = CliRunner().invoke(
        cli,
        ["tables", "validate", "--table", str(out), "--device", "host:tflite", "--n", "2",
         "--seed", "5", "--passes", "2", "--json", "--cache-dir", str(cache)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n"] == 2
    for name in ("within_5", "within_10", "rmspe"):
        assert 0 <= report[name] <= 1 or name == "rmspe"
    assert len(report["worst"]) == 2
    assert report["modes"]["fast_ms"] > 0 and isinstance(report["warnings"], list)
    rng_arch = report["worst"][0]["arch"]
    from models.arch import Arch

    assert report["worst"][0]["predicted_ms"] == pytest.approx(
        loaded.predict_ms(Arch.decode(rng_arch))
    )
    assert all(k in loaded.entries for k in arch_keys(Arch.decode(rng_arch)))


def test_validate_cli_rejects_other_device(tmp_path):
    from click.testing import CliRunner

    from latency_tables.table import LatencyTable
    from pipeline.cli import cli

    space = get_space("mnas-cifar", 32, 10)
    table = LatencyTable(
        {},
        {"fingerprint": {"kind": "host", "cpu": "another"}, "space": {
            "name": space.name, "input_size": 32, "num_classes": 10}},
    )  # fmt: skip
    path = table.save(tmp_path / "t.csv")
    result = CliRunner().invoke(
        cli, ["tables", "validate", "--table", str(path), "--device", "host:tflite", "--n", "1"]
    )
    assert result.exit_code == 1
    assert "built for another device" in result.output and "cpu" in result.output


def test_int8_table_times_quantised_layer_slices_and_serves_only_int8_searches(tmp_path):
    """An int8 build: every layer file is its int8 slice of an int8 network (the network is the
    layers plus one QUANTIZE and one DEQUANTIZE), the table records its precision, validates
    on int8 networks, and a chain at another precision refuses it saying what to do."""
    from collections import Counter

    from click.testing import CliRunner

    from device_bench.direct_files import graph_signature
    from device_bench.layer_files import ensure_layer_files
    from device_bench.table_build import BuildOptions, build_table, network_files, sample_archs
    from latency_tables.table import LatencyTable, TableError
    from pipeline.cli import cli
    from pipeline.latency_chain import LatencyChain

    space = _tiny_space()
    options = BuildOptions(
        passes=1, max_passes=1, calibrate=2, calibration_seed=5, batch=40, networks="direct",
        precision="int8",
    )  # fmt: skip
    out, cache = tmp_path / "int8.csv", tmp_path / "cache"
    build_table("host:tflite", space, out, options=options, cache_dir=cache)
    table = LatencyTable.load(out)
    assert table.precision == "int8" and "int8" in table.header["protocol"]["files"]
    assert set(table.entries) == set(space_keys(space))

    arch = sample_archs(space, 1, 5)[0]  # a calibration network: its files are cached
    network = network_files([arch], cache, lambda n: None, "direct", "int8")[arch.encode()]
    layers = ensure_layer_files(list(set(arch_keys(arch))), cache, precision="int8")
    summed = Counter()
    for key in arch_keys(arch):
        summed += graph_signature(layers[key].read_bytes())
    extra = graph_signature(network.read_bytes()) - summed
    assert sorted(op[0] for op in extra.elements()) == ["DEQUANTIZE", "QUANTIZE"]
    assert not summed - graph_signature(network.read_bytes())

    result = CliRunner().invoke(
        cli,
        ["tables", "validate", "--table", str(out), "--device", "host:tflite", "--n", "2",
         "--seed", "5", "--passes", "1", "--max-passes", "1", "--networks", "direct", "--json",
         "--cache-dir", str(cache)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["precision"] == "int8" and report["n"] == 2

    # adapting it to a device times int8 networks and keeps the precision
    from device_bench.layer_files import layer_root

    adapted = tmp_path / "adapted.csv"
    result = CliRunner().invoke(
        cli,
        ["tables", "adapt", "--from", str(out), "--device", "host:tflite", "-o", str(adapted),
         "--n", "3", "--seed", "9", "--passes", "1", "--max-passes", "1", "--networks", "direct",
         "--cache-dir", str(cache)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert LatencyTable.load(adapted).precision == "int8"
    int8_networks = layer_root(cache) / "networks-direct-int8" / "16"
    assert all((int8_networks / f"{a.key()}.tflite").is_file() for a in sample_archs(space, 3, 9))

    with pytest.raises(TableError, match=r"latency.precision = 'fp32'.*--precision fp32"):
        LatencyChain([f"table:{out}"], export_cache_dir=tmp_path, precision="fp32")
    chain = LatencyChain([f"table:{out}"], export_cache_dir=tmp_path, precision="int8")
    record = chain.measure(arch)
    assert record.precision == "int8" and record.source == "table"
    assert record.latency_ms == pytest.approx(table.predict_ms(arch))
    # a layer the table lacks is measured on demand as its int8 file, on the table's device
    from device_bench.table_backend import TableBackend

    first = arch_keys(arch)[1]
    lacking = LatencyTable(
        {k: e for k, e in table.entries.items() if k != first}, table.header
    ).save(tmp_path / "lacking.csv")
    backend = TableBackend(lacking, measure_missing="host:tflite", cache_dir=cache)
    assert backend.predict_ms(arch) > 0 and backend.table.entries[first].passes == 3
    # a table without a recorded precision (format 1 and 2) is fp32: refused for int8
    old = LatencyTable({}, {"fingerprint": {"kind": "host"}, "space": table.space})
    with pytest.raises(TableError, match="predicts fp32 files"):
        old.check_precision("int8")
