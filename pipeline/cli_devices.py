"""`pearl devices`: the phones pearl can reach, with what their probe says.

TCP phones are given with ``--connect HOST:PORT`` (after ``adb tcpip 5555``, or Android 11+
wireless debugging with a paired computer); USB phones are found through libusb when it is
installed.  A running adb server (127.0.0.1:5037) holds the USB phones it lists, so those are
reported with what to do instead of being opened.
"""

from __future__ import annotations

import json

import click

_NONE_FOUND = (
    "no phone reachable. Check: USB debugging is on (Settings > Developer options) and the "
    "phone is unlocked; `adb devices` lists it as 'device' (not 'unauthorized'); for Wi-Fi, "
    "run `adb tcpip 5555` while on USB, then `pearl devices --connect PHONE_IP:5555`"
)


def _probe_row(spec: str, key_path) -> dict:
    from android_runner.connection import AdbConnection, ConnectionSettings
    from android_runner.errors import AdbError
    from android_runner.probe import probe_device

    settings = ConnectionSettings(connect_timeout_s=5.0, auth_timeout_s=30.0)
    try:
        with AdbConnection(spec, key_path=key_path, settings=settings) as connection:
            probe = probe_device(connection)
    except AdbError as err:
        return {"device": spec, "reachable": False, "error": str(err)}
    return {"device": spec, "reachable": True, **probe.to_dict()}


@click.command("devices")
@click.option(
    "--connect",
    "addresses",
    multiple=True,
    metavar="HOST:PORT",
    help="also try this phone over TCP (repeatable)",
)
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="ADB private key (default $PEARL_ADB_KEY or ~/.android/adbkey; created if absent)",
)
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
def devices_command(addresses, key_path, as_json) -> None:
    """List reachable phones with model, SoC, Android version, ABI, cores and temperature."""
    from android_runner.connection import DeviceAddress, adb_server_devices, usb_support

    specs = []
    for address in addresses:
        try:
            parsed = DeviceAddress.parse(address)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--connect") from None
        if not parsed.is_tcp:
            raise click.BadParameter(
                f"{address!r} is not HOST:PORT (USB phones are found without --connect)",
                param_hint="--connect",
            )
        specs.append(f"adb:{parsed}")

    usb_ok, usb_reason = usb_support()
    if usb_ok:
        specs.extend(f"adb:{serial}" for serial in _usb_serials())
    else:
        click.echo(f"note: {usb_reason}", err=True)
    held = adb_server_devices()
    if held:
        click.echo(
            "note: a local adb server (127.0.0.1:5037) holds these USB phones: "
            + ", ".join(f"{serial} ({state})" for serial, state in held)
            + ". Stop it with `adb kill-server` to let pearl use USB, or run `adb tcpip 5555` "
            "and use --connect PHONE_IP:5555",
            err=True,
        )

    rows = [_probe_row(spec, key_path) for spec in specs]
    reachable = [row for row in rows if row["reachable"]]
    for row in rows:
        if not row["reachable"]:
            click.echo(row["error"], err=True)
    if as_json:
        click.echo(json.dumps(reachable, indent=2))
    else:
        for row in reachable:
            freqs = sorted({f for f in row["max_freq_khz"] if f}, reverse=True)
            temp = row["max_temp_c"]
            click.echo(
                f"{row['device']}  {row['manufacturer']} {row['model']}  SoC {row['soc']}  "
                f"Android {row['android_version']} (SDK {row['sdk']})  {row['abi']}  "
                f"{row['cpu_count']} cores, max "
                + "/".join(f"{f / 1e6:.2f}" for f in freqs)
                + f" GHz, big cores {row['big_cores']}  governor "
                + ",".join(row["governors"] or ["?"])
                + (f"  {temp:.1f} C" if temp is not None else "")
            )
    if not reachable:
        click.echo(_NONE_FOUND, err=True)


def _usb_serials() -> list[str]:
    """Serial numbers of USB devices with an ADB interface (class ff, subclass 42, proto 1)."""
    import usb1

    serials = []
    with usb1.USBContext() as context:
        for device in context.getDeviceIterator(skip_on_error=True):
            adb = any(
                (s.getClass(), s.getSubClass(), s.getProtocol()) == (0xFF, 0x42, 0x01)
                for configuration in device
                for interface in configuration
                for s in interface
            )
            if adb:
                try:
                    serials.append(device.getSerialNumber())
                except Exception:  # no permission to read it: udev rules missing
                    click.echo(
                        f"note: USB device {device.getVendorID():04x}:{device.getProductID():04x} "
                        "has an ADB interface but cannot be opened (permissions? add a udev "
                        "rule or run adb once)",
                        err=True,
                    )
    return serials
