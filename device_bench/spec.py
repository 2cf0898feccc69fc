"""Backend spec strings (see DESIGN.md): which device times a model.

``host:tflite`` / ``host:onnx`` (a runtime on this machine), ``adb:SERIAL`` / ``adb:HOST:PORT``
(a phone over USB or TCP), ``table:FILE`` (a latency table's prediction).  `BackendSpec.parse`
is the one parser of these strings; everything that needs to know what a spec means (which
file a backend times, whether it is a phone, where its table lives) asks the parsed spec.

Pure and light: `pipeline.config` checks specs with it when the CLI starts, so this module
imports neither torch nor a runtime (`android_runner.connection` is standard library only).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from android_runner.connection import DeviceAddress

HOST_RUNTIMES = ("tflite", "onnx")  # each times the files of its own suffix (.tflite, .onnx)
VALID_FORMS = (
    *(f"host:{runtime}" for runtime in HOST_RUNTIMES),
    "adb:SERIAL",
    "adb:HOST:PORT",
    "table:FILE",
)
PHONE_FORMAT = "tflite"  # phones time .tflite files with benchmark_model


@dataclasses.dataclass(frozen=True)
class BackendSpec:
    """A parsed backend spec: `kind` ("host", "adb" or "table") and `target` (the host runtime,
    the phone's address as `DeviceAddress` prints it, or the table file)."""

    kind: str
    target: str

    @classmethod
    def parse(cls, text: str) -> BackendSpec:
        """The spec `text` names; ValueError listing the valid forms when it names none (or
        naming what is wrong with a phone's address)."""
        stripped = text.strip()
        kind, _, target = stripped.partition(":")
        kind = kind.lower()
        if kind == "host" and target.lower() in HOST_RUNTIMES:
            return cls("host", target.lower())
        if kind == "adb" and target:
            return cls("adb", str(DeviceAddress.parse(stripped)))
        if kind == "table" and target:
            return cls("table", target)
        raise ValueError(f"unknown backend {text!r}; valid forms: {', '.join(VALID_FORMS)}")

    @classmethod
    def for_file(cls, path: str | os.PathLike) -> BackendSpec | None:
        """The host backend that times files like `path` (by suffix), or None."""
        lowered = str(path).lower()
        for runtime in HOST_RUNTIMES:
            if lowered.endswith(f".{runtime}"):
                return cls("host", runtime)
        return None

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}"

    @property
    def is_host(self) -> bool:
        return self.kind == "host"

    @property
    def is_phone(self) -> bool:
        return self.kind == "adb"

    @property
    def is_table(self) -> bool:
        return self.kind == "table"

    @property
    def times_files(self) -> bool:
        """False for a table: it predicts from an architecture, it cannot time a model file."""
        return not self.is_table

    @property
    def artifact_format(self) -> str | None:
        """The export format whose file this backend times (None: a table, which predicts)."""
        if self.is_host:
            return self.target
        return PHONE_FORMAT if self.is_phone else None

    @property
    def file_suffix(self) -> str | None:
        """The suffix of the model files this backend times (None: a table)."""
        return f".{self.artifact_format}" if self.artifact_format else None

    @property
    def address(self) -> DeviceAddress:
        """The phone's address (``adb:`` specs only)."""
        if not self.is_phone:
            raise ValueError(f"{self} is not a phone (adb:SERIAL or adb:HOST:PORT)")
        return DeviceAddress.parse(self.target)

    def with_absolute_path(self, base: str | os.PathLike) -> BackendSpec:
        """This spec with a table's file made absolute (``~`` expanded, a relative path taken
        from `base`); other specs name no file and are returned unchanged."""
        if not self.is_table:
            return self
        path = Path(os.path.expanduser(self.target))
        return BackendSpec("table", str((Path(base) / path).resolve()))
