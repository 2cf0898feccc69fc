"""The end-of-search report: Pareto front (accuracy vs cost), best arch per target, CSV + PNG.

Pure functions over `(accuracy, cost)` points, plus two writers.  A point is on the front when no
other point is at least as accurate *and* at least as cheap with one of the two strictly better.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.files import atomic_path

COST_LABELS = {
    "latency_ms": "latency (ms)",
    "macs": "MACs",
    "params": "parameters",
    "memory_mb": "memory (MB)",
}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated ``(accuracy, cost)`` points, by increasing cost (higher
    accuracy is better, lower cost is better; of equal points the first is kept)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0], i))
    front, best_accuracy = [], float("-inf")
    for index in order:
        accuracy, _ = points[index]
        if accuracy > best_accuracy:
            front.append(index)
            best_accuracy = accuracy
    return front


def best_under(points: Sequence[tuple[float, float]], target: float) -> int | None:
    """Index of the most accurate point with cost <= `target` (ties: the cheaper, then the
    first); None when no point meets the target."""
    eligible = [i for i, (_, cost) in enumerate(points) if cost <= target]
    if not eligible:
        return None
    return min(eligible, key=lambda i: (-points[i][0], points[i][1], i))


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Rows (dicts with the same keys) as CSV, written atomically."""
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["arch"])
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def draw_targets(axes, targets: Sequence[float]) -> None:
    """Each cost target as a dashed vertical line, labelled at the bottom of the axes."""
    for target in targets:
        axes.axvline(target, linestyle="--", color="#2c3e50", linewidth=1)
        axes.annotate(
            f"target {target:g}",
            (target, 0.02),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="bottom",
            ha="right",
            fontsize=8,
            color="#2c3e50",
        )


def plot_front(
    all_points: Sequence[tuple[float, float]],
    front: Sequence[int],
    path: str | os.PathLike,
    *,
    cost_name: str,
    targets: Sequence[float] = (),
    title: str = "",
) -> Path:
    """Scatter of every candidate, the front as a step line, targets as dashed lines (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    costs = [c for _, c in all_points]
    accuracies = [100 * a for a, _ in all_points]
    axes.scatter(costs, accuracies, s=18, color="#9aa5b1", label="candidates")
    front_costs = [all_points[i][1] for i in front]
    front_accuracies = [100 * all_points[i][0] for i in front]
    axes.step(front_costs, front_accuracies, where="post", color="#c0392b", linewidth=1.5)
    axes.scatter(front_costs, front_accuracies, s=30, color="#c0392b", label="Pareto front")
    draw_targets(axes, targets)
    axes.set_xlabel(COST_LABELS.get(cost_name, cost_name))
    axes.set_ylabel("mini-val accuracy (%)")
    axes.set_title(title or "search result", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, bbox_inches="tight")
    plt.close(figure)
    return Path(path)
