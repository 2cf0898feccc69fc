"""The figures of ``report.md`` (`pipeline.run_report`), drawn with matplotlib (Agg) and written
atomically.  Each is meant to be read without the text: axes say what was measured, where and
with which statistic; chance accuracy is drawn; generations are discrete colours."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.files import atomic_path
from pipeline.pareto import draw_targets, pareto_front

COST_AXIS = {
    "latency_ms": "latency (ms)",
    "macs": "MACs",
    "params": "parameters",
    "memory_mb": "memory (MB)",
}
MIN_GENERATIONS_FOR_TREND = 3  # below this a per-generation median line says nothing


def per_generation_medians(generations: Sequence[int], values: Sequence[float]):
    """``(sorted generations, median value of each)``."""
    groups: dict[int, list[float]] = {}
    for g, v in zip(generations, values, strict=True):
        groups.setdefault(g, []).append(v)
    keys = sorted(groups)
    return keys, [statistics.median(groups[g]) for g in keys]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    plt = _pyplot()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, bbox_inches="tight")
    plt.close(figure)
    return path


def cost_axis_label(cost_name: str, latency_where: str) -> str:
    """``latency (ms) on host:tflite, fastest of the timed runs`` for latency; the unit else."""
    label = COST_AXIS[cost_name]
    return f"{label}{latency_where}" if cost_name == "latency_ms" else label


def generation_colours(generations: Sequence[int]) -> dict[int, Any]:
    """One discrete colour per generation (tab10, then tab20 for more)."""
    plt = _pyplot()
    distinct = sorted(set(generations))
    palette = plt.get_cmap("tab10" if len(distinct) <= 10 else "tab20")
    return {g: palette(i % palette.N) for i, g in enumerate(distinct)}


def plot_search(
    rows, cost_name: str, targets, winner_keys, path: Path, *, title: str, x_label: str, chance
) -> Path:
    """Accuracy vs cost of every scored arch, coloured by generation, with the Pareto front, the
    targets, chance accuracy and the winners (stars); the legend sits outside the axes."""
    plt = _pyplot()
    points = [(r.accuracy, float(r.cost(cost_name))) for r in rows]
    figure, axes = plt.subplots(figsize=(9, 5), dpi=130)
    colours = generation_colours([r.generation for r in rows])
    for generation, colour in colours.items():
        mine = [p for p, r in zip(points, rows, strict=True) if r.generation == generation]
        axes.scatter(
            [c for _, c in mine],
            [100 * a for a, _ in mine],
            color=colour,
            s=30,
            alpha=0.9,
            label=f"generation {generation}",
        )
    front = pareto_front(points)
    fx, fy = [points[i][1] for i in front], [100 * points[i][0] for i in front]
    axes.step(fx, fy, where="post", color="#c0392b", linewidth=2, label="Pareto front")
    axes.scatter(fx, fy, s=70, facecolors="none", edgecolors="#c0392b", linewidths=1.5)
    won = [p for p, r in zip(points, rows, strict=True) if r.key in winner_keys]
    if won:
        axes.scatter(
            [c for _, c in won],
            [100 * a for a, _ in won],
            marker="*",
            s=320,
            color="#f39c12",
            edgecolors="black",
            zorder=5,
            label="winner",
        )
    axes.axhline(100 * chance, color="#7f8c8d", linestyle=":", linewidth=1, label="chance")
    draw_targets(axes, targets)
    axes.set_xlabel(x_label, fontsize=11)
    axes.set_ylabel("proxy accuracy on mini-val (%)", fontsize=11)
    axes.set_title(title, fontsize=11)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, borderaxespad=0)
    return _save(figure, path)


def plot_progress(rows, cost_name: str, path: Path, *, where: str = "") -> Path:
    """Cost and accuracy of each candidate against its generation; the per-generation median
    joins them only when there are enough generations for a trend to mean something."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    generations = [r.generation for r in rows]
    trend = len(set(generations)) >= MIN_GENERATIONS_FOR_TREND
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), dpi=130, sharex=True)
    series = (
        (top, [float(r.cost(cost_name)) for r in rows], COST_AXIS[cost_name]),
        (bottom, [100 * r.accuracy for r in rows], "proxy accuracy (%)"),
    )
    for axes, values, label in series:
        axes.scatter(generations, values, s=18, color="#7f8c8d", alpha=0.8, label="candidate")
        if trend:
            keys, medians = per_generation_medians(generations, values)
            axes.plot(keys, medians, color="#2980b9", linewidth=2, marker="o", label="median")
        axes.set_ylabel(label, fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize=9)
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    bottom.set_xlim(min(generations) - 0.5, max(generations) + 0.5)
    bottom.set_xlabel("generation (0 = first; one controller update each)", fontsize=11)
    note = "" if trend else f" (fewer than {MIN_GENERATIONS_FOR_TREND} generations: no trend)"
    top.set_title(f"how the controller moved{note}\n{where.strip(' ,')}", fontsize=10)
    return _save(figure, path)


def plot_training(
    trained: dict[str, dict[str, dict]], path: Path, *, dataset: str, teacher_top1, chance
) -> Path:
    """Test top-1 per epoch: one colour per model, one line style per loss, the teacher and
    chance as horizontal lines."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(9, 4.8), dpi=130)
    styles = {"kd": "-", "ce": "--", "od": "-."}
    palette = plt.get_cmap("tab10")
    epochs = max(
        (len(m.get("curve") or []) for p in trained.values() for m in p.values()), default=1
    )
    for index, (label, per_loss) in enumerate(sorted(trained.items())):
        for loss, metrics in sorted(per_loss.items()):
            curve = metrics.get("curve") or []
            axes.plot(
                range(1, len(curve) + 1),
                [100 * row["test_top1"] for row in curve],
                marker="o",
                color=palette(index % palette.N),
                linestyle=styles.get(loss, ":"),
                label=f"{label} ({loss})",
            )
    if teacher_top1 is not None:
        axes.axhline(100 * teacher_top1, color="black", linewidth=1, label="teacher")
    axes.axhline(100 * chance, color="#7f8c8d", linestyle=":", linewidth=1, label="chance")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes.set_xlim(0.5, max(epochs, 1) + 0.5)
    axes.set_xlabel("epoch", fontsize=11)
    axes.set_ylabel("test top-1 (%)", fontsize=11)
    axes.set_title(f"final training on {dataset}", fontsize=11)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(figure, path)


def plot_memory(
    rows, max_params: int, backbone_params: int, winner_keys, path: Path, *, title: str, chance
) -> Path:
    """Proxy accuracy vs parameter memory (MB of float32 parameters) of every scored arch, with
    the memory budget M (KDAS eq. 7) and the backbone's memory as vertical lines; archs over the
    budget are hollow, winners are stars."""
    plt = _pyplot()

    def megabytes(params: int) -> float:
        return 4 * params / 1e6

    figure, axes = plt.subplots(figsize=(9, 5), dpi=130)
    groups = (
        (
            [r for r in rows if r.params <= max_params],
            {"s": 36, "color": "#2980b9"},
            "within the budget",
        ),
        (
            [r for r in rows if r.params > max_params],
            {"s": 36, "facecolors": "none", "edgecolors": "#7f8c8d"},
            "over the budget",
        ),
        (
            [r for r in rows if r.key in winner_keys],
            {"marker": "*", "s": 320, "color": "#f39c12", "edgecolors": "black", "zorder": 5},
            "winner",
        ),
    )
    for group, style, label in groups:
        if group:
            xs, ys = [megabytes(r.params) for r in group], [100 * r.accuracy for r in group]
            axes.scatter(xs, ys, label=label, **style)
    lines = (
        (max_params, "#c0392b", "--", f"budget M = {megabytes(max_params):.2f} MB"),
        (backbone_params, "#2c3e50", ":", f"backbone {megabytes(backbone_params):.2f} MB"),
    )
    for params, colour, style, label in lines:
        axes.axvline(megabytes(params), color=colour, linestyle=style, linewidth=1.4, label=label)
    axes.axhline(100 * chance, color="#7f8c8d", linestyle=":", linewidth=1, label="chance")
    axes.set_xlabel("parameter memory (MB, 4 bytes per parameter)", fontsize=11)
    axes.set_ylabel("proxy accuracy on mini-val (%)", fontsize=11)
    axes.set_title(title, fontsize=11)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, borderaxespad=0)
    return _save(figure, path)
