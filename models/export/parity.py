"""Does an exported file compute what the PyTorch module computes?  Pure numpy.

Errors are measured on logits over the same images:

* ``max_abs``: max |exported - torch| over all images and classes;
* ``max_rel``: ``max_abs / max |torch|``, the error relative to the logits' range (an
  element-wise relative error blows up on logits near zero and says nothing);
* ``top1_agreement``: fraction of images whose arg-max class is the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from models.export.common import FORMATS, INT8_MIN_AGREEMENT


@dataclass(frozen=True)
class Parity:
    images: int
    max_abs: float
    max_rel: float
    top1_agreement: float
    rtol: float | None  # tolerance on max_rel; None: report only (int8)
    passed: bool
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}"
            + (f" (tolerance {self.rtol:g})" if self.rtol is not None else "")
            + f", top-1 agreement {self.top1_agreement:.1%} on {self.images} images"
        )


def _failed(reference: np.ndarray, fmt: str, note: str) -> Parity:
    """A parity result for outputs that cannot be compared at all."""
    inf = float("inf")
    return Parity(len(reference), inf, inf, 0.0, FORMATS[fmt].rtol, False, note)


def compare(
    reference: np.ndarray, exported: np.ndarray, fmt: str, *, trained: bool = True
) -> Parity:
    """Parity of `exported` logits against `reference` logits for format `fmt`.

    fp32/fp16 files pass when ``max_rel <= rtol``.  int8 files pass when top-1 agreement is at
    least `INT8_MIN_AGREEMENT`; with untrained weights (`trained=False`) logits are near-ties,
    agreement means nothing and int8 is reported without a verdict.
    """
    reference = np.asarray(reference, np.float64)
    exported = np.asarray(exported, np.float64)
    if reference.shape != exported.shape:
        return _failed(reference, fmt, f"output shape {exported.shape} != torch {reference.shape}")
    if not np.all(np.isfinite(exported)):
        return _failed(reference, fmt, "non-finite outputs")
    max_abs = float(np.max(np.abs(exported - reference)))
    scale = float(np.max(np.abs(reference)))
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    agreement = float(np.mean(exported.argmax(1) == reference.argmax(1)))
    rtol = FORMATS[fmt].rtol
    note = ""
    if rtol is not None:
        passed = max_rel <= rtol
    elif trained:
        passed = agreement >= INT8_MIN_AGREEMENT
        if not passed:
            note = f"top-1 agreement below {INT8_MIN_AGREEMENT:.0%}"
    else:
        passed, note = True, "untrained weights: int8 agreement not meaningful, not judged"
    return Parity(len(reference), max_abs, max_rel, agreement, rtol, passed, note)
