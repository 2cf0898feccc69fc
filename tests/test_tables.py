"""Latency tables: keys, file format, prediction, the table backend (fast, no conversion)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from device_bench.backends import backend_from_spec
from device_bench.measurement import MeasurementError
from device_bench.table_backend import TableBackend
from latency_tables.keys import LayerKey, arch_key_tuples, arch_keys, space_keys
from latency_tables.table import (
    FORMAT_VERSION,
    Correction,
    Entry,
    LatencyTable,
    MissingKeyError,
    TableError,
    fit_correction,
)
from models.arch import Arch
from models.layers import expand_layers
from models.space import get_space

FINGERPRINT = {"kind": "host", "cpu": "test cpu", "runtime": "ai-edge-litert", "threads": 1}


def _entry(value: float) -> Entry:
    return Entry(value, value * 1.1, value * 1.3, value * 0.05, 60, 3, 0.02)


def _table(space, scale=1.0, offset=0.0, path=None) -> LatencyTable:
    """Entries with distinct, known values: 0.001 ms * (index + 1)."""
    keys = space_keys(space)
    entries = {key: _entry(0.001 * (i + 1)) for i, key in enumerate(keys)}
    header = {
        "created": "2026-11-22T00:00:00Z",
        "device_spec": "host:tflite",
        "fingerprint": FINGERPRINT,
        "fingerprint_id": "0123456789abcdef",
        "space": {"name": space.name, "input_size": space.input_size,
                  "num_classes": space.num_classes},
        "correction": {"scale": scale, "offset_ms": offset},
    }  # fmt: skip
    return LatencyTable(entries, header, path)


@pytest.fixture(scope="module")
def cifar():
    return get_space("mnas-cifar", 32, 10)


def test_space_keys_cover_every_sampled_arch_and_count(cifar):
    keys = set(space_keys(cifar))
    imagenet = get_space("mnas-imagenet", 224, 1000)
    assert len(keys) == 2372 and len(space_keys(imagenet)) == 2452
    rng = random.Random(3)
    for _ in range(200):
        arch = cifar.sample(rng)
        needed = arch_keys(arch)
        assert set(needed) <= keys
        # one stem, one key per layer of expand_layers, one head, in order
        assert len(needed) == len(expand_layers(arch)) + 2
        assert needed[0].kind == "stem" and needed[-1].kind == "head"
        assert arch_key_tuples(arch) == [k.as_tuple() for k in needed]  # the fast path


def test_round_trip_keeps_everything(tmp_path, cifar):
    table = _table(cifar, scale=1.1, offset=0.05)
    path = table.save(tmp_path / "t.csv")
    loaded = LatencyTable.load(path, fingerprint=FINGERPRINT)
    assert loaded.entries == table.entries
    assert loaded.header["fingerprint"] == FINGERPRINT
    assert loaded.correction.scale == 1.1 and loaded.correction.offset_ms == 0.05
    text = path.read_text()
    assert text.startswith("# pearl latency table\n# format_version: 2\n")
    # human-readable: one CSV row per key, the key fields spelled out
    assert "kind,op,kernel,expand,se_percent,skip,in_channels" in text
    lines = text.splitlines()
    header = [line for line in lines if line.startswith("#")]
    assert lines[: len(header)] == header and len(header) == 9  # magic + 8 fields
    assert len(lines) == len(header) + 1 + len(table.entries)


def test_unknown_version_is_rejected_clearly(tmp_path, cifar):
    path = _table(cifar).save(tmp_path / "t.csv")
    path.write_text(path.read_text().replace("# format_version: 2", "# format_version: 99"))
    with pytest.raises(TableError, match=r"format_version 99.*reads versions 1, 2"):
        LatencyTable.load(path)
    path.write_text("op,kernel\nmb,3\n")
    with pytest.raises(TableError, match="not a pearl latency table"):
        LatencyTable.load(path)


def test_mismatched_fingerprint_names_the_field(tmp_path, cifar):
    path = _table(cifar).save(tmp_path / "t.csv")
    other = dict(FINGERPRINT, threads=4)
    with pytest.raises(TableError, match=r"threads: table 1 vs device 4.*pearl tables build"):
        LatencyTable.load(path, fingerprint=other)


def test_bad_row_names_the_line(tmp_path, cifar):
    path = _table(cifar).save(tmp_path / "t.csv")
    lines = path.read_text().splitlines()
    header_lines = sum(1 for line in lines if line.startswith("#")) + 1
    lines[header_lines + 2] = lines[header_lines + 2].replace(",0.", ",-0.", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TableError, match=rf"line {header_lines + 3}: .*>= 0"):
        LatencyTable.load(path)


def test_prediction_is_corrected_sum_of_entries(cifar):
    table = _table(cifar, scale=1.1, offset=0.25)
    arch = cifar.sample(random.Random(7))
    expected_sum = sum(table.entries[k].min_ms for k in arch_keys(arch))
    assert table.sum_ms(arch) == pytest.approx(expected_sum, rel=1e-12)
    assert table.predict_ms(arch) == pytest.approx(1.1 * expected_sum + 0.25, rel=1e-12)
    # the statistic named in the header is the one summed
    median = LatencyTable(table.entries, dict(table.header, statistic="median_ms"))
    assert median.sum_ms(arch) == pytest.approx(expected_sum * 1.1, rel=1e-9)


def test_missing_key_error_names_the_key(cifar):
    table = _table(cifar)
    arch = Arch.decode("in32_cls10|stem_k3_s1_c32_re|mb4_k7_s1_se0_noskip_c16_n1_re|head_c1280_re")
    with pytest.raises(MissingKeyError) as caught:
        table.predict_ms(arch)
    message = str(caught.value)
    assert "layer:mb4_k7_s1_se0_noskip_c32-16_in32_re" in message
    assert "pearl tables build" in message and "measure_missing" in message
    assert caught.value.key.kernel == 7
    # the on-demand hook supplies the entry and the prediction goes on
    seen: list[LayerKey] = []

    def measure(key: LayerKey) -> Entry:
        seen.append(key)
        return _entry(1.0)

    value = table.predict_ms(arch, measure)
    assert [k.encode() for k in seen] == [
        "layer:mb4_k7_s1_se0_noskip_c32-16_in32_re",
        "head:c16-1280_in32_re_cls10",
    ]
    assert value == pytest.approx(table.entries[arch_keys(arch)[0]].min_ms + 2.0)
    assert table.predict_ms(arch) == value  # added to the table: no second measurement
    assert len(seen) == 2


def test_fit_correction_recovers_scale_and_offset():
    sums = [1.0, 2.0, 3.5, 5.0, 8.0]
    measured = [1.12 * s + 0.3 for s in sums]
    fit = fit_correction(sums, measured)
    assert fit.scale == pytest.approx(1.12) and fit.offset_ms == pytest.approx(0.3)
    assert fit.fit["fit_rmspe"] == pytest.approx(0.0, abs=1e-12)
    scale_only = fit_correction([2.0, 4.0], [2.2, 4.4])
    assert scale_only.scale == pytest.approx(1.1) and scale_only.offset_ms == 0.0
    assert Correction(1.1, 0.2).apply(10.0) == pytest.approx(11.2)
    with pytest.raises(ValueError):
        fit_correction([1.0], [0.0])


def test_table_backend_predicts_from_arch_files_and_exports(tmp_path, cifar):
    table = _table(cifar, scale=1.1)
    path = table.save(tmp_path / "t.csv")
    backend = backend_from_spec(f"table:{path}")
    assert isinstance(backend, TableBackend) and backend.spec == f"table:{path}"
    arch = cifar.sample(random.Random(1))
    expected = table.predict_ms(arch)
    result = backend.measure_arch(arch)
    assert result.source == "table" and result.median_ms == pytest.approx(expected)
    assert result.device == "0123456789abcdef"
    arch_file = tmp_path / "net.arch"
    arch_file.write_text(arch.encode() + "\n")
    assert backend.measure(arch_file).median_ms == pytest.approx(expected)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.tflite").write_bytes(b"not read")
    (bundle / "metadata.json").write_text(json.dumps({"arch": arch.encode()}))
    assert backend.measure(bundle / "model.tflite").median_ms == pytest.approx(expected)
    lonely = tmp_path / "lonely.tflite"
    lonely.write_bytes(b"x")
    with pytest.raises(MeasurementError, match="carries none"):
        backend.measure(lonely)
    fp = backend.fingerprint()
    assert fp["kind"] == "table" and fp["device"] == FINGERPRINT and len(fp["table_sha256"]) == 64


def test_table_backend_rejects_bad_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("hello\n")
    with pytest.raises(ValueError, match="not a pearl latency table"):
        backend_from_spec(f"table:{bad}")
    with pytest.raises(ValueError, match="cannot read latency table"):
        backend_from_spec(f"table:{tmp_path / 'missing.csv'}")


def test_predictor_imports_no_torch():
    code = (
        "import sys, latency_tables.table, device_bench.table_backend\n"
        "heavy = [m for m in ('torch', 'ai_edge_litert', 'litert_torch', 'onnxruntime') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_shipped_tables_load_and_cover_their_space():
    folder = Path(__file__).resolve().parents[1] / "latency_tables"
    shipped = sorted(folder.glob("*.csv"))
    if not shipped:
        pytest.skip("no shipped tables in latency_tables/")
    from device_bench.table_build import space_from_header

    for path in shipped:
        table = LatencyTable.load(path)
        assert table.header["format_version"] == FORMAT_VERSION
        space = space_from_header(table.space)
        assert set(space_keys(space)) == set(table.entries), path.name
        # whole networks run 0-30% slower than the sum of their isolated layers
        for arch in (space.sample(random.Random(seed)) for seed in range(5)):
            assert 0.95 <= table.predict_ms(arch) / table.sum_ms(arch) <= 1.3, path.name
        assert table.header["build_seconds"] > 0 and table.correction.fit["networks"] >= 10


def test_host_clock_counts_compute_not_waiting():
    """Table timings on the host use the invoking thread's CPU time: time spent waiting
    (descheduled on a shared machine; here: sleeping) is not counted, computing is."""
    import time

    from device_bench.host import MeasureSettings, time_rounds
    from device_bench.measure_worker import batch_backend
    from device_bench.table_measure import combine

    settings = MeasureSettings(warmup_runs=0, min_runs=5, max_runs=5, min_seconds=0.0)
    clock = batch_backend("host:tflite", settings).sample_clock
    slept, _ = time_rounds(lambda: time.sleep(0.003), settings, sample_clock=clock)
    assert len(slept) == 5 and max(slept) < 1.0  # 3 ms of wall time each, ~0 CPU

    def busy() -> None:
        end = time.thread_time() + 0.002
        while time.thread_time() < end:
            pass

    worked, _ = time_rounds(busy, settings, sample_clock=clock)
    assert min(worked) >= 1.9

    from device_bench.measurement import summarize

    passes = [summarize(v, source="host", device="d") for v in ([2.0, 2.2], [1.9, 2.5], [2.1])]
    entry = combine(passes)
    assert entry["min_ms"] == 1.9 and entry["passes"] == 3 and entry["runs"] == 5
    assert entry["pass_spread"] == pytest.approx((2.1 - 1.9) / 2.0)
