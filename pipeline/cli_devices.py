"""`pearl devices`: the phones pearl can reach, with what their probe says
(`device_bench.devices` finds and probes them; this module reads the options and prints)."""

from __future__ import annotations

import json

import click

_NONE_FOUND = (
    "no phone reachable. Check: USB debugging is on (Settings > Developer options) and the "
    "phone is unlocked; `adb devices` lists it as 'device' (not 'unauthorized'); for Wi-Fi, "
    "run `adb tcpip 5555` while on USB, then `pearl devices --connect PHONE_IP:5555`"
)
_KEY_HELP = "ADB private key (default $PEARL_ADB_KEY or ~/.android/adbkey; created if absent)"


@click.command("devices")
@click.option("--connect", "addresses", multiple=True, metavar="HOST:PORT",
              help="also try this phone over TCP (repeatable)")  # fmt: skip
@click.option("--key", "key_path", type=click.Path(dir_okay=False), default=None, help=_KEY_HELP)
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
def devices_command(addresses, key_path, as_json) -> None:
    """List reachable phones with model, SoC, Android version, ABI, cores and temperature."""
    from device_bench.devices import list_phones, tcp_phone

    specs = []
    for address in addresses:
        try:
            specs.append(tcp_phone(address))
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--connect") from None
    rows = list_phones(specs, key_path, note=lambda text: click.echo(f"note: {text}", err=True))
    reachable = [row for row in rows if row["reachable"]]
    for row in rows:
        if not row["reachable"]:
            click.echo(row["error"], err=True)
    if as_json:
        click.echo(json.dumps(reachable, indent=2))
    else:
        for row in reachable:
            click.echo(_describe(row))
    if not reachable:
        click.echo(_NONE_FOUND, err=True)


def _describe(row: dict) -> str:
    """One line per phone: model, SoC, Android, ABI, cores and clocks, governor, temperature."""
    freqs = sorted({f for f in row["max_freq_khz"] if f}, reverse=True)
    temp = row["max_temp_c"]
    return (
        f"{row['device']}  {row['manufacturer']} {row['model']}  SoC {row['soc']}  "
        f"Android {row['android_version']} (SDK {row['sdk']})  {row['abi']}  "
        f"{row['cpu_count']} cores, max "
        + "/".join(f"{f / 1e6:.2f}" for f in freqs)
        + f" GHz, big cores {row['big_cores']}  governor "
        + ",".join(row["governors"] or ["?"])
        + (f"  {temp:.1f} C" if temp is not None else "")
    )
