"""The ADB client side (adb-shell through android_runner) against the loopback device, which
speaks the device side of the real protocol: authentication with real RSA signatures,
checksummed packets, shell: and sync: services, quoting, pushes with hash skip, the probe and
the thermal wait.  No model files needed."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from loopback_adbd import Cooling, DeviceScript, Faults, LoopbackDevice, fake_aarch64_binary
from loopback_adbd import protocol as wire

from android_runner.connection import AdbConnection, ConnectionSettings
from android_runner.errors import AuthRejectedError, DeviceUnavailableError
from android_runner.runner import PhoneSession

FAST = ConnectionSettings(connect_timeout_s=5, auth_timeout_s=5, command_timeout_s=10)


def connect(dev, **kwargs) -> AdbConnection:
    return AdbConnection(dev.spec, settings=kwargs.pop("settings", FAST), **kwargs).connect()


def test_port_is_ephemeral_and_not_an_adb_port(device):
    assert device.port not in range(5555, 5586) and device.port > 1024


def test_new_key_is_offered_then_trusted_by_signature(device, adb_key):
    with connect(device) as conn:
        assert conn.run(["echo", "hi"]).output == "hi\n"
    # first contact: the signature fails (unknown key), the public key is offered and accepted
    assert len(device.offered_keys) == 1 and device.failed_signatures == 1
    with connect(device) as conn:
        assert conn.run(["true"]).exit_code == 0
    # second contact: the token signature verifies against the trusted key; nothing offered
    assert len(device.offered_keys) == 1 and device.failed_signatures == 1
    assert device.protocol_errors == []


def test_rejected_key_gives_a_clear_error(tmp_path, adb_key):
    with LoopbackDevice(tmp_path / "sb", faults=Faults(accept_new_keys=False)) as dev:
        started = time.monotonic()
        with pytest.raises(AuthRejectedError, match="Allow") as info:
            connect(dev)
        assert time.monotonic() - started < 5
        assert str(adb_key) in str(info.value)


def test_key_trusted_in_advance_needs_no_prompt(tmp_path, adb_key):
    from android_runner.adb_key import ensure_adb_key

    ensure_adb_key(adb_key)
    public = adb_key.with_name("adbkey.pub").read_bytes()
    faults = Faults(accept_new_keys=False)
    with LoopbackDevice(tmp_path / "sb", trusted_public_keys=[public], faults=faults) as dev:
        with connect(dev) as conn:
            assert conn.run(["echo", "ok"]).output == "ok\n"
        assert dev.offered_keys == [] and dev.failed_signatures == 0


def _raw_exchange(port: int, packet: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(packet)
        received = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return received
            received += chunk


def test_device_checks_magic_and_checksum(device):
    good = wire.pack(wire.A_CNXN, wire.VERSION_CHECKSUMMED, 4096, b"host::test\0")
    bad_checksum = bytearray(good)
    bad_checksum[16] ^= 0x01
    assert _raw_exchange(device.port, bytes(bad_checksum)) == b""
    assert "checksum" in device.protocol_errors[-1]
    bad_magic = bytearray(good)
    bad_magic[20] ^= 0xFF
    assert _raw_exchange(device.port, bytes(bad_magic)) == b""
    assert "magic" in device.protocol_errors[-1]
    # an OPEN before authentication is refused too
    opened = wire.pack(wire.A_OPEN, 1, 0, b"shell:id\0")
    assert _raw_exchange(device.port, opened) == b""
    assert "before authentication" in device.protocol_errors[-1]
    # a well-formed CNXN gets an AUTH token of 20 random bytes
    with socket.create_connection(("127.0.0.1", device.port), timeout=5) as sock:
        sock.sendall(good)
        header = sock.recv(24, socket.MSG_WAITALL)
        command, arg0, _arg1, length, _sum, _magic = struct.unpack("<6I", header)
        assert header[:4] == b"AUTH" and arg0 == wire.AUTH_TOKEN and length == 20


def test_shell_quoting_exit_status_and_errors(device):
    with connect(device) as conn:
        hostile = "a;b && c || d > /dev/null $(id) `id`"
        result = conn.run(["echo", hostile])
        assert result.output == hostile + "\n" and result.exit_code == 0
        missing = conn.run(["cat", "/data/local/tmp/nothing here"])
        assert missing.exit_code == 1 and "No such file" in missing.output
        assert conn.run(["/data/local/tmp/absent"]).exit_code == 127
        assert conn.run(["no_such_tool"]).exit_code == 127
        assert conn.run(["taskset", "100", "true"]).exit_code == 1  # cpu8 does not exist
        assert conn.run(["taskset", "80", "true"]).exit_code == 0
        assert conn.run(["cat", "/system/secret"]).exit_code == 1


def test_push_with_hash_skip(tmp_path, device):
    local = tmp_path / "blob.bin"
    local.write_bytes(bytes(range(256)) * 1000)  # 256 kB: several sync DATA chunks
    session = PhoneSession(device.spec, tmp_path / "bm", connection_settings=FAST)
    with session:
        remote = "/data/local/tmp/pearl/models/blob.bin"
        assert session.push_if_changed(local, remote) is True
        assert (device.sandbox / "pearl/models/blob.bin").read_bytes() == local.read_bytes()
        assert session.push_if_changed(local, remote) is False  # same sha256 on the device
        local.write_bytes(b"changed")
        assert session.push_if_changed(local, remote) is True
        (device.sandbox / "pearl/models/blob.bin").write_bytes(b"truncat")  # a cut-off push
        assert session.push_if_changed(local, remote) is True
        assert session.pushed_bytes == 256000 + 2 * 7


def test_push_falls_back_to_md5_without_sha256sum(tmp_path, adb_key):
    local = tmp_path / "m.tflite"
    local.write_bytes(b"x" * 1000)
    with LoopbackDevice(tmp_path / "sb", faults=Faults(no_sha256sum=True)) as dev:
        with PhoneSession(dev.spec, tmp_path / "bm", connection_settings=FAST) as session:
            assert session.push_if_changed(local, "/data/local/tmp/pearl/m.tflite")
            assert not session.push_if_changed(local, "/data/local/tmp/pearl/m.tflite")
            assert session._hash_tool == "md5sum"


def test_pushing_outside_the_sandbox_is_refused(tmp_path, device):
    local = tmp_path / "f"
    local.write_bytes(b"1")
    with connect(device) as conn:
        with pytest.raises(Exception, match="refused|Permission"):
            conn.push(local, "/system/bin/f")


def test_probe_over_the_wire(tmp_path, device):
    with PhoneSession(device.spec, tmp_path / "bm", connection_settings=FAST) as session:
        probe = session.probe
        assert probe.model == "Loopback Phone 855" and probe.soc == "Qualcomm SM8150"
        assert probe.cpu_count == 8 and probe.big_cores() == (7,)
        assert probe.big_cores(4) == (4, 5, 6, 7)
        assert session.temperature_c() == pytest.approx(38.0)


def test_binary_push_checks_the_abi(tmp_path, device):
    x86 = tmp_path / "benchmark_model"
    x86.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(8) + struct.pack("<HH", 2, 62) + bytes(40))
    with PhoneSession(device.spec, x86, connection_settings=FAST) as session:
        with pytest.raises(Exception, match="built for x86_64 but the phone's ABI is arm64-v8a"):
            session.ensure_binary()
    good = tmp_path / "bm_arm"
    fake_aarch64_binary(good)
    with PhoneSession(device.spec, good, connection_settings=FAST) as session:
        assert session.ensure_binary() == "/data/local/tmp/pearl/benchmark_model"
        assert (device.sandbox / "pearl/benchmark_model").stat().st_mode & 0o111


def test_thermal_wait_until_cool(tmp_path, adb_key):
    script = DeviceScript.snapdragon_855()
    cooling = Cooling(60.0, 40.0, 1.5)
    script.thermal = [("cpu-1-0-usr", cooling), ("battery", 70.0)]
    with LoopbackDevice(tmp_path / "sb", script) as dev:
        logs = []
        with PhoneSession(
            dev.spec, tmp_path / "bm", connection_settings=FAST, log=logs.append
        ) as s:
            temp, waited = s.wait_until_cool(45.0, timeout_s=10, poll_s=0.2)
        assert temp <= 45.0 and 0.8 < waited < 5 and cooling.reads >= 3
        assert any("waiting to cool" in line for line in logs)


def test_thermal_wait_gives_up_after_its_timeout(tmp_path, adb_key):
    script = DeviceScript.snapdragon_855()
    script.thermal = [("cpu-0-0-usr", Cooling(80.0, 79.0, 100.0))]
    with LoopbackDevice(tmp_path / "sb", script) as dev:
        logs = []
        with PhoneSession(
            dev.spec, tmp_path / "bm", connection_settings=FAST, log=logs.append
        ) as s:
            started = time.monotonic()
            temp, _ = s.wait_until_cool(45.0, timeout_s=0.6, poll_s=0.2)
            assert time.monotonic() - started < 3 and temp > 45
        assert "running anyway" in logs[-1]


def test_unreachable_device_is_a_transport_error(tmp_path, adb_key):
    dev = LoopbackDevice(tmp_path / "sb").start()
    port = dev.port
    dev.stop()
    with pytest.raises(DeviceUnavailableError, match=f"127.0.0.1:{port}.*refused"):
        AdbConnection(f"127.0.0.1:{port}", settings=FAST).connect()


def test_run_timeout_closes_the_connection(tmp_path, device):
    with connect(device) as conn:
        started = time.monotonic()
        from android_runner.errors import RunTimeoutError

        with pytest.raises(RunTimeoutError, match="within 1 s"):
            conn.run(["sleep", "5"], timeout_s=1)
        assert time.monotonic() - started < 3 and not conn.connected
