"""Pure parts of the phone path: addresses, quoting, the probe parser, big-core selection,
thermal zones, ELF checks, turning benchmark_model statistics into a Measurement, the ADB key."""

from __future__ import annotations

import contextlib
import os
import shlex
import stat
import statistics

import pytest

from android_runner.benchmark_output import TimingStats
from android_runner.connection import DeviceAddress, join_command
from android_runner.elf import check_binary_for_abi, elf_abi
from android_runner.errors import BenchmarkToolError
from android_runner.probe import (
    PROBE_SCRIPT,
    cpu_mask,
    hottest_c,
    parse_cpu_list,
    parse_probe,
    select_cores,
)
from android_runner.runner import RunOptions, interpret_run
from device_bench.backends import backend_from_spec
from device_bench.cache import settings_json
from device_bench.host import MeasureSettings
from device_bench.measurement import MeasurementError, canonical_json
from device_bench.phone import (
    AdbBackend,
    PhoneSettings,
    combine_runs,
    resolve_benchmark_model,
)

# What PROBE_SCRIPT prints on a Pixel-4-like phone (Snapdragon 855: 4 x 1.79 GHz silver,
# 3 x 2.42 GHz gold, 1 x 2.84 GHz prime), written by hand in the formats of getprop, grep -H
# and the kernel's sysfs files.  Zone 3 reports a bogus value, zone 4 is in whole degrees.
PROBE_TEXT = """\
@@pearl:getprop
[ro.board.platform]: [msmnile]
[ro.build.fingerprint]: [google/flame/flame:13/TQ3A.230805.001/10316531:user/release-keys]
[ro.build.version.release]: [13]
[ro.build.version.sdk]: [33]
[ro.product.board]: [flame]
[ro.product.cpu.abi]: [arm64-v8a]
[ro.product.device]: [flame]
[ro.product.manufacturer]: [Google]
[ro.product.model]: [Pixel 4]
[ro.empty]: []
@@pearl:cpuinfo
processor\t: 0
BogoMIPS\t: 38.40

processor\t: 7
BogoMIPS\t: 38.40

Hardware\t: Qualcomm Technologies, Inc SM8150
@@pearl:possible
0-7
@@pearl:cpufreq
/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq:1785600
/sys/devices/system/cpu/cpu1/cpufreq/cpuinfo_max_freq:1785600
/sys/devices/system/cpu/cpu2/cpufreq/cpuinfo_max_freq:1785600
/sys/devices/system/cpu/cpu3/cpufreq/cpuinfo_max_freq:1785600
/sys/devices/system/cpu/cpu4/cpufreq/cpuinfo_max_freq:2419200
/sys/devices/system/cpu/cpu5/cpufreq/cpuinfo_max_freq:2419200
/sys/devices/system/cpu/cpu6/cpufreq/cpuinfo_max_freq:2419200
/sys/devices/system/cpu/cpu7/cpufreq/cpuinfo_max_freq:2841600
/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor:schedutil
/sys/devices/system/cpu/cpu4/cpufreq/scaling_governor:schedutil
/sys/devices/system/cpu/cpu7/cpufreq/scaling_governor:performance
@@pearl:thermal
/sys/class/thermal/thermal_zone0/type:battery
/sys/class/thermal/thermal_zone1/type:cpu-1-3-usr
/sys/class/thermal/thermal_zone2/type:xo-therm
/sys/class/thermal/thermal_zone3/type:bogus
/sys/class/thermal/thermal_zone4/type:soc
/sys/class/thermal/thermal_zone0/temp:48000
/sys/class/thermal/thermal_zone1/temp:41300
/sys/class/thermal/thermal_zone2/temp:35100
/sys/class/thermal/thermal_zone3/temp:-274000
/sys/class/thermal/thermal_zone4/temp:39
@@pearl:end
"""


def test_join_command_quotes_every_argument():
    argv = ["echo", "a b", "$(rm -rf /)", "x;y", "it's", "--graph=/data/local/tmp/m 1.tflite"]
    line = join_command(argv)
    assert shlex.split(line) == argv
    assert "$(rm" not in line.replace("'$(rm -rf /)'", "")
    with pytest.raises(ValueError):
        join_command([])


@pytest.mark.parametrize(
    ("text", "serial", "host", "port"),
    [
        ("adb:R58M123ABC", "R58M123ABC", None, None),
        ("adb:192.168.1.20:5555", None, "192.168.1.20", 5555),
        ("localhost:40001", None, "localhost", 40001),
        ("adb:[fe80::1]:5555", None, "fe80::1", 5555),
    ],
)
def test_device_address_parse(text, serial, host, port):
    address = DeviceAddress.parse(text)
    assert (address.serial, address.host, address.port) == (serial, host, port)
    assert DeviceAddress.parse(str(address)) == address


@pytest.mark.parametrize("bad", ["adb:", "adb:a:b:c", "adb:host:99999", "adb:two words"])
def test_device_address_errors_say_what_is_valid(bad):
    with pytest.raises(ValueError, match="adb:|port"):
        DeviceAddress.parse(bad)


def test_probe_parser_reads_a_phone():
    probe = parse_probe(PROBE_TEXT)
    assert (probe.manufacturer, probe.model, probe.abi) == ("Google", "Pixel 4", "arm64-v8a")
    assert (probe.android_version, probe.sdk, probe.board) == ("13", "33", "flame")
    assert probe.soc == "msmnile"  # no ro.soc.* props (Android < 12): the platform
    assert probe.cpu_count == 8
    assert [c.max_freq_khz for c in probe.cores] == [1785600] * 4 + [2419200] * 3 + [2841600]
    assert probe.cores[7].governor == "performance" and probe.cores[1].governor is None
    assert probe.governors == ("performance", "schedutil")
    assert probe.big_cores(1) == (7,) and probe.core_mask(1) == "80"
    assert probe.big_cores(2) == (4, 5, 6, 7) and probe.core_mask(4) == "f0"
    assert probe.big_cores(5) == tuple(range(8)) and probe.core_mask(8) == "ff"
    zones = {z.zone: z for z in probe.thermal}
    assert "thermal_zone3" not in zones  # -274 C is not a temperature
    assert zones["thermal_zone1"].temp_c == pytest.approx(41.3)
    assert zones["thermal_zone4"].temp_c == 39.0  # whole degrees stay degrees
    assert hottest_c(probe.thermal) == pytest.approx(41.3)  # the battery (48 C) is not a CPU
    fingerprint = probe.fingerprint()
    assert "thermal" not in fingerprint and fingerprint["model"] == "Pixel 4"
    assert probe.to_dict()["max_temp_c"] == pytest.approx(41.3)


def test_probe_parser_rejects_other_text():
    with pytest.raises(ValueError, match="probe"):
        parse_probe("/system/bin/sh: getprop: not found\n")
    no_abi = PROBE_TEXT.replace("[ro.product.cpu.abi]: [arm64-v8a]\n", "")
    with pytest.raises(ValueError, match="cpu.abi"):
        parse_probe(no_abi)


def test_probe_script_is_fixed_text_with_unquoted_globs():
    assert "cpu*/cpufreq/cpuinfo_max_freq" in PROBE_SCRIPT and "'" not in PROBE_SCRIPT


def test_core_selection_and_masks():
    assert select_cores({0: 100, 1: 100, 2: 200, 3: 200}, 4, 1) == (2, 3)
    assert select_cores({0: 100, 1: None}, 2, 1) == (0,)
    assert select_cores({}, 6, 1) == tuple(range(6))  # unknown frequencies: every core
    assert cpu_mask([0, 1, 2, 3]) == "f" and cpu_mask([9]) == "200"
    assert parse_cpu_list("0-3,6") == [0, 1, 2, 3, 6]
    with pytest.raises(ValueError):
        select_cores({0: 1}, 1, 0)
    with pytest.raises(ValueError):
        parse_cpu_list("zero")


def _elf(machine: int, bits: int = 64) -> bytes:
    import struct

    return b"\x7fELF" + bytes([bits // 32, 1, 1, 0]) + bytes(8) + struct.pack("<HH", 2, machine)


def test_elf_checks():
    assert elf_abi(_elf(183)) == "arm64-v8a" and elf_abi(_elf(62)) == "x86_64"
    assert elf_abi(b"#!/bin/sh\n" + bytes(20)) is None
    check_binary_for_abi(_elf(183), "arm64-v8a", "bm")
    check_binary_for_abi(_elf(40, 32), "arm64-v8a", "bm")  # 32-bit ARM runs on arm64 phones
    with pytest.raises(ValueError, match="built for x86_64 but the phone's ABI is arm64-v8a"):
        check_binary_for_abi(_elf(62), "arm64-v8a", "bm")
    with pytest.raises(ValueError, match="not an ELF executable"):
        check_binary_for_abi(b"hello world, not a binary", "arm64-v8a", "bm")


def test_combine_runs_from_tool_statistics():
    runs = [[1000 + 10 * i for i in range(50)], [1100 + 10 * i for i in range(50)]]
    stats = [TimingStats.from_samples(r) for r in runs]
    m = combine_runs(stats, device="dev")
    assert m.source == "device" and m.device == "dev" and m.runs == 100
    assert m.median_ms == pytest.approx(statistics.median([s.median_us for s in stats]) / 1000)
    assert m.min_ms == 1.0
    everything = runs[0] + runs[1]
    assert m.std_ms == pytest.approx(statistics.pstdev(everything) / 1000, rel=0.02)
    assert m.median_ms <= m.p90_ms <= max(everything) / 1000
    assert m.spread == pytest.approx(100 / statistics.median([s.median_us for s in stats]))
    no_percentiles = [TimingStats.from_samples(r, percentiles=False) for r in runs]
    m2 = combine_runs(no_percentiles, device="dev")
    assert m2.median_ms == pytest.approx(statistics.median([s.avg_us for s in stats]) / 1000)
    single = combine_runs([TimingStats.from_samples([2000] * 5)], device="d")
    assert (single.median_ms, single.p90_ms, single.std_ms, single.spread) == (2.0, 2.0, 0.0, 0.0)
    with pytest.raises(MeasurementError, match="no timed run"):
        combine_runs([TimingStats.empty()], device="d")


def test_interpret_run_turns_failures_into_clear_errors():
    with pytest.raises(BenchmarkToolError, match="could not be started.*arm64-v8a"):
        interpret_run("/system/bin/sh: ./bm: not found", 127, binary="./bm", abi="arm64-v8a")
    with pytest.raises(BenchmarkToolError, match="status 139 \\(killed by SIGSEGV\\)"):
        interpret_run("INFO: STARTING!\nSegmentation fault", 139, binary="b", abi="a")
    with pytest.raises(BenchmarkToolError, match="could not be used"):
        interpret_run("lorem ipsum", 0, binary="b", abi="a")
    failed = "INFO: STARTING!\nERROR: Could not open '/x.tflite'.\nERROR: Benchmarking failed.\n"
    with pytest.raises(BenchmarkToolError, match="could not open the model file"):
        interpret_run(failed, 1, binary="b", abi="a")


def test_run_options_flags():
    flags = RunOptions(threads=2, use_gpu=True, num_runs=7).flags("/d/m.tflite")
    assert "--graph=/d/m.tflite" in flags and "--num_threads=2" in flags
    assert "--num_runs=7" in flags and "--use_gpu=true" in flags
    assert "--use_gpu=true" not in RunOptions().flags("/m")


def test_adb_key_is_created_private_and_reused(tmp_path, monkeypatch):
    from android_runner.adb_key import default_key_path, ensure_adb_key, load_signer

    monkeypatch.setenv("PEARL_ADB_KEY", str(tmp_path / "dot-android" / "adbkey"))
    path = default_key_path()
    assert ensure_adb_key() == path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    public = path.with_name("adbkey.pub").read_bytes()
    before = path.read_bytes()
    ensure_adb_key()
    assert path.read_bytes() == before and path.with_name("adbkey.pub").read_bytes() == public
    signature = load_signer().Sign(b"\x01" * 20)
    assert len(signature) == 256
    path.with_name("adbkey.pub").unlink()  # re-derived from the private key
    ensure_adb_key()
    assert path.with_name("adbkey.pub").read_bytes().split(b" ")[0] == public.split(b" ")[0]


def test_benchmark_model_path_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("PEARL_BENCHMARK_MODEL", raising=False)
    with pytest.raises(MeasurementError, match="PEARL_BENCHMARK_MODEL"):
        resolve_benchmark_model(None)
    with pytest.raises(MeasurementError, match="not found"):
        resolve_benchmark_model(tmp_path / "absent")
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(_elf(183))
    monkeypatch.setenv("PEARL_BENCHMARK_MODEL", str(binary))
    assert resolve_benchmark_model(None) == binary


def test_backend_from_spec_gives_phone_backends(tmp_path, monkeypatch):
    monkeypatch.delenv("PEARL_BENCHMARK_MODEL", raising=False)
    with pytest.raises(MeasurementError, match="benchmark_model"):
        backend_from_spec("adb:R58M123")
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(_elf(183))
    usb = backend_from_spec("adb:R58M123", MeasureSettings(threads=2), benchmark_model=binary)
    assert isinstance(usb, AdbBackend) and usb.spec == "adb:R58M123"
    assert usb.settings.run.threads == 2 and usb.settings.run.num_runs == MeasureSettings().min_runs
    tcp = backend_from_spec("adb:10.0.0.2:5555", benchmark_model=binary)
    assert tcp.address.is_tcp and tcp.spec == "adb:10.0.0.2:5555"
    with pytest.raises(ValueError, match="adb:SERIAL"):
        backend_from_spec("adb:a b", benchmark_model=binary)


def test_phone_settings_are_validated():
    with pytest.raises(ValueError, match="min_invocations"):
        PhoneSettings(min_invocations=3, max_invocations=2)
    with pytest.raises(ValueError, match="threads"):
        PhoneSettings.from_dict({"threads": 0})


def test_phone_settings_keep_their_flat_cache_form():
    """The measurement cache keys on `to_dict`: the same flat mapping as before benchmark_model's
    flags moved into `PhoneSettings.run`, so existing cache entries still hit."""
    flat = {
        "threads": 1,
        "use_gpu": False,
        "warmup_runs": 5,
        "warmup_min_secs": 0.5,
        "num_runs": 50,
        "min_secs": 1.0,
        "max_secs": 60.0,
        "min_invocations": 2,
        "max_invocations": 4,
        "spread_target": 0.02,
        "thermal_limit_c": 45.0,
    }
    assert PhoneSettings().to_dict() == flat
    assert settings_json(PhoneSettings()) == canonical_json(flat)
    changed = PhoneSettings.from_dict({**flat, "num_runs": 7, "max_invocations": 3})
    assert changed.run.num_runs == 7 and changed.max_invocations == 3
    assert PhoneSettings.from_dict(changed.to_dict()) == changed
    mapped = PhoneSettings.from_measure_settings(MeasureSettings(threads=3))
    assert mapped.to_dict() == {
        **flat,
        "threads": 3,
        "warmup_runs": 10,
        "num_runs": 100,
        "max_secs": 10.0,
    }


def test_adb_server_device_list_and_held_device_hint():
    """`adb_server_devices` speaks the adb server's host protocol (`host:devices`)."""
    import socket
    import threading

    from android_runner.connection import adb_server_devices

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    requests = []

    def serve():
        conn, _ = listener.accept()
        with conn:
            requests.append(conn.recv(64))
            payload = b"R58M123ABC\tdevice\n0A1B2C\tunauthorized\n"
            conn.sendall(b"OKAY" + b"%04x" % len(payload) + payload)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    rows = adb_server_devices(port=port, timeout_s=2)
    thread.join(2)
    listener.close()
    assert requests == [b"000chost:devices"]
    assert rows == [("R58M123ABC", "device"), ("0A1B2C", "unauthorized")]
    assert adb_server_devices(port=port, timeout_s=0.2) is None  # nothing listens any more


def test_usb_support_reports_a_reason():
    from android_runner.connection import usb_support

    available, reason = usb_support()
    assert isinstance(available, bool) and "USB" in reason
    if not available:
        assert "libusb" in reason and "adb:HOST:PORT" in reason


def test_busy_usb_device_names_the_adb_server():
    from android_runner.connection import AdbConnection
    from android_runner.errors import UsbUnavailableError

    error = AdbConnection("R58M123ABC")._transport_error(
        OSError("LIBUSB_ERROR_BUSY [-6]"), "connect"
    )
    assert isinstance(error, UsbUnavailableError)
    assert "adb kill-server" in str(error) and "adb tcpip 5555" in str(error)


def test_ranking_uses_min_for_measurements_and_median_for_tables():
    from device_bench.measurement import Measurement
    from device_bench.ranking import ranking_latency_ms

    for source in ("host", "device"):
        assert ranking_latency_ms(Measurement(2.0, 3.0, 0.5, 1.5, 10, source, "d")) == 1.5
    assert ranking_latency_ms(Measurement(2.0, 2.0, 0.0, 2.0, 1, "table", "t")) == 2.0


def test_corrupt_adb_key_is_a_clear_error(tmp_path, monkeypatch):
    from android_runner.connection import AdbConnection
    from android_runner.errors import AdbError

    key = tmp_path / "adbkey"
    key.write_text("not a key")
    monkeypatch.setenv("PEARL_ADB_KEY", str(key))
    with pytest.raises(AdbError, match="cannot use the ADB key .*adbkey.*move it away"):
        AdbConnection("127.0.0.1:9").connect()


@contextlib.contextmanager
def _not_adbd(reply: bytes):
    """A TCP server on 127.0.0.1 that is not adbd: it accepts, answers the client's first
    message with `reply` (none: closes at once) and closes; it stops with the block, or by
    itself after 30 s."""
    import socket
    import threading
    import time

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    done = threading.Event()

    def serve():
        deadline = time.monotonic() + 30
        while not done.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                if reply:
                    conn.settimeout(5)
                    conn.recv(4096)  # the client's CNXN
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join(5)
        listener.close()


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"", "it closed the connection"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4, "its reply is not the ADB protocol"),
    ],
)
def test_devices_connect_to_something_that_is_not_adbd(reply, reason, adb_key):
    from click.testing import CliRunner

    from pipeline.cli import cli

    with _not_adbd(reply) as port:
        result = CliRunner().invoke(cli, ["devices", "--connect", f"127.0.0.1:{port}"])
    assert result.exit_code == 0, result.output
    assert f"127.0.0.1:{port} did not answer as an ADB device ({reason}" in result.stderr
    assert "adb tcpip 5555" in result.stderr and "Wireless debugging" in result.stderr
    assert "Error" not in result.stderr and "Errno" not in result.stderr  # no raw exception
