"""A loopback Android device for tests: a TCP server on 127.0.0.1 (ephemeral port, never the
5555-5585 range adb scans) speaking the device side of the ADB protocol, with scripted
``/proc`` / ``/sys`` / getprop answers and fault injection.  See README.md."""

from __future__ import annotations

import os
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import protocol as p
from .shell import Shell

_ADB_PORTS = range(5555, 5586)


class Cooling:
    """A temperature that falls linearly from `start_c` to `end_c` over `seconds` (clock starts
    at the first reading): a hot phone cooling down."""

    def __init__(self, start_c: float, end_c: float, seconds: float) -> None:
        self.start_c, self.end_c, self.seconds = start_c, end_c, seconds
        self.started: float | None = None
        self.reads = 0

    def __call__(self) -> float:
        now = time.monotonic()
        if self.started is None:
            self.started = now
        self.reads += 1
        fraction = min((now - self.started) / self.seconds, 1.0) if self.seconds > 0 else 1.0
        return self.start_c + (self.end_c - self.start_c) * fraction


@dataclass
class DeviceScript:
    """What the phone answers: properties, /proc/cpuinfo, per-core max frequency and governor,
    thermal zones (type, degrees C or a callable giving them)."""

    props: dict[str, str]
    cpuinfo: str
    cpus: list[tuple[int, str]]
    thermal: list[tuple[str, float | Callable[[], float]]]

    @classmethod
    def snapdragon_855(cls, serial: str = "LOOP0001") -> DeviceScript:
        """A phone shaped like a Snapdragon 855 (1 prime + 3 gold + 4 silver cores)."""
        cpus = (
            [(1785600, "schedutil")] * 4 + [(2419200, "schedutil")] * 3 + [(2841600, "schedutil")]
        )
        cpuinfo = (
            "".join(
                f"processor\t: {i}\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm aes\n"
                f"CPU implementer\t: 0x51\nCPU part\t: {'0x805' if i < 4 else '0x804'}\n\n"
                for i in range(8)
            )
            + "Hardware\t: Qualcomm Technologies, Inc SM8150\n"
        )
        props = {
            "ro.product.manufacturer": "Loopback",
            "ro.product.model": "Loopback Phone 855",
            "ro.product.device": "loopback855",
            "ro.product.name": "loopback855",
            "ro.product.board": "msmnile",
            "ro.board.platform": "msmnile",
            "ro.soc.manufacturer": "Qualcomm",
            "ro.soc.model": "SM8150",
            "ro.build.version.release": "13",
            "ro.build.version.sdk": "33",
            "ro.product.cpu.abi": "arm64-v8a",
            "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
            "ro.build.fingerprint": "loopback/loopback855/loopback855:13/TQ1A/1:user/release-keys",
            "ro.serialno": serial,
        }
        thermal = [
            ("cpu-0-0-usr", 36.5),
            ("cpu-1-0-usr", 38.0),
            ("battery", 31.0),
            ("xo-therm", 33.0),
        ]
        return cls(props, cpuinfo, cpus, thermal)


@dataclass
class Faults:
    """Switches a test flips to make the device misbehave."""

    accept_new_keys: bool = True  # the user taps "Allow" for an unknown key
    benchmark: str = "ok"  # ok | crash | garbage | hang | load_error
    drop_during_run: int = 0  # the next N benchmark runs lose the connection mid-run
    drop_delay_s: float = 0.3
    gone_after_drop: bool = False  # after a drop, refuse every new connection
    no_sha256sum: bool = False  # an old toybox without sha256sum


class _Stream:
    def __init__(self, connection: _Connection, local_id: int, remote_id: int) -> None:
        self.connection = connection
        self.local_id = local_id
        self.remote_id = remote_id
        self.inbox: queue.Queue[bytes] = queue.Queue()
        self.ready = threading.Event()
        self.closed = threading.Event()
        self.process = None

    def write(self, data: bytes) -> None:
        size = max(self.connection.max_payload, 1)
        for start in range(0, len(data), size):
            if self.closed.is_set():
                return
            self.ready.clear()
            self.connection.send(
                p.A_WRTE, self.local_id, self.remote_id, data[start : start + size]
            )
            while not self.ready.wait(0.05):
                if self.closed.is_set() or self.connection.dead.is_set():
                    return

    def read(self, count: int, buffer: bytearray) -> bytes | None:
        """`count` bytes of the host's data (None when the stream closed first)."""
        while len(buffer) < count:
            try:
                buffer += self.inbox.get(timeout=0.05)
            except queue.Empty:
                if self.closed.is_set() or self.connection.dead.is_set():
                    return None
        data = bytes(buffer[:count])
        del buffer[:count]
        return data

    def finish(self) -> None:
        """Close from the device side (end of command)."""
        if not self.closed.is_set():
            self.closed.set()
            self.connection.send(p.A_CLSE, self.local_id, self.remote_id)
            self.connection.forget(self.local_id)

    def kill(self) -> None:
        self.closed.set()
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()


class _Connection:
    def __init__(self, device: LoopbackDevice, sock: socket.socket) -> None:
        self.device = device
        self.sock = sock
        self.send_lock = threading.Lock()
        self.dead = threading.Event()
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.max_payload = 4096
        self.checksummed = True
        self.token = b""
        self.authenticated = False

    # -------------------------------------------------------------- I/O
    def send(self, command: bytes, arg0: int, arg1: int, data: bytes = b"") -> None:
        try:
            with self.send_lock:
                self.sock.sendall(p.pack(command, arg0, arg1, data))
        except OSError:
            self.abort()

    def _recv_exact(self, count: int) -> bytes | None:
        data = bytearray()
        while len(data) < count:
            try:
                chunk = self.sock.recv(count - len(data))
            except OSError:
                return None
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def abort(self) -> None:
        """Drop the connection like a pulled cable: no CLSE, running programs killed."""
        if self.dead.is_set():
            return
        self.dead.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for stream in list(self.streams.values()):
            stream.kill()
        self.device.connections.discard(self)

    def forget(self, local_id: int) -> None:
        self.streams.pop(local_id, None)

    # -------------------------------------------------------------- main loop
    def serve(self) -> None:
        try:
            while not self.dead.is_set():
                header = self._recv_exact(p.HEADER.size)
                if header is None:
                    break
                command, arg0, arg1, length, checksum = p.unpack_header(header)
                if length > 1024 * 1024:
                    raise p.ProtocolError(f"payload of {length} bytes is too large")
                data = self._recv_exact(length) if length else b""
                if data is None:
                    break
                if self.checksummed and p.payload_checksum(data) != checksum:
                    raise p.ProtocolError("payload checksum mismatch")
                self.handle(command, arg0, arg1, data)
        except p.ProtocolError as err:
            self.device.protocol_errors.append(str(err))
        finally:
            self.abort()

    def handle(self, command: bytes, arg0: int, arg1: int, data: bytes) -> None:
        if command == p.A_CNXN:
            self.checksummed = arg0 < p.VERSION_SKIP_CHECKSUM
            self.max_payload = min(arg1, 256 * 1024)
            self.authenticated = False
            self.token = os.urandom(p.TOKEN_SIZE)
            self.send(p.A_AUTH, p.AUTH_TOKEN, 0, self.token)
            return
        if command == p.A_AUTH:
            self.handle_auth(arg0, data)
            return
        if not self.authenticated:
            raise p.ProtocolError(f"{command.decode()} before authentication")
        if command == p.A_OPEN:
            self.open(arg0, data.rstrip(b"\0").decode(errors="replace"))
        elif command == p.A_WRTE:
            stream = self.streams.get(arg1)
            if stream is None:
                self.send(p.A_CLSE, 0, arg0)
                return
            stream.inbox.put(data)
            self.send(p.A_OKAY, stream.local_id, stream.remote_id)
        elif command == p.A_OKAY:
            stream = self.streams.get(arg1)
            if stream is not None:
                stream.ready.set()
        elif command == p.A_CLSE:
            stream = self.streams.pop(arg1, None)
            if stream is not None and not stream.closed.is_set():
                stream.kill()
                self.send(p.A_CLSE, stream.local_id, stream.remote_id)

    def handle_auth(self, kind: int, data: bytes) -> None:
        device = self.device
        if kind == p.AUTH_SIGNATURE:
            for key in list(device.trusted_keys):
                if p.verify_token_signature(key, self.token, data):
                    self.accept()
                    return
            device.failed_signatures += 1
            self.token = os.urandom(p.TOKEN_SIZE)
            self.send(p.A_AUTH, p.AUTH_TOKEN, 0, self.token)
        elif kind == p.AUTH_RSAPUBLICKEY:
            key = p.decode_android_pubkey(data)
            device.offered_keys.append(key)
            if device.faults.accept_new_keys:
                device.trusted_keys.add(key)
                self.accept()
            else:
                self.abort()  # the user pressed "Cancel"
        else:
            raise p.ProtocolError(f"unexpected AUTH type {kind}")

    def accept(self) -> None:
        self.authenticated = True
        props = self.device.script.props
        banner = "device::" + "".join(
            f"{key}={props.get(key, '')};"
            for key in ("ro.product.name", "ro.product.model", "ro.product.device")
        )
        version = p.VERSION_CHECKSUMMED if self.checksummed else p.VERSION_SKIP_CHECKSUM
        self.send(p.A_CNXN, version, self.max_payload, banner.encode() + b"\0")

    def open(self, remote_id: int, service: str) -> None:
        local_id = self.next_id
        self.next_id += 1
        stream = _Stream(self, local_id, remote_id)
        if service.startswith("shell:"):
            target = self.run_shell
            argument = service[len("shell:") :]
        elif service == "sync:":
            target, argument = self.run_sync, ""
        else:
            self.send(p.A_CLSE, 0, remote_id)
            return
        self.streams[local_id] = stream
        self.send(p.A_OKAY, local_id, remote_id)
        threading.Thread(target=target, args=(stream, argument), daemon=True).start()

    # -------------------------------------------------------------- services
    def run_shell(self, stream: _Stream, line: str) -> None:
        output, _status = Shell(self.device, stream).run_line(line)
        stream.write(output)
        stream.finish()

    def run_sync(self, stream: _Stream, _argument: str) -> None:
        buffer = bytearray()
        shell = Shell(self.device)
        while True:
            head = stream.read(p.SYNC_REQUEST.size, buffer)
            if head is None:
                return
            ident, length = p.SYNC_REQUEST.unpack(head)
            if ident == p.ID_QUIT:
                stream.finish()
                return
            if length > 1024:
                stream.write(p.sync_fail("path too long"))
                continue
            path = stream.read(length, buffer)
            if path is None:
                return
            text = path.decode(errors="replace")
            if ident == p.ID_STAT:
                stream.write(self.sync_stat(shell, text))
            elif ident == p.ID_SEND:
                if not self.sync_send(stream, shell, text, buffer):
                    return
            elif ident == p.ID_RECV:
                self.sync_recv(stream, shell, text)
            else:
                stream.write(p.sync_fail(f"unknown sync request {ident!r}"))

    @staticmethod
    def sync_stat(shell: Shell, path: str) -> bytes:
        host = shell.sandbox_path(path)
        if host is None or not host.exists():
            return struct.pack("<4s3I", p.ID_STAT, 0, 0, 0)
        info = host.stat()
        return struct.pack("<4s3I", p.ID_STAT, info.st_mode, info.st_size, int(info.st_mtime))

    def sync_send(self, stream: _Stream, shell: Shell, spec: str, buffer: bytearray) -> bool:
        path, _, mode_text = spec.rpartition(",")
        host = shell.sandbox_path(path)
        chunks = []
        while True:
            head = stream.read(p.SYNC_REQUEST.size, buffer)
            if head is None:
                return False
            ident, value = p.SYNC_REQUEST.unpack(head)
            if ident == p.ID_DATA:
                if value > p.SYNC_DATA_MAX:
                    stream.write(p.sync_fail("data chunk too large"))
                    return True
                data = stream.read(value, buffer)
                if data is None:
                    return False
                chunks.append(data)
            elif ident == p.ID_DONE:
                break
            else:
                stream.write(p.sync_fail(f"unexpected {ident!r} during SEND"))
                return True
        if host is None:
            stream.write(p.sync_fail(f"secure_mkdirs failed: Permission denied: {path}"))
            return True
        host.parent.mkdir(parents=True, exist_ok=True)
        partial = host.with_name(f".{host.name}.partial")
        partial.write_bytes(b"".join(chunks))
        try:
            partial.chmod(int(mode_text) & 0o777)
        except ValueError:
            partial.chmod(0o644)
        os.replace(partial, host)
        stream.write(p.sync_message(p.ID_OKAY, 0))
        return True

    @staticmethod
    def sync_recv(stream: _Stream, shell: Shell, path: str) -> None:
        try:
            data = shell.read_file(path)
        except OSError as err:
            stream.write(p.sync_fail(f"{path}: {type(err).__name__}"))
            return
        for start in range(0, len(data), p.SYNC_DATA_MAX):
            chunk = data[start : start + p.SYNC_DATA_MAX]
            stream.write(p.sync_message(p.ID_DATA, len(chunk), chunk))
        stream.write(p.sync_message(p.ID_DONE, 0))


class LoopbackDevice:
    """Start with `start()` (or as a context manager); `spec` is the ``adb:127.0.0.1:PORT``
    string for pearl.  `sandbox` plays /data/local/tmp."""

    def __init__(
        self,
        sandbox: str | Path,
        script: DeviceScript | None = None,
        *,
        trusted_public_keys: list[bytes] = (),
        faults: Faults | None = None,
    ) -> None:
        self.sandbox = Path(sandbox)
        self.sandbox.mkdir(parents=True, exist_ok=True)
        self.script = script or DeviceScript.snapdragon_855()
        self.faults = faults or Faults()
        self.trusted_keys: set[tuple[int, int]] = {
            p.decode_android_pubkey(k) for k in trusted_public_keys
        }
        self.offered_keys: list[tuple[int, int]] = []
        self.failed_signatures = 0
        self.protocol_errors: list[str] = []
        self.command_log: list[str] = []
        self.taskset_masks: list[str] = []
        self.benchmark_runs = 0
        self.connections: set[_Connection] = set()
        self.connection_count = 0
        self._listener: socket.socket | None = None
        self.port = 0

    @property
    def spec(self) -> str:
        return f"adb:127.0.0.1:{self.port}"

    def virtual_files(self) -> dict[str, str | Callable[[], str]]:
        files: dict[str, str | Callable[[], str]] = {"/proc/cpuinfo": self.script.cpuinfo}
        count = len(self.script.cpus)
        files["/sys/devices/system/cpu/possible"] = f"0-{count - 1}\n"
        for cpu, (freq, governor) in enumerate(self.script.cpus):
            base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq"
            files[f"{base}/cpuinfo_max_freq"] = f"{freq}\n"
            files[f"{base}/scaling_governor"] = f"{governor}\n"
        for zone, (kind, temp) in enumerate(self.script.thermal):
            base = f"/sys/class/thermal/thermal_zone{zone}"
            files[f"{base}/type"] = f"{kind}\n"
            files[f"{base}/temp"] = (
                (lambda t=temp: f"{round(t() * 1000)}\n")
                if callable(temp)
                else f"{round(temp * 1000)}\n"
            )
        return files

    def start(self) -> LoopbackDevice:
        while True:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            if listener.getsockname()[1] not in _ADB_PORTS:
                break
            listener.close()
        listener.listen(8)
        self._listener = listener
        self.port = listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True).start()
        return self

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(self, sock)
            self.connections.add(connection)
            self.connection_count += 1
            threading.Thread(target=connection.serve, daemon=True).start()

    def stop_listening(self) -> None:
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept
            except OSError:
                pass
            self._listener.close()
            self._listener = None

    def drop_connections(self) -> None:
        for connection in list(self.connections):
            connection.abort()
        if self.faults.gone_after_drop:
            self.stop_listening()

    def drop_connections_later(self, delay_s: float) -> threading.Timer:
        timer = threading.Timer(delay_s, self.drop_connections)
        timer.daemon = True
        timer.start()
        return timer

    def stop(self) -> None:
        self.stop_listening()
        for connection in list(self.connections):
            connection.abort()

    def __enter__(self) -> LoopbackDevice:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
