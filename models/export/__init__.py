"""Export networks to mobile files: TFLite (fp32, fp16 weights, int8) and ONNX, each checked
against PyTorch, with a delegation report and a self-describing bundle.

Entry points:

* `export_bundle(arch, out_dir, model=..., options=ExportOptions(...), ...)` -> metadata dict:
  the artifact bundle (`models.export.bundle`).
* `run_export(ExportRequest(arch, out_dir, weights=..., data_path=...), load_data=...)` ->
  metadata dict: what `pearl export` does (checkpoint, normalisation, calibration images), as
  a library call (`models.export.job`).
* `latency_artifact(arch, fmt, cache_dir)` -> path of a latency-only file, cached by arch key
  (`models.export.cache`).
* `ExportWorker`: a warm subprocess that runs the two above for many models without paying
  the imports again (`models.export.worker`).
* `predict(bundle_dir, images, fmt)`: run a bundle from its metadata alone
  (`models.export.consumer`).

Modules: `tflite` (litert-torch + ai-edge-quantizer), `onnx_file` (torch.onnx), `parity`,
`delegation` (XNNPACK), `prepare` (BN folding, image preprocessing), `weights` (checkpoints).
Converters and runtimes are imported inside the functions that use them, and the names
above are imported on first use, so `models.export.common` stays light.
"""

from __future__ import annotations

import importlib

# name -> submodule; resolved on first use so that `import models.export.common` (the CLI's
# format check) does not import torch and the converters.
_EXPORTS = {
    "ExportOptions": "bundle",
    "ExportWarning": "bundle",
    "export_bundle": "bundle",
    "read_metadata": "bundle",
    "record_measurement": "bundle",
    "latency_artifact": "cache",
    "DEFAULT_FORMATS": "common",
    "FORMATS": "common",
    "ExportError": "common",
    "ParityError": "common",
    "parse_formats": "common",
    "ExportRequest": "job",
    "run_export": "job",
    "predict": "consumer",
    "ExportWorker": "worker",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'models.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"models.export.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
