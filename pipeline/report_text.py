"""Pure helpers of the reports: markdown tables, number formats, and the arithmetic of final
accuracies with their noise (a test split of n images measures a top-1 p with the binomial
standard error sqrt(p (1 - p) / n); independent errors add in quadrature)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def num(value: float | None, fmt: str = ".3f") -> str:
    return "n/a" if value is None else format(value, fmt)


def binomial_se_pp(top1: float, images: int) -> float:
    """Standard error of a top-1 fraction measured on `images` images, in percentage points."""
    return 100 * math.sqrt(max(top1 * (1 - top1), 0.0) / images)


def quadrature(*errors: float) -> float:
    return math.sqrt(sum(e * e for e in errors))


def finished(metrics: dict | None) -> bool:
    """A final training counts only once it ran every epoch (``metrics.json`` "finished")."""
    return bool(metrics) and bool(metrics.get("finished")) and metrics.get("top1") is not None


def test_images(metrics: dict) -> int | None:
    return (metrics.get("data") or {}).get("test_images")


def top1_se(metrics: dict) -> float | None:
    images = test_images(metrics)
    return binomial_se_pp(metrics["top1"], images) if images else None


def kd_gain(per_loss: dict[str, dict]) -> float | None:
    """Final top-1 with KD minus with cross-entropy (percentage points), if both finished."""
    kd, ce = per_loss.get("kd"), per_loss.get("ce")
    if not finished(kd) or not finished(ce):
        return None
    return 100 * (kd["top1"] - ce["top1"])


def kd_gain_se(per_loss: dict[str, dict]) -> float | None:
    """Standard error of `kd_gain` (the two runs' errors in quadrature)."""
    if kd_gain(per_loss) is None:
        return None
    errors = [top1_se(per_loss[loss]) for loss in ("kd", "ce")]
    return None if None in errors else quadrature(*errors)


def relative_gain(searched: float | None, baseline: float | None) -> float | None:
    """AKD eq. 1: [KD(searched) - CE(searched)] - [KD(baseline) - CE(baseline)]."""
    if searched is None or baseline is None:
        return None
    return searched - baseline


def plus_minus(value: float | None, error: float | None, fmt: str = "+.2f") -> str:
    if value is None:
        return "n/a"
    return format(value, fmt) + ("" if error is None else f" ± {error:.2f}")
