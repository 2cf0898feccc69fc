"""Errors raised by everything that talks to a phone.  Each message says what went wrong and
what to do; `pearl` shows them without a traceback."""

from __future__ import annotations


class AdbError(RuntimeError):
    """Base class: a phone could not be used."""


class DeviceUnavailableError(AdbError):
    """The phone could not be reached or dropped the connection (worth retrying)."""


class AuthRejectedError(AdbError):
    """The phone did not accept this computer's ADB key."""


class UsbUnavailableError(AdbError):
    """USB access is impossible here (no libusb) or the device is held by another program."""


class RunTimeoutError(AdbError):
    """A command on the phone did not finish within its timeout."""


class DeviceCommandError(AdbError):
    """A shell command on the phone failed (non-zero exit)."""


class BenchmarkToolError(AdbError):
    """benchmark_model failed, crashed or printed output that is not a benchmark result."""
