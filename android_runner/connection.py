"""One ADB connection to one phone (adb-shell, over TCP or USB), with timeouts and readable
errors.

Commands are argument lists: `join_command` quotes every argument with `shlex.quote`, so a path
or flag can never be read by the phone's shell as anything but one word.  The `shell:` service
(what adb-shell speaks) merges stdout and stderr and does not report the exit status, so
`AdbConnection.run` appends ``; echo <marker>$?`` and splits the status off the output.

adb-shell is imported inside the functions that use it.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import socket
from collections.abc import Sequence
from pathlib import Path

from android_runner.errors import (
    AdbError,
    AuthRejectedError,
    DeviceCommandError,
    DeviceUnavailableError,
    RunTimeoutError,
    UsbUnavailableError,
)

EXIT_MARKER = "__PEARL_EXIT__="
ADB_SERVER_PORT = 5037
_EXIT_RE = re.compile(rf"(?:^|\n){re.escape(EXIT_MARKER)}(\d+)\s*$")


def join_command(argv: Sequence[str | int | float]) -> str:
    """One shell command line from an argument list, every argument quoted."""
    if not argv:
        raise ValueError("empty command")
    return " ".join(shlex.quote(str(arg)) for arg in argv)


@dataclasses.dataclass(frozen=True)
class DeviceAddress:
    """`adb:SERIAL` (USB) or `adb:HOST:PORT` (TCP, as after `adb tcpip 5555`)."""

    serial: str | None = None
    host: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> DeviceAddress:
        """Parse ``SERIAL``, ``HOST:PORT`` or ``[IPV6]:PORT`` (an ``adb:`` prefix is allowed)."""
        rest = text.strip()
        if rest.lower().startswith("adb:"):
            rest = rest[4:]
        if not rest:
            raise ValueError(f"empty device address in {text!r}: use adb:SERIAL or adb:HOST:PORT")
        match = re.fullmatch(
            r"\[(?P<v6>[0-9a-fA-F:.]+)\]:(?P<port>\d+)|(?P<host>[^:\s]+):(?P<p>\d+)", rest
        )
        if match:
            host = match.group("v6") or match.group("host")
            port = int(match.group("port") or match.group("p"))
            if not 0 < port < 65536:
                raise ValueError(f"port {port} in {text!r} is out of range 1-65535")
            return cls(host=host, port=port)
        if ":" in rest or any(ch.isspace() for ch in rest):
            raise ValueError(
                f"cannot read device address {text!r}: use adb:SERIAL (USB serial as `adb "
                "devices` shows it) or adb:HOST:PORT (e.g. adb:192.168.1.20:5555)"
            )
        return cls(serial=rest)

    @property
    def is_tcp(self) -> bool:
        return self.host is not None

    def __str__(self) -> str:
        if self.is_tcp:
            host = f"[{self.host}]" if ":" in str(self.host) else self.host
            return f"{host}:{self.port}"
        return str(self.serial)


@dataclasses.dataclass(frozen=True)
class ConnectionSettings:
    """Timeouts in seconds. `auth_timeout_s` is how long to wait for someone to tap "Allow" on
    the phone the first time this computer's key is seen."""

    connect_timeout_s: float = 10.0
    auth_timeout_s: float = 30.0
    command_timeout_s: float = 30.0
    push_timeout_s: float = 120.0


@dataclasses.dataclass(frozen=True)
class ShellResult:
    output: str  # stdout and stderr, merged by the shell: service, \r\n normalised
    exit_code: int


def usb_support() -> tuple[bool, str]:
    """``(available, reason)``: USB needs the libusb1 Python package and libusb-1.0."""
    try:
        import usb1
    except ImportError:
        return False, (
            "USB is unavailable: the Python package 'libusb1' is not installed "
            "(pip install 'adb-shell[usb]'; it also needs the system library libusb-1.0, "
            "e.g. apt install libusb-1.0-0); use adb:HOST:PORT over Wi-Fi/TCP instead"
        )
    try:
        with usb1.USBContext():
            pass
    except Exception as err:  # libusb-1.0 missing or unusable
        return False, (
            f"USB is unavailable: libusb-1.0 could not be loaded ({err}); install it "
            "(e.g. apt install libusb-1.0-0) or use adb:HOST:PORT"
        )
    return True, "USB available"


def adb_server_devices(
    host: str = "127.0.0.1", port: int = ADB_SERVER_PORT, timeout_s: float = 0.5
) -> list[tuple[str, str]] | None:
    """``[(serial, state), ...]`` from a running adb server (``host:devices``), or None when no
    server answers.  A device listed there is held by that server: pearl cannot open it over
    USB at the same time."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            request = b"host:devices"
            sock.sendall(b"%04x%s" % (len(request), request))
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    if not data.startswith(b"OKAY") or len(data) < 8:
        return None
    try:
        length = int(data[4:8], 16)
    except ValueError:
        return None
    rows = []
    for line in data[8 : 8 + length].decode(errors="replace").splitlines():
        serial, _, state = line.partition("\t")
        if serial:
            rows.append((serial, state.strip()))
    return rows


def _held_by_adb_server_hint(serial: str | None) -> str:
    held = adb_server_devices()
    listed = ""
    if held:
        listed = (
            f" (the adb server on 127.0.0.1:{ADB_SERVER_PORT} lists: "
            + ", ".join(f"{s} {st}" for s, st in held)
            + ")"
        )
    return (
        f"the USB device {serial or ''} is held by another program, usually a local adb server"
        f"{listed}. Either stop it with `adb kill-server` and retry, or keep it and switch the "
        "phone to TCP with `adb tcpip 5555`, then use adb:PHONE_IP:5555"
    )


def _tcp_transport_class():
    from adb_shell.transport.tcp_transport import TcpTransport

    class ClosingTcpTransport(TcpTransport):
        """adb-shell's TCP transport with TCP_NODELAY, and a closed socket is an error at
        once (adb-shell would spin on empty reads until its read timeout).  `opened`: the TCP
        connection was made (so a failure after it means the peer is not adbd)."""

        opened = False

        def connect(self, transport_timeout_s):
            super().connect(transport_timeout_s)
            self.opened = True
            # adb-shell writes a 24-byte header and then its payload: with Nagle's algorithm
            # and the peer's delayed ACK every command would wait ~40 ms for nothing
            self._connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def bulk_read(self, numbytes, transport_timeout_s):
            data = super().bulk_read(numbytes, transport_timeout_s)
            if not data:
                raise ConnectionResetError("the device closed the connection")
            return data

    return ClosingTcpTransport


class AdbConnection:
    """A connected phone: `run` shell commands, `push` files. Use as a context manager."""

    def __init__(
        self,
        address: DeviceAddress | str,
        *,
        key_path: str | Path | None = None,
        settings: ConnectionSettings | None = None,
    ) -> None:
        self.address = (
            address if isinstance(address, DeviceAddress) else DeviceAddress.parse(address)
        )
        self.key_path = key_path
        self.settings = settings or ConnectionSettings()
        self._device = None
        self._transport = None  # TCP only
        self.banner = ""

    # ------------------------------------------------------------------ connect / close
    @property
    def connected(self) -> bool:
        return self._device is not None and bool(self._device.available)

    def connect(self) -> AdbConnection:
        from adb_shell import exceptions as adb_exc

        from android_runner.adb_key import load_signer

        self.close()
        try:
            signer = load_signer(self.key_path)
        except (ValueError, TypeError, OSError) as err:
            raise AdbError(
                f"cannot use the ADB key {self._key_name()} ({err}); move it away and pearl "
                "creates a new one (the phone will ask to allow this computer again)"
            ) from None
        device = self._make_device()
        sent_public_key = []
        try:
            device.connect(
                rsa_keys=[signer],
                transport_timeout_s=self.settings.connect_timeout_s,
                auth_timeout_s=self.settings.auth_timeout_s,
                read_timeout_s=self.settings.connect_timeout_s,
                auth_callback=lambda _dev: sent_public_key.append(True),
            )
        except adb_exc.DeviceAuthError as err:
            self._close_quietly(device)
            raise AuthRejectedError(f"{self.address}: {err}") from None
        except Exception as err:
            self._close_quietly(device)
            if sent_public_key:
                raise AuthRejectedError(
                    f"{self.address} did not accept this computer's ADB key "
                    f"({self._key_name()}.pub): unlock the phone and tap 'Allow' on the 'Allow "
                    "USB debugging?' prompt (tick 'Always allow'); if no prompt appears, revoke "
                    "USB debugging authorisations in Developer options and reconnect"
                ) from None
            if getattr(self._transport, "opened", False):
                raise self._not_adb_error(err) from None
            raise self._transport_error(err, "connect") from None
        self._device = device
        return self

    def _key_name(self) -> str:
        from android_runner.adb_key import default_key_path

        return str(self.key_path or default_key_path())

    def _make_device(self):
        if self.address.is_tcp:
            from adb_shell.adb_device import AdbDevice

            transport = _tcp_transport_class()(self.address.host, self.address.port)
            self._transport = transport
            return AdbDevice(transport, default_transport_timeout_s=self.settings.connect_timeout_s)
        available, reason = usb_support()
        if not available:
            raise UsbUnavailableError(f"adb:{self.address}: {reason}")
        from adb_shell.adb_device import AdbDeviceUsb

        try:
            return AdbDeviceUsb(
                serial=self.address.serial,
                default_transport_timeout_s=self.settings.connect_timeout_s,
            )
        except Exception as err:
            raise DeviceUnavailableError(
                f"no USB device with serial {self.address.serial} ({err}): check the cable, "
                "that USB debugging is on, and `adb devices`"
            ) from None

    @staticmethod
    def _close_quietly(device) -> None:
        try:
            device.close()
        except Exception:
            pass

    def close(self) -> None:
        if self._device is not None:
            self._close_quietly(self._device)
            self._device = None

    def __enter__(self) -> AdbConnection:
        if not self.connected:
            self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ errors
    def _transport_error(self, err: BaseException, what: str) -> AdbError:
        text = f"{type(err).__name__}: {err}".strip()
        if "busy" in text.lower() or "LIBUSB_ERROR_ACCESS" in text or "ErrorAccess" in text:
            return UsbUnavailableError(
                f"adb:{self.address}: " + _held_by_adb_server_hint(self.address.serial)
            )
        if isinstance(err, ConnectionRefusedError):
            hint = (
                "nothing listens on that port: check the phone's IP, that `adb tcpip PORT` was "
                "run since its last reboot, and that wireless debugging is on"
            )
        else:
            hint = "check the cable or network, that the phone is awake, and `adb devices`"
        return DeviceUnavailableError(f"adb:{self.address}: {what} failed ({text[:200]}); {hint}")

    def _not_adb_error(self, err: BaseException) -> DeviceUnavailableError:
        """The TCP connection was made, but what answered is not adbd (another service, a
        port forward to nothing, a phone whose adbd is not on that port)."""
        from adb_shell.exceptions import TcpTimeoutException

        if isinstance(err, ConnectionError):  # reset, broken pipe, closed
            reason = "it closed the connection"
        elif isinstance(err, TcpTimeoutException):
            reason = f"no reply within {self.settings.connect_timeout_s:g} s"
        else:
            reason = "its reply is not the ADB protocol"
        return DeviceUnavailableError(
            f"{self.address} did not answer as an ADB device ({reason}). Check that it is the "
            "phone's address and the port its adbd listens on: run `adb tcpip 5555` over USB "
            "(again after each reboot), or use the address and port that Developer options > "
            "Wireless debugging shows"
        )

    def _require(self):
        if not self.connected:
            raise DeviceUnavailableError(f"adb:{self.address}: not connected")
        return self._device

    # ------------------------------------------------------------------ commands
    def run(
        self, argv: Sequence[str | int | float] | str, *, timeout_s: float | None = None
    ) -> ShellResult:
        """Run one command (an argument list; a str is a fixed command line written by pearl,
        never user text) and return its merged output and exit status.  A command that runs
        longer than `timeout_s` raises `RunTimeoutError` and the connection is closed (the
        phone's adbd then ends the command)."""
        line = argv if isinstance(argv, str) else join_command(argv)
        return self.run_line(line, timeout_s=timeout_s)

    def run_line(self, line: str, *, timeout_s: float | None = None) -> ShellResult:
        from adb_shell import exceptions as adb_exc

        device = self._require()
        timeout = self.settings.command_timeout_s if timeout_s is None else timeout_s
        script = f"{line}; echo {EXIT_MARKER}$?"
        try:
            raw = device.shell(
                script, transport_timeout_s=timeout, read_timeout_s=timeout, timeout_s=timeout
            )
        except (adb_exc.TcpTimeoutException, adb_exc.AdbTimeoutError):
            self.close()
            raise RunTimeoutError(
                f"adb:{self.address}: command did not finish within {timeout:g} s: {line[:160]}"
            ) from None
        except Exception as err:
            self.close()
            raise self._transport_error(err, "shell command") from None
        text = raw.replace("\r\n", "\n")
        match = _EXIT_RE.search(text)
        if match is None:
            self.close()
            raise DeviceUnavailableError(
                f"adb:{self.address}: the shell ended without reporting an exit status "
                f"(connection lost mid-command?): {line[:160]}"
            )
        return ShellResult(
            text[: match.start()].rstrip("\n") + ("\n" if match.start() else ""),
            int(match.group(1)),
        )

    def push(self, local: str | Path, remote: str, *, mode: int = 0o644) -> None:
        """Copy a local file to `remote` (sync: SEND/DATA/DONE) with permission bits `mode`."""
        import stat as stat_module

        from adb_shell import exceptions as adb_exc

        device = self._require()
        timeout = self.settings.push_timeout_s
        try:
            device.push(
                str(local),
                remote,
                st_mode=stat_module.S_IFREG | mode,
                transport_timeout_s=timeout,
                read_timeout_s=timeout,
            )
        except adb_exc.PushFailedError as err:
            raise DeviceCommandError(
                f"adb:{self.address}: the phone refused to write {remote} ({err})"
            ) from None
        except Exception as err:
            self.close()
            raise self._transport_error(err, f"push of {Path(local).name}") from None
