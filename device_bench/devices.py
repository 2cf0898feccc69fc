"""The phones pearl can reach, each with its probe (`pearl devices`).

TCP phones are given by address (``HOST:PORT``, after ``adb tcpip 5555`` or Android 11+
wireless debugging); USB phones are found through libusb when it is installed.  A running adb
server (127.0.0.1:5037) holds the USB phones it lists, so those are reported (through `note`)
with what to do instead of being opened.  adb-shell and libusb are imported when used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from android_runner.connection import ConnectionSettings, DeviceAddress
from device_bench.spec import BackendSpec

# a phone that does not answer within 5 s is listed as unreachable; 30 s to tap "Allow"
PROBE_CONNECTION = ConnectionSettings(connect_timeout_s=5.0, auth_timeout_s=30.0)
ADB_INTERFACE = (0xFF, 0x42, 0x01)  # USB class, subclass, protocol of an ADB interface

Note = Callable[[str], None]


def tcp_phone(address: str) -> BackendSpec:
    """The spec of the phone at ``HOST:PORT`` (an ``adb:`` prefix is allowed); ValueError
    saying what is wrong otherwise."""
    parsed = DeviceAddress.parse(address)
    if not parsed.is_tcp:
        raise ValueError(f"{address!r} is not HOST:PORT (USB phones are found without --connect)")
    return BackendSpec("adb", str(parsed))


def probe_phone(spec: BackendSpec, key_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"device": spec, "reachable": True, **probe}``, or ``{"device", "reachable": False,
    "error"}`` when the phone cannot be reached."""
    from android_runner.connection import AdbConnection
    from android_runner.errors import AdbError
    from android_runner.probe import probe_device

    try:
        with AdbConnection(spec.address, key_path=key_path, settings=PROBE_CONNECTION) as phone:
            probe = probe_device(phone)
    except AdbError as err:
        return {"device": str(spec), "reachable": False, "error": str(err)}
    return {"device": str(spec), "reachable": True, **probe.to_dict()}


def usb_phones(note: Note) -> list[BackendSpec]:
    """The USB phones that pearl can open; why others cannot be used goes to `note`."""
    from android_runner.connection import adb_server_devices, usb_support

    phones = []
    usb_ok, usb_reason = usb_support()
    if usb_ok:
        phones = [BackendSpec("adb", serial) for serial in _usb_adb_serials(note)]
    else:
        note(usb_reason)
    held = adb_server_devices()
    if held:
        note(
            "a local adb server (127.0.0.1:5037) holds these USB phones: "
            + ", ".join(f"{serial} ({state})" for serial, state in held)
            + ". Stop it with `adb kill-server` to let pearl use USB, or run `adb tcpip 5555` "
            "and use --connect PHONE_IP:5555"
        )
    return phones


def list_phones(
    tcp: Iterable[BackendSpec], key_path: str | os.PathLike | None, *, note: Note
) -> list[dict[str, Any]]:
    """A probe row (`probe_phone`) for each phone in `tcp`, then for each USB phone."""
    return [probe_phone(spec, key_path) for spec in [*tcp, *usb_phones(note)]]


def _usb_adb_serials(note: Note) -> list[str]:
    """Serial numbers of USB devices with an ADB interface."""
    import usb1

    serials = []
    with usb1.USBContext() as context:
        for device in context.getDeviceIterator(skip_on_error=True):
            adb = any(
                (s.getClass(), s.getSubClass(), s.getProtocol()) == ADB_INTERFACE
                for configuration in device
                for interface in configuration
                for s in interface
            )
            if adb:
                try:
                    serials.append(device.getSerialNumber())
                except Exception:  # no permission to read it: udev rules missing
                    note(
                        f"USB device {device.getVendorID():04x}:{device.getProductID():04x} "
                        "has an ADB interface but cannot be opened (permissions? add a udev "
                        "rule or run adb once)"
                    )
    return serials
