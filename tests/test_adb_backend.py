"""End to end through the loopback ADB device: `AdbBackend` (connect, probe, push, taskset,
benchmark_model, parse), `pearl bench --device adb:...`, `pearl devices`, the device pool and
every fault the issue lists.  The loopback's benchmark_model really times the pushed file with
LiteRT, so its median can be compared with an independent host timing."""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from loopback_adbd import (
    Cooling,
    DeviceScript,
    Faults,
    LoopbackDevice,
    conv_net_tflite,
    fake_aarch64_binary,
)

from android_runner.connection import ConnectionSettings
from android_runner.runner import RunOptions
from device_bench.cache import MeasurementCache, measure_cached
from device_bench.measurement import LatencyBackend, MeasurementError, fingerprint_id
from device_bench.phone import AdbBackend, DeviceDroppedError, PhoneOptions, PhoneSettings
from device_bench.pool import DevicePool, PoolExhaustedError, PoolJobError

QUICK = PhoneSettings(
    RunOptions(warmup_runs=3, warmup_min_secs=0, num_runs=30, min_secs=0.1, max_secs=5),
    min_invocations=1,
    max_invocations=1,
)
OPTIONS = PhoneOptions(
    retries=1,
    retry_backoff_s=0.1,
    thermal_poll_s=0.2,
    thermal_timeout_s=5,
    run_timeout_s=30,
    connection=ConnectionSettings(connect_timeout_s=3, auth_timeout_s=3, command_timeout_s=10),
)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """Three small real .tflite files (conv nets of different widths), converted once."""
    import torch

    folder = tmp_path_factory.mktemp("adb_models")
    torch.manual_seed(0)
    return {
        name: conv_net_tflite(folder / f"{name}.tflite", width, size)
        for name, width, size in (("mid", 32, 40), ("small", 8, 32), ("tiny", 4, 16))
    }


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch, adb_key):
    """Every test: its own ADB key, measurement cache and (fake) benchmark_model binary; the
    loopback phone itself is conftest's `device`."""
    monkeypatch.setenv("PEARL_CACHE_DIR", str(tmp_path / "cache"))
    binary = tmp_path / "android_aarch64_benchmark_model"
    fake_aarch64_binary(binary)
    monkeypatch.setenv("PEARL_BENCHMARK_MODEL", str(binary))
    return binary


def quick(**changes) -> PhoneSettings:
    """QUICK with some fields changed (benchmark_model flags or invocation protocol)."""
    return PhoneSettings.from_dict({**QUICK.to_dict(), **changes})


def backend_for(dev, settings=QUICK, options=OPTIONS, **kwargs) -> AdbBackend:
    return AdbBackend(dev.spec, settings, options=options, **kwargs)


def _independent_median_ms(path: Path, runs: int = 300) -> float:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.ones(detail["shape"], np.float32))
    for _ in range(20):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def test_phone_measurement_matches_an_independent_timing(device, models):
    path = models["mid"]
    with backend_for(device, quick(num_runs=200)) as backend:
        assert isinstance(backend, LatencyBackend)
        before = _independent_median_ms(path)
        m = backend.measure(path)
        after = _independent_median_ms(path)
        fingerprint = backend.fingerprint()
    theirs = (before + after) / 2
    assert 1 / 1.5 < m.median_ms / theirs < 1.5, (m, before, after)
    assert m.source == "device" and m.device == fingerprint_id(fingerprint)
    assert m.runs >= 200 and 0 < m.min_ms <= m.median_ms <= m.p90_ms
    assert fingerprint["model"] == "Loopback Phone 855" and fingerprint["cores"] == [7]
    assert device.taskset_masks == ["80"]  # pinned to the prime core, from cpuinfo_max_freq
    run_line = [line for line in device.command_log if "benchmark_model" in line][-1]
    assert "--num_threads=1" in run_line and "--num_runs=200" in run_line
    # close() removed the pushed model, kept the binary
    assert not (device.sandbox / "pearl" / "models").exists()
    assert (device.sandbox / "pearl" / "benchmark_model").is_file()


def test_invocations_repeat_until_they_agree(device, models):
    def settings(target):
        changes = {"min_invocations": 2, "max_invocations": 3, "num_runs": 10}
        return quick(**changes, spread_target=target)

    with backend_for(device, settings(10.0)) as backend:
        m = backend.measure(models["tiny"])
    assert device.benchmark_runs == 2 and m.runs >= 20  # agreed at once: min_invocations
    with backend_for(device, settings(0.0)) as backend:
        m = backend.measure(models["tiny"])
    runs = device.benchmark_runs - 2
    # only identical medians stop before the cap of 3
    assert runs == 3 or (runs == 2 and m.spread == 0.0)


def test_two_threads_pin_to_two_cluster(device, models):
    settings = quick(threads=2, num_runs=10)
    with backend_for(device, settings) as backend:
        backend.measure(models["tiny"])
    assert device.taskset_masks == ["f0"]  # prime + gold cluster: 4 cores for 2 threads


def run_cli(*args):
    from pipeline.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def test_pearl_bench_on_the_phone_and_from_the_cache(device, models, tmp_path):
    args = ("bench", models["small"], "--device", device.spec, "--runs", "20", "--json")
    first = run_cli(*args)
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert {"median_ms", "p90_ms", "std_ms", "runs", "source", "device"} <= data.keys()
    assert data["source"] == "device" and data["cached"] is False and data["runs"] >= 40
    runs_after_first = device.benchmark_runs
    started = time.monotonic()
    second = run_cli(*args)
    elapsed = time.monotonic() - started
    assert json.loads(second.stdout)["cached"] is True, second.output
    assert json.loads(second.stdout)["median_ms"] == data["median_ms"]
    assert device.benchmark_runs == runs_after_first  # nothing ran on the phone again
    assert elapsed < 5  # connect + probe + hash only (loose: the machine is shared)
    table = run_cli("bench", models["small"], "--device", device.spec, "--runs", "20")
    assert "median" in table.stdout and "(estimated)" in table.stdout


def test_pearl_bench_phone_errors(device, models, tmp_path, monkeypatch):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx")
    wrong = run_cli("bench", onnx, "--device", device.spec)
    assert wrong.exit_code == 2 and ".tflite" in wrong.output
    monkeypatch.delenv("PEARL_BENCHMARK_MODEL")
    missing = run_cli("bench", models["small"], "--device", device.spec)
    assert missing.exit_code == 1 and "PEARL_BENCHMARK_MODEL" in missing.output
    absent = run_cli(
        "bench", models["small"], "--device", device.spec, "--benchmark-model", tmp_path / "nope"
    )
    assert absent.exit_code == 1 and "not found" in absent.output
    not_elf = tmp_path / "benchmark_model.sh"
    not_elf.write_text("#!/bin/sh\necho hi\n")
    bad = run_cli("bench", models["small"], "--device", device.spec, "--benchmark-model", not_elf)
    assert bad.exit_code == 1 and "not an ELF executable" in bad.output
    assert "Traceback" not in bad.output


def test_pearl_devices_lists_the_phone(device):
    listed = run_cli("devices", "--json", "--connect", device.spec.removeprefix("adb:"))
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert len(rows) == 1 and rows[0]["model"] == "Loopback Phone 855"
    assert rows[0]["big_cores"] == [7] and rows[0]["abi"] == "arm64-v8a"
    text = run_cli("devices", "--connect", device.spec.removeprefix("adb:"))
    assert "Loopback Phone 855" in text.stdout and "2.84" in text.stdout
    device.stop()
    none = run_cli("devices", "--connect", device.spec.removeprefix("adb:"))
    assert none.exit_code == 0 and "adb devices" in none.output and none.stdout == ""


# --- faults ------------------------------------------------------------------------------------


def test_device_dropping_mid_run_is_retried(device, models):
    device.faults.drop_during_run = 1
    logs = []
    with backend_for(device, log=logs.append) as backend:
        m = backend.measure(models["tiny"])
    assert m.runs >= 1 and device.connection_count >= 2
    assert any("retrying" in line for line in logs)


def test_device_gone_for_good_raises_a_dropped_error(device, models):
    device.faults.drop_during_run = 1
    device.faults.gone_after_drop = True
    backend = backend_for(device)
    backend.fingerprint()
    started = time.monotonic()
    with pytest.raises(DeviceDroppedError, match="failed 2 time"):
        backend.measure(models["tiny"])
    assert time.monotonic() - started < 20
    backend.close()


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("crash", "status 139 \\(killed by SIGSEGV\\)"),
        ("garbage", "output could not be used"),
        ("load_error", "not a valid TFLite flatbuffer"),
    ],
)
def test_tool_failures_are_clear_and_leave_no_cache_entry(device, models, fault, message):
    device.faults.benchmark = fault
    cache = MeasurementCache()
    with backend_for(device) as backend:
        with pytest.raises(MeasurementError, match=message):
            measure_cached(backend, models["tiny"], cache)
    assert len(cache) == 0
    assert device.benchmark_runs == 1  # tool failures are not retried


def test_gpu_delegate_failure_is_clear(device, models):
    with backend_for(device, quick(use_gpu=True)) as backend:
        with pytest.raises(MeasurementError, match="could not apply the requested delegate"):
            backend.measure(models["tiny"])


def test_hanging_tool_hits_the_run_timeout(device, models):
    device.faults.benchmark = "hang"
    options = dataclasses.replace(OPTIONS, run_timeout_s=2.0)
    backend = backend_for(device, options=options)
    backend.fingerprint()
    started = time.monotonic()
    with pytest.raises(MeasurementError, match="did not finish within 2 s"):
        backend.measure(models["tiny"])
    assert time.monotonic() - started < 6
    device.faults.benchmark = "ok"  # the next job reconnects and works
    assert backend.measure(models["tiny"]).runs >= 1
    backend.close()


def test_rejected_key_is_not_retried(tmp_path, env, models):
    with LoopbackDevice(tmp_path / "sb", faults=Faults(accept_new_keys=False)) as dev:
        backend = backend_for(dev)
        with pytest.raises(MeasurementError, match="Allow") as info:
            backend.measure(models["tiny"])
        assert not isinstance(info.value, DeviceDroppedError)
        assert dev.connection_count == 1


def test_hot_device_is_measured_after_it_cools(tmp_path, env, models):
    script = DeviceScript.snapdragon_855()
    script.thermal = [("cpu-1-0-usr", Cooling(55.0, 40.0, 1.0))]
    with LoopbackDevice(tmp_path / "sb", script) as dev:
        logs = []
        with backend_for(dev, log=logs.append) as backend:
            m = backend.measure(models["tiny"])
    assert m.runs >= 1 and any("waiting to cool below 45" in line for line in logs)


# --- pool --------------------------------------------------------------------------------------


def test_pool_moves_jobs_off_a_phone_that_drops_out(tmp_path, env, models):
    paths = [models["tiny"], models["small"], models["tiny"]]
    with LoopbackDevice(tmp_path / "a") as a, LoopbackDevice(tmp_path / "b") as b:
        a.faults.drop_during_run = 1
        a.faults.gone_after_drop = True
        pool = DevicePool([backend_for(a), backend_for(b)])
        done = []
        results = pool.measure_many(paths, on_result=done.append)
        pool.close()
    assert len(results) == 3 and all(m.source == "device" for m in results)
    assert sorted(d.index for d in done) == [0, 1, 2]
    assert set(pool.removed) == {a.spec} and all(d.device == b.spec for d in done)
    assert b.benchmark_runs == 3


def test_pool_with_no_phone_left_says_so(tmp_path, env, models):
    with LoopbackDevice(tmp_path / "a") as a:
        a.faults.drop_during_run = 1
        a.faults.gone_after_drop = True
        pool = DevicePool([backend_for(a)])
        with pytest.raises(PoolExhaustedError, match="no device left.*tiny.tflite"):
            pool.measure_many([models["tiny"]])


def test_pool_reports_model_errors_per_job_and_uses_the_cache(tmp_path, env, models):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"definitely not a flatbuffer")
    cache = MeasurementCache()
    with LoopbackDevice(tmp_path / "a") as a, LoopbackDevice(tmp_path / "b") as b:
        pool = DevicePool([backend_for(a), backend_for(b)], cache=cache)
        with pytest.raises(PoolJobError, match="broken.tflite") as info:
            pool.measure_many([models["tiny"], broken])
        assert info.value.results[0] is not None and 1 in info.value.errors
        runs = a.benchmark_runs + b.benchmark_runs
        again = pool.measure_many([models["tiny"]])  # from the cache: no new run
        assert a.benchmark_runs + b.benchmark_runs == runs and again[0].source == "device"
        pool.close()
    assert len(cache) == 1


@pytest.mark.slow
def test_pearl_bench_exports_an_arch_then_times_it_on_the_phone(device):
    args = (
        "bench",
        "mobilenet_v2_0.35",
        "--input",
        "32",
        "--classes",
        "10",
        "--device",
        device.spec,
        "--runs",
        "20",
        "--json",
    )
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["source"] == "device" and data["model"].endswith("model.tflite")
    assert "exporting" in result.stderr
    again = json.loads(run_cli(*args).stdout)
    assert again["cached"] is True and again["model"] == data["model"]
    bad = run_cli("bench", "not_a_baseline", "--device", device.spec)
    assert bad.exit_code == 2 and "neither a baseline name" in bad.output
