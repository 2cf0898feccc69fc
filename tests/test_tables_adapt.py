"""`pearl tables adapt`: per-op-group scales fitted from a few whole networks."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from device_bench.table_adapt import adapted_table, fit_scales, group_sums
from device_bench.table_build import space_from_header
from latency_tables.table import LatencyTable

SHIPPED = Path(__file__).resolve().parents[1] / "latency_tables" / "host_tflite_mnas-cifar_32.csv"


@pytest.fixture
def shipped(shipped_cifar_table) -> LatencyTable:
    return shipped_cifar_table


def _archs(table: LatencyTable, n: int, seed: int):
    space = space_from_header(table.space)
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


def test_fit_recovers_known_group_scales(shipped):
    """A 'device' where mb layers run 1.6x, ds 0.7x, conv 1.2x, stem/head 1.0x the source's,
    plus 0.05 ms: 30 networks recover the scales (almost no ridge) and predict new ones."""
    truth = {"stem": 1.0, "conv": 1.2, "ds": 0.7, "mb": 1.6, "head": 1.0}

    def device_ms(sums):
        return sum(truth[g] * sums[g] for g in truth) + 0.05

    train = [group_sums(shipped, a) for a in _archs(shipped, 30, 1)]
    fit = fit_scales(train, [device_ms(s) for s in train], ridge=1e-9)
    for group in ("conv", "ds", "mb"):
        assert fit.scales[group] == pytest.approx(truth[group], rel=0.03), fit.scales
    assert fit.rmspe < 0.01
    adapted = adapted_table(shipped, fit, {"device_spec": "elsewhere"})
    for arch in _archs(shipped, 10, 2):  # unseen networks
        expected = device_ms(group_sums(shipped, arch))
        assert adapted.predict_ms(arch) == pytest.approx(expected, rel=0.03)
    # a global-scale-only device is fitted as one scale whatever the ridge
    same = fit_scales(train, [1.3 * sum(s.values()) for s in train])
    assert all(v == pytest.approx(1.3, rel=0.02) for v in same.scales.values())


def test_fit_rejects_mismatched_input():
    with pytest.raises(ValueError, match="one measured latency per network"):
        fit_scales([], [])


def test_adapt_cli_on_this_machine_makes_a_table_it_accepts(shipped, tmp_path):
    """A real adaptation: 4 direct-written networks, 1 pass, timed on host:tflite."""
    from click.testing import CliRunner

    from device_bench.host import HostTFLiteBackend
    from pipeline.cli import cli

    foreign = LatencyTable(shipped.entries, shipped.header)
    foreign.header["fingerprint"] = dict(shipped.fingerprint, cpu="Intel Xeon (elsewhere)")
    source = foreign.save(tmp_path / "foreign.csv")
    with pytest.raises(Exception, match="pearl tables adapt --from"):
        LatencyTable.load(source, fingerprint=HostTFLiteBackend().fingerprint())
    out = tmp_path / "adapted.csv"
    args = ["tables", "adapt", "--from", str(source), "--device", "host:tflite", "-o", str(out),
            "--n", "4", "--passes", "1", "--max-passes", "1", "--networks", "direct",
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "fit RMSPE" in result.stdout and "scales stem" in result.stdout
    adapted = LatencyTable.load(out, fingerprint=HostTFLiteBackend().fingerprint())
    info = adapted.header["adapted"]
    assert info["networks"] == 4 and info["source_fingerprint_id"] == shipped.fingerprint_id
    assert len(info["measured_ms"]) == 4 and min(info["measured_ms"]) > 0
    assert info["reference"]["batches"] >= 1
    assert set(adapted.entries) == set(shipped.entries)
    state = json.loads((tmp_path / "adapted.csv.state.json").read_text())
    assert len(state["passes"]["0"]) == 4


def test_adapt_to_another_precision_times_its_files_and_serves_only_it(shipped, tmp_path):
    """`--precision int8` from the fp32 table: the networks timed are int8 files, the new
    table is an int8 table (an int8 search takes it, an fp32 one refuses it)."""
    from click.testing import CliRunner

    from device_bench.layer_files import layer_root
    from latency_tables.table import TableError
    from pipeline.cli import cli
    from pipeline.latency_chain import LatencyChain

    out, cache = tmp_path / "int8.csv", tmp_path / "cache"
    args = ["tables", "adapt", "--from", str(SHIPPED), "--device", "host:tflite", "-o", str(out),
            "--n", "3", "--seed", "9", "--passes", "1", "--max-passes", "1", "--networks",
            "direct", "--precision", "int8", "--cache-dir", str(cache)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "\tint8\t" in result.stdout
    adapted = LatencyTable.load(out)
    assert adapted.precision == "int8" and shipped.precision == "fp32"
    assert adapted.header["adapted"]["source_precision"] == "fp32"
    assert "int8" in adapted.header["protocol"]["files"]
    int8_networks = layer_root(cache) / "networks-direct-int8" / "32"
    archs = _archs(shipped, 3, 9)
    assert all((int8_networks / f"{a.key()}.tflite").is_file() for a in archs)
    fp32_networks = layer_root(cache) / "networks-direct" / "32"  # only the reference network
    assert not any((fp32_networks / f"{a.key()}.tflite").exists() for a in archs)
    with pytest.raises(TableError, match=r"latency.precision = 'int8'"):
        LatencyChain([f"table:{out}"], export_cache_dir=tmp_path, precision="fp32")
    chain = LatencyChain([f"table:{out}"], export_cache_dir=tmp_path, precision="int8")
    assert chain.measure(archs[0]).latency_ms == pytest.approx(adapted.predict_ms(archs[0]))
