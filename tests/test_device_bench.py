"""device_bench: measurements, host backends on real exported models, the cache, specs and
`pearl bench`.  The models (MobileNetV2-0.35, 32 px, 10 classes) are exported once per session."""

from __future__ import annotations

import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from device_bench.backends import VALID_FORMS, BackendSpec, backend_from_spec
from device_bench.cache import CacheError, MeasurementCache, cache_key, key_for, measure_cached
from device_bench.host import HostOnnxBackend, HostTFLiteBackend, MeasureSettings
from device_bench.measurement import (
    LatencyBackend,
    Measurement,
    MeasurementError,
    fingerprint_id,
    summarize,
)
from pipeline.cli_bench import bench_command

# quick settings: enough runs for a stable median on a ~1 ms model, bounded to ~2 s
FAST = MeasureSettings(warmup_runs=5, min_runs=30, max_runs=400, max_seconds=2.0, min_seconds=0)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    import litert_torch
    import torch

    from models.baselines import resolve_arch
    from models.builder import build

    folder = tmp_path_factory.mktemp("device_bench_models")
    torch.manual_seed(0)
    model = build(resolve_arch("mobilenet_v2_0.35", 32, 10)).eval()
    x = torch.randn(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
        torch.onnx.export(
            model,
            x,
            folder / "net.onnx",
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
        )
    litert_torch.convert(model, (x,)).export(str(folder / "net.tflite"))
    return folder


@pytest.fixture(scope="session")
def tflite_path(models_dir) -> Path:
    return models_dir / "net.tflite"


@pytest.fixture(scope="session")
def onnx_path(models_dir) -> Path:
    return models_dir / "net.onnx"


class CountingTFLite(HostTFLiteBackend):
    """A real host backend that counts how often it actually times a model."""

    def __init__(self, settings=None):
        super().__init__(settings)
        self.calls = 0

    def measure(self, path):
        self.calls += 1
        return super().measure(path)


# --- pure parts -------------------------------------------------------------------------------


def test_summarize_computes_the_statistics():
    m = summarize(
        [4.0, 1.0, 3.0, 2.0, 5.0], source="host", device="abc", round_medians_ms=[2.0, 2.2]
    )
    assert (m.median_ms, m.min_ms, m.runs, m.source, m.device) == (3.0, 1.0, 5, "host", "abc")
    assert m.p90_ms == pytest.approx(4.6)
    assert m.std_ms == pytest.approx(statistics.stdev([1, 2, 3, 4, 5]))
    assert m.spread == pytest.approx(0.2 / 2.1)
    assert summarize([2.0], source="table", device="d").spread == 0.0
    with pytest.raises(ValueError):
        summarize([], source="host", device="d")


def test_measurement_round_trips_and_validates():
    m = summarize([1.0, 2.0, 3.0], source="device", device="x", round_medians_ms=[1, 1.1])
    assert Measurement.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    assert Measurement.from_dict({**m.to_dict(), "cached": True}) == m
    with pytest.raises(ValueError, match="source"):
        Measurement(1, 1, 0, 1, 1, "phone", "x")
    with pytest.raises(ValueError, match="median_ms"):
        Measurement.from_dict({"runs": 1, "source": "host", "device": "x"})


def test_fingerprint_id_is_stable_and_sensitive():
    a = {"cpu": "x", "threads": 1, "runtime": "r"}
    assert fingerprint_id(a) == fingerprint_id(dict(reversed(list(a.items()))))
    assert fingerprint_id(a) != fingerprint_id({**a, "threads": 2})
    assert len(fingerprint_id(a)) == 16


def test_host_fingerprints_describe_the_machine_and_runtime():
    tfl = HostTFLiteBackend(FAST).fingerprint()
    ort = HostOnnxBackend(MeasureSettings(threads=2)).fingerprint()
    assert tfl["runtime"] == "ai-edge-litert" and tfl["delegate"] == "xnnpack"
    assert ort["runtime"] == "onnxruntime" and ort["delegate"] == "CPUExecutionProvider"
    assert ort["threads"] == 2 and tfl["threads"] == 1
    assert tfl["cpu"] and tfl["cores"] >= 1 and tfl["runtime_version"][0].isdigit()
    assert isinstance(HostTFLiteBackend(), LatencyBackend)


def test_backend_from_spec():
    assert isinstance(backend_from_spec("host:tflite", FAST), HostTFLiteBackend)
    assert backend_from_spec("host:onnx", FAST).settings is FAST
    # adb:... backends: tests/test_adb_units.py; table:... backends: tests/test_tables*.py
    with pytest.raises(ValueError, match="cannot read latency table pixel7.json"):
        backend_from_spec("table:pixel7.json")
    with pytest.raises(ValueError, match="host:tflite, host:onnx, adb:SERIAL"):
        backend_from_spec("gpu:0")


@pytest.mark.parametrize(
    ("text", "canonical", "artifact", "suffix"),
    [
        ("host:tflite", "host:tflite", "tflite", ".tflite"),
        (" HOST:ONNX ", "host:onnx", "onnx", ".onnx"),
        ("adb:R58M123", "adb:R58M123", "tflite", ".tflite"),
        ("ADB:10.0.0.2:5555", "adb:10.0.0.2:5555", "tflite", ".tflite"),
        ("table:tables/pixel7.csv", "table:tables/pixel7.csv", None, None),
    ],
)
def test_backend_spec_parses_every_form(text, canonical, artifact, suffix):
    spec = BackendSpec.parse(text)
    assert str(spec) == canonical and BackendSpec.parse(str(spec)) == spec
    assert (spec.artifact_format, spec.file_suffix) == (artifact, suffix)
    assert spec.times_files is not spec.is_table
    assert spec.is_phone is (spec.kind == "adb")


def test_backend_spec_errors_list_the_valid_forms(tmp_path):
    for bad in ("gpu:0", "host:tensorrt", "table:", "adb:", "phone"):
        with pytest.raises(ValueError, match="valid forms: " + ", ".join(VALID_FORMS)):
            BackendSpec.parse(bad)
    with pytest.raises(ValueError, match="adb:SERIAL"):
        BackendSpec.parse("adb:two words")
    assert BackendSpec.parse("adb:[fe80::1]:5555").address.port == 5555
    table = BackendSpec.parse("table:t.csv").with_absolute_path(tmp_path)
    assert str(table) == f"table:{tmp_path.resolve() / 't.csv'}"
    host = BackendSpec.parse("host:onnx")
    assert host.with_absolute_path(tmp_path) == host
    assert str(BackendSpec.for_file("m.ONNX")) == "host:onnx"
    assert BackendSpec.for_file("m.txt") is None


def test_settings_are_validated():
    with pytest.raises(ValueError, match="min_runs"):
        MeasureSettings(min_runs=50, max_runs=10)
    with pytest.raises(ValueError, match="threads"):
        MeasureSettings(threads=0)


# --- real measurements ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tflite", "onnx"])
def test_host_measurement_is_sane(kind, models_dir):
    backend = backend_from_spec(f"host:{kind}", FAST)
    m = backend.measure(models_dir / f"net.{kind}")
    assert m.source == "host" and m.device == fingerprint_id(backend.fingerprint())
    assert 0 < m.min_ms <= m.median_ms <= m.p90_ms < 1000
    assert FAST.min_runs <= m.runs <= FAST.max_runs  # a ~1 ms model reaches min_runs in 2 s
    assert m.std_ms >= 0 and m.spread >= 0


def test_run_caps_are_respected(tflite_path):
    never_settles = MeasureSettings(warmup_runs=1, min_runs=5, max_runs=25, spread_target=0.0)
    assert HostTFLiteBackend(never_settles).measure(tflite_path).runs == 25
    settles = MeasureSettings(
        warmup_runs=1, min_runs=20, max_runs=1000, spread_target=10.0, min_seconds=0
    )
    assert HostTFLiteBackend(settles).measure(tflite_path).runs == 20


@pytest.mark.parametrize(
    ("kind", "timer"),
    [("tflite", "_time_tflite_independently"), ("onnx", "_time_onnx_independently")],
)
def test_median_agrees_with_an_independent_timing(kind, timer, models_dir):
    path = models_dir / f"net.{kind}"
    ours = backend_from_spec(f"host:{kind}", FAST).measure(path).median_ms
    theirs = globals()[timer](path)
    assert 1 / 1.5 < ours / theirs < 1.5, (ours, theirs)


def _median_of_timed(call, runs=200) -> float:
    for _ in range(20):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _time_tflite_independently(path: Path) -> float:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.ones(detail["shape"], np.float32))
    return _median_of_timed(interpreter.invoke)


def _time_onnx_independently(path: Path) -> float:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {"input": np.ones((1, 3, 32, 32), np.float32)}
    return _median_of_timed(lambda: session.run(None, feeds))


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend_cls", [HostTFLiteBackend, HostOnnxBackend])
def test_missing_wrong_type_and_corrupt_files_raise_clear_errors(backend_cls, models_dir, tmp_path):
    backend = backend_cls(FAST)
    suffix = ".tflite" if backend_cls is HostTFLiteBackend else ".onnx"
    other = models_dir / ("net.onnx" if suffix == ".tflite" else "net.tflite")

    with pytest.raises(MeasurementError, match="not found") as info:
        backend.measure(tmp_path / f"absent{suffix}")
    assert f"absent{suffix}" in str(info.value)

    with pytest.raises(MeasurementError, match=f"not a \\{suffix} file"):
        backend.measure(other)

    corrupt = tmp_path / f"corrupt{suffix}"
    corrupt.write_bytes((models_dir / f"net{suffix}").read_bytes()[:2000])
    with pytest.raises(MeasurementError, match="corrupt or truncated; re-export") as info:
        backend.measure(corrupt)
    assert str(corrupt) in str(info.value)
    assert isinstance(info.value, RuntimeError)


# --- cache ------------------------------------------------------------------------------------


def test_second_measurement_comes_from_the_cache(tflite_path, tmp_path):
    cache = MeasurementCache(tmp_path / "c.sqlite")
    backend = CountingTFLite(FAST)
    first = measure_cached(backend, tflite_path, cache)
    second = measure_cached(backend, tflite_path, cache)
    assert (first.cached, second.cached, backend.calls) == (False, True, 1)
    assert second.measurement == first.measurement
    # a fresh cache object on the same file (e.g. the next process) also hits
    assert measure_cached(CountingTFLite(FAST), tflite_path, MeasurementCache(cache.path)).cached
    assert len(cache) == 1
    # without a cache it always measures
    assert not measure_cached(backend, tflite_path, None).cached and backend.calls == 2


def test_key_changes_with_settings_file_content_and_device(tflite_path, tmp_path):
    key, _ = key_for(HostTFLiteBackend(FAST), tflite_path)
    assert key_for(HostTFLiteBackend(FAST), tflite_path)[0] == key
    other_settings = MeasureSettings(**{**FAST.to_dict(), "max_runs": 401})
    assert key_for(HostTFLiteBackend(other_settings), tflite_path)[0] != key
    two_threads = MeasureSettings(**{**FAST.to_dict(), "threads": 2})
    assert key_for(HostTFLiteBackend(two_threads), tflite_path)[0] != key
    edited = tmp_path / "net.tflite"
    shutil.copyfile(tflite_path, edited)
    assert key_for(HostTFLiteBackend(FAST), edited)[0] == key  # same bytes, other path
    with open(edited, "ab") as handle:
        handle.write(b"\0")
    assert key_for(HostTFLiteBackend(FAST), edited)[0] != key
    assert cache_key("a", "dev1", FAST) != cache_key("a", "dev2", FAST)


class InterruptedCache(MeasurementCache):
    """Aborts SQLite in the middle of the next write (as a crash would)."""

    armed = False

    def _connect(self):
        connection = super()._connect()
        calls = iter(range(10**6))
        # a non-zero return from the progress handler interrupts the running statement
        connection.set_progress_handler(lambda: int(self.armed and next(calls) >= 3), 1)
        return connection


def test_an_interrupted_write_leaves_no_entry(tmp_path):
    good = summarize([1.0, 2.0], source="host", device="d")
    newer = summarize([5.0, 6.0], source="host", device="d")
    cache = InterruptedCache(tmp_path / "c.sqlite")
    cache.put("old", good)
    cache.armed = True
    with pytest.raises(CacheError, match="interrupt"):
        cache.put("new", newer)
    with pytest.raises(CacheError, match="interrupt"):
        cache.put("old", newer)  # a replace that fails keeps the old value
    fresh = MeasurementCache(cache.path)
    assert fresh.get("new") is None and fresh.get("old") == good and len(fresh) == 1
    conn = sqlite3.connect(cache.path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PEARL_CACHE_DIR", str(tmp_path / "x"))
    assert MeasurementCache().path == tmp_path / "x" / "measurements.sqlite"
    monkeypatch.delenv("PEARL_CACHE_DIR")
    assert MeasurementCache().path == Path.home() / ".cache" / "pearl" / "measurements.sqlite"


# --- CLI --------------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, tmp_path):
    monkeypatch.setenv("PEARL_CACHE_DIR", str(tmp_path / "cache"))

    def run(*args):
        return CliRunner().invoke(bench_command, [str(a) for a in args])

    return run


def test_cli_json_output_and_cache(cli, onnx_path, tmp_path):
    first = cli(onnx_path, "--device", "host:onnx", "--runs", "60", "--json")
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    required = {"median_ms", "p90_ms", "std_ms", "min_ms", "runs", "source", "device", "spread"}
    assert required <= data.keys() and data["cached"] is False
    assert data["source"] == "host" and 0 < data["median_ms"] <= data["p90_ms"]
    assert 1 <= data["runs"] <= 60
    again = json.loads(cli(onnx_path, "--runs", "60", "--json").stdout)  # device from suffix
    assert again["cached"] is True and again["median_ms"] == data["median_ms"]
    fresh = json.loads(cli(onnx_path, "--runs", "60", "--json", "--no-cache").stdout)
    assert fresh["cached"] is False


def test_cli_table_output(cli, tflite_path):
    result = cli(tflite_path, "--device", "host:tflite", "--runs", "30", "--no-cache")
    assert result.exit_code == 0, result.output
    assert "median" in result.stdout and "p90" in result.stdout and " ms" in result.stdout
    assert "timing" in result.stderr and "timing" not in result.stdout


def test_cli_errors_are_clear(cli, tflite_path, onnx_path, tmp_path):
    mismatch = cli(onnx_path, "--device", "host:tflite")
    assert mismatch.exit_code == 2 and "use --device host:onnx" in mismatch.output
    missing = cli(tmp_path / "nope.tflite")
    assert missing.exit_code == 2 and "does not exist" in missing.output
    bad_spec = cli(tflite_path, "--device", "phone")
    assert bad_spec.exit_code == 2 and "valid forms" in bad_spec.output
    phone = cli(tflite_path, "--device", "adb:R58M", "--benchmark-model", tmp_path / "none")
    assert phone.exit_code == 1 and "benchmark_model binary" in phone.output
    corrupt = tmp_path / "bad.tflite"
    corrupt.write_bytes(b"not a flatbuffer at all")
    broken = cli(corrupt, "--no-cache")
    assert broken.exit_code == 1 and "re-export" in broken.output
    assert "Traceback" not in broken.output and broken.exception.__class__ is SystemExit


def test_bench_module_imports_no_runtime():
    code = (
        "import sys\nimport pipeline.cli_bench\n"
        "heavy = ('torch', 'onnxruntime', 'litert_torch', 'adb_shell', 'ai_edge_litert')\n"
        "print('HEAVY', [m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout
