"""The latency chain with real backends and real exported models: fallback when the preferred
device drops, probing it again, and re-measuring front-runners when it comes back.

No phone can be attached here, so the "phone" is a second real host:onnx backend that can be
unplugged: unplugged it answers like `AdbBackend` does when a phone goes away (probe fails,
measure raises `DeviceDroppedError`)."""

from __future__ import annotations

import pytest
from search_helpers import make_tiny_teacher, tiny_space, write_config

from device_bench.host import HostOnnxBackend, MeasureSettings
from device_bench.phone import DeviceDroppedError
from pipeline.latency_chain import LatencyChain

FAST = MeasureSettings(warmup_runs=2, min_runs=20, max_runs=200, min_seconds=0.05, max_seconds=1)


class StandInPhone(HostOnnxBackend):
    def __init__(self) -> None:
        super().__init__(FAST)
        self.plugged = True
        self.measured = 0

    def available(self) -> bool:
        return self.plugged

    def measure(self, path):
        if not self.plugged:
            raise DeviceDroppedError("stand-in phone: device offline after 3 attempts")
        self.measured += 1
        return super().measure(path)


def _archs(n: int):
    space = tiny_space()
    return [space.arch_from([i % len(d.options) for d in space.decisions()]) for i in range(n)]


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, cifar_small):
    return make_tiny_teacher(tmp_path_factory.mktemp("teacher"), cifar_small)


@pytest.fixture
def chain_and_phone(tmp_path):
    phone = StandInPhone()
    chain = LatencyChain(
        ["host:onnx", "host:onnx"],
        backends=[phone, HostOnnxBackend(FAST)],
        export_cache_dir=tmp_path / "exports",
        measurement_cache=None,
    )
    return chain, phone


def test_chain_falls_back_when_the_phone_drops_and_notices_when_it_returns(chain_and_phone):
    chain, phone = chain_and_phone
    first, second = _archs(2)
    on_phone = chain.measure(first)
    assert on_phone.rank == 0 and on_phone.source == "host" and on_phone.latency_ms > 0
    assert phone.measured == 1
    phone.plugged = False  # drops mid-search
    fallback = chain.measure(second)
    assert fallback.rank == 1 and fallback.latency_ms > 0
    assert chain.best_rank() == 1 and "dropped" in chain.status()[0]["why"]
    assert chain.refresh() == []  # still away: stays down
    assert chain.needs_remeasure(1) is False  # nothing better is up
    phone.plugged = True
    assert chain.refresh() == ["host:onnx"]
    assert chain.best_rank() == 0
    assert chain.needs_remeasure(1) and not chain.needs_remeasure(0)


def test_unavailable_backends_are_skipped_with_the_reason(tmp_path):
    chain = LatencyChain(
        ["table:/no/such/table.json", "host:onnx"],
        export_cache_dir=tmp_path / "exports",
        measurement_cache=None,
    )
    status = chain.status()
    assert status[0]["up"] is False and status[0]["why"]
    record = chain.measure(_archs(1)[0])
    assert record.rank == 1 and record.spec == "host:onnx"
    with pytest.raises(ValueError, match="at least one backend"):
        LatencyChain([], export_cache_dir=tmp_path)


@pytest.mark.slow
def test_front_runners_scored_while_the_phone_was_away_are_remeasured_before_they_win(
    tmp_path, data_dir, tiny_teacher, chain_and_phone
):
    from pipeline.config import load_config
    from pipeline.search import Search, build_setup
    from pipeline.store import ResultsStore

    chain, phone = chain_and_phone
    config_path = write_config(tmp_path / "cfg", data_dir, tiny_teacher, budget=4)
    config = load_config(
        config_path,
        {
            "reward": {"cost": "latency_ms", "target": "0.2"},
            "latency": {"backends": ["host:onnx", "host:onnx"], "overlap": "false"},
            "proxy": {"loss": "ce", "epochs": "1"},
            "search": {"report_targets": "0.2,100"},
        },
    )
    setup = build_setup(config, log=lambda message: None)
    phone.plugged = False
    chain.refresh()
    chain.entries[0].down_reason = "unplugged before the search"
    setup.chain = chain
    try:
        search = Search(config, tmp_path / "run", setup, resume=False, show_progress=False)
        search.run()  # the whole search runs on the fallback
        with ResultsStore(tmp_path / "run" / "results.sqlite") as store:
            assert {r.latency_rank for r in store.candidates()} == {1}
        assert phone.measured == 0
        phone.plugged = True  # the phone comes back before the winners are chosen
        summary = search.finish()  # settles the winners on the best backend, then reports
    finally:
        setup.close()
    assert phone.measured >= 1
    winners = [b for b in summary["best"] if b.get("arch")]
    assert winners
    with ResultsStore(tmp_path / "run" / "results.sqlite") as store:
        for winner in winners:
            rows = store.candidates("WHERE key = ?", (winner["key"],))
            assert all(r.latency_rank == 0 for r in rows)  # re-measured on the phone
        for row in summary["pareto_front"]:
            assert store.evaluated(row["key"]).latency_rank == 0


def test_int8_precision_times_the_int8_file_and_records_it(tmp_path):
    """latency.precision = "int8": the chain asks for and times the arch's int8 file (a real
    direct file: QUANTIZE ... DEQUANTIZE) and every record says so."""
    from device_bench.direct_files import graph_signature, write_direct
    from device_bench.host import HostTFLiteBackend
    from models.export.common import ExportError

    asked = []

    def exporter(arch, fmt):
        asked.append(fmt)
        return write_direct(tmp_path / "files", arch, fmt)

    chain = LatencyChain(
        ["host:tflite"], backends=[HostTFLiteBackend(FAST)], export_cache_dir=tmp_path,
        exporter=exporter, precision="int8",
    )  # fmt: skip
    arch = _archs(1)[0]
    record = chain.measure(arch)
    assert asked == ["tflite-int8"] and record.precision == "int8" and record.latency_ms > 0
    assert "QUANTIZE" in {
        op[0] for op in graph_signature(exporter(arch, "tflite-int8").read_bytes())
    }
    assert record.row_values()["latency_spec"] == "host:tflite (int8)"
    fp32 = LatencyChain(
        ["host:tflite"],
        backends=[HostTFLiteBackend(FAST)],
        export_cache_dir=tmp_path,
        exporter=exporter,
    ).measure(arch)
    assert asked[-1] == "tflite" and fp32.row_values()["latency_spec"] == "host:tflite"
    with pytest.raises(ExportError, match="no int8 onnx file"):
        LatencyChain(["host:onnx"], export_cache_dir=tmp_path, precision="int8")
