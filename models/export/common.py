"""What every export module shares: the format table, the errors, tool versions.

Pure Python (no torch, no converters), so the CLI can validate `--formats` before importing
anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

# Bumped whenever a change here alters the files we write (op choices, quantisation recipe,
# BN folding...), so latency-only caches keyed by arch do not hand out stale files.
EXPORT_VERSION = 2  # 2: pool skips count zero padding (PAD + AVERAGE_POOL_2D)
METADATA = "metadata.json"  # a bundle's self-description, beside its files


class ExportError(ValueError):
    """An export cannot be done as asked; the message says what, where and what to do.

    `field` names the `ExportRequest` field whose value is at fault ("arch", "weights",
    "data_path"), when the fault is in one input; None otherwise.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field  # pickled with the exception (in __dict__), so it crosses processes


class ParityError(ExportError):
    """An exported file disagrees with PyTorch beyond its tolerance."""


@dataclass(frozen=True)
class FormatSpec:
    """One exportable file kind.

    `rtol` is the largest accepted parity error, as max |exported - torch| divided by
    max |torch| over the parity images; None means report only (int8: a warning instead).
    """

    name: str
    filename: str
    runtime: str  # "litert" or "onnxruntime"
    precision: str  # "fp32", "fp16" (weights; compute stays fp32) or "int8"
    rtol: float | None


FORMATS: dict[str, FormatSpec] = {
    spec.name: spec
    for spec in (
        FormatSpec("tflite", "model.tflite", "litert", "fp32", 1e-4),
        # fp16 weights: each weight is rounded to 11 significant bits, so logits move by
        # roughly 1e-3 of their range; 1e-2 leaves room for deep nets without hiding a bug.
        FormatSpec("tflite-fp16", "model_fp16.tflite", "litert", "fp16", 1e-2),
        FormatSpec("tflite-int8", "model_int8.tflite", "litert", "int8", None),
        FormatSpec("onnx", "model.onnx", "onnxruntime", "fp32", 1e-4),
    )
}
DEFAULT_FORMATS = ("tflite", "tflite-fp16", "tflite-int8", "onnx")
INT8_MIN_AGREEMENT = 0.95  # below this top-1 agreement with fp32, an int8 file gets a warning


def format_at_precision(fmt: str, precision: str) -> str:
    """The format of `precision` ("fp32", "fp16", "int8") that runs on `fmt`'s runtime:
    ``("tflite", "int8") -> "tflite-int8"``; `ExportError` when that runtime has none."""
    runtime = FORMATS[fmt].runtime
    for spec in FORMATS.values():
        if spec.runtime == runtime and spec.precision == precision:
            return spec.name
    have = sorted({s.precision for s in FORMATS.values() if s.runtime == runtime})
    raise ExportError(
        f"pearl writes no {precision} {FORMATS[fmt].filename.rsplit('.', 1)[1]} file "
        f"({runtime} files come in {', '.join(have)}): time {precision} files on a .tflite "
        "backend (host:tflite or a phone), or use precision fp32"
    )


def parse_formats(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"tflite,onnx"`` (or a sequence) -> ``("tflite", "onnx")``, in the canonical order.
    Unknown names raise `ExportError` listing the known ones."""
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip().lower() for n in names if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ExportError(
            f"unknown format {unknown[0]!r}; choose from {', '.join(FORMATS)} "
            "(comma-separated, e.g. --formats tflite,onnx)"
        )
    if not names:
        raise ExportError(f"no format given; choose from {', '.join(FORMATS)}")
    return tuple(n for n in FORMATS if n in names)


_TOOLS = (
    "pearl",
    "torch",
    "litert-torch",
    "ai-edge-litert",
    "ai-edge-quantizer",
    "onnx",
    "onnxruntime",
    "numpy",
)


def tool_versions() -> dict[str, str]:
    """Installed versions of everything that shapes an exported file (from package metadata,
    so nothing heavy is imported)."""
    versions = {}
    for name in _TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
