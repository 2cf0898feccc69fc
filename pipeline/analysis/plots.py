"""The figures of `pearl analyze` (matplotlib, Agg, written atomically): AKD Fig. 4 per run,
the PCA maps of Figs. 5-7 and the operator differences of Fig. 8."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.analysis.stats import LinearBounds
from pipeline.pareto import pareto_front
from pipeline.report_plots import _pyplot, _save


def _stage_colours(stages: int):
    palette = _pyplot().get_cmap("viridis")
    return [palette(s / max(stages - 1, 1)) for s in range(stages)]


def plot_search_attributes(
    points: dict[str, np.ndarray],
    stage_labels: Sequence[str],
    bounds: LinearBounds | None,
    path: Path,
    *,
    title: str,
    latency_label: str,
) -> Path:
    """AKD Fig. 4 for one run: (a) latency histogram per stage, (b) accuracy vs latency with the
    Pareto front, (c) latency and (d) accuracy against generation, (e) MMACs vs latency with the
    fitted bounds.  `points`: equal-length arrays latency_ms, accuracy, generation, stage, mmacs."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    lat, acc = points["latency_ms"], 100 * points["accuracy"]
    gen, stage, mmacs = points["generation"], points["stage"], points["mmacs"]
    colours = _stage_colours(len(stage_labels))
    figure, grid = plt.subplots(2, 3, figsize=(15, 8.5), dpi=110)
    (hist, front, lat_gen), (acc_gen, macs, legend) = grid
    bins = np.histogram_bin_edges(lat, bins=min(30, max(5, len(lat) // 4)))
    for s, label in enumerate(stage_labels):
        mine = stage == s
        if mine.any():
            hist.hist(lat[mine], bins=bins, histtype="step", linewidth=1.6, color=colours[s])
        for axes, y in ((front, acc), (lat_gen, lat), (acc_gen, acc), (macs, mmacs)):
            x = lat if axes in (front, macs) else gen
            axes.scatter(x[mine], y[mine], s=10, color=colours[s], alpha=0.8)
        legend.plot([], [], color=colours[s], linewidth=3, label=label)
    order = pareto_front(list(zip(acc, lat, strict=True)))
    front.step(lat[order], acc[order], where="post", color="#c0392b", linewidth=1.5)
    front.scatter(lat[order], acc[order], s=40, facecolors="none", edgecolors="#c0392b")
    legend.plot([], [], color="#c0392b", linewidth=1.5, label="Pareto front (b)")
    if bounds is not None:
        xs = np.linspace(max(bounds.offset_ms, 0.0), lat.max(), 50)
        for slope in (bounds.lower_slope, bounds.upper_slope):
            macs.plot(xs, slope * (xs - bounds.offset_ms), "--", color="#2c3e50", linewidth=1)
        legend.plot(
            [],
            [],
            "--",
            color="#2c3e50",
            label=(
                f"(e) {bounds.text()}\n     ({100 * bounds.coverage:.0f}% of the points between)"
            ),
        )
    labels = [
        (hist, "(a) latency per stage", latency_label, "students"),
        (front, "(b) accuracy vs latency", latency_label, "proxy accuracy (%)"),
        (lat_gen, "(c) latency per generation", "generation", latency_label),
        (acc_gen, "(d) accuracy per generation", "generation", "proxy accuracy (%)"),
        (macs, "(e) MACs vs latency", latency_label, "MMACs"),
    ]
    hist.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of students
    for axes in (lat_gen, acc_gen):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # generations
    for axes, name, x_label, y_label in labels:
        axes.set_title(name, fontsize=10)
        axes.set_xlabel(x_label, fontsize=9)
        axes.set_ylabel(y_label, fontsize=9)
        axes.grid(alpha=0.3)
    legend.axis("off")
    legend.legend(loc="center left", fontsize=9, title="stages (generations)")
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return _save(figure, path)


def plot_pca_panels(
    panels: Sequence[tuple[str, dict[str, np.ndarray]]],
    background: np.ndarray,
    path: Path,
    *,
    title: str,
    axis_labels: tuple[str, str],
) -> Path:
    """One PCA scatter per panel ``(title, {run label: (n, 2) points})``, every sample of every
    run in light grey behind, one colour per run (the same in every panel)."""
    plt = _pyplot()
    runs = sorted({label for _, groups in panels for label in groups})
    palette = plt.get_cmap("tab10")
    colour = {label: palette(i % palette.N) for i, label in enumerate(runs)}
    marker = {label: "osD^v<>"[i % 7] for i, label in enumerate(runs)}  # overlaps stay visible
    columns = min(len(panels), 3)
    rows = -(-len(panels) // columns)
    figure, grid = plt.subplots(
        rows, columns, figsize=(4.6 * columns, 4.2 * rows), dpi=110, squeeze=False
    )
    for axes, (name, groups) in zip(grid.ravel(), panels, strict=False):
        axes.scatter(background[:, 0], background[:, 1], s=6, color="#d5d8dc")
        for label, xy in groups.items():
            axes.scatter(
                xy[:, 0],
                xy[:, 1],
                s=26,
                marker=marker[label],
                facecolors="none",
                edgecolors=colour[label],
                linewidths=1.2,
                label=f"{label} ({len(xy)})",
            )
        axes.set_title(name, fontsize=10)
        axes.set_xlabel(axis_labels[0], fontsize=9)
        axes.set_ylabel(axis_labels[1], fontsize=9)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="best")
    for axes in grid.ravel()[len(panels) :]:
        axes.axis("off")
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return _save(figure, path)


def plot_operator_differences(rows: Sequence[dict], path: Path, *, title: str, shown: int = 25):
    """AKD Fig. 8: the `shown` most significant dimensions, the difference of their frequency
    (a - b) with +-1.96 s.e. bars, most significant on top (dimensions that never vary in
    either group are left out: they say nothing)."""
    plt = _pyplot()
    rows = [r for r in rows if r["se"] > 0 or r["diff"] != 0][:shown][::-1]
    figure, axes = plt.subplots(figsize=(8, 0.32 * max(len(rows), 1) + 1.8), dpi=110)
    diffs = [r["diff"] for r in rows]
    colours = ["#2874a6" if d > 0 else "#cb4335" for d in diffs]
    axes.barh(
        range(len(rows)),
        diffs,
        xerr=[1.96 * r["se"] for r in rows],
        color=colours,
        error_kw={"elinewidth": 0.8, "capsize": 2},
    )
    axes.set_yticks(range(len(rows)), [r["dimension"] for r in rows], fontsize=8)
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel("difference of operator probability (first run - second), 95% bars")
    axes.set_title(f"{title}\n(most significant difference on top)", fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)
