"""``analysis.md`` with its figures and CSVs, from a set of search folders (`pearl analyze`).

Everything goes into the --out folder; the run folders are only read."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from models.files import atomic_write
from pipeline.analysis import plots
from pipeline.analysis.runs import AnalysisError, SearchRun, encode, encoding_of, load_runs
from pipeline.analysis.stats import (
    cv_accuracy,
    fit_linear_bounds,
    fit_pca,
    mean_distance_ratio,
    operator_differences,
    stage_ranges,
    top_k_in_range,
)
from pipeline.layout import AnalysisLayout
from pipeline.pareto import write_csv
from pipeline.report_text import markdown_table, num

SHOWN_DIMENSIONS = 10  # rows of each Fig. 8 table in the report (the CSV has them all)


def file_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label)


def _link(out: AnalysisLayout, name: str) -> str:
    """A figure's path relative to the report."""
    return out.figure(name).relative_to(out.root).as_posix()


def _check_out(out: Path, runs: Sequence[SearchRun]) -> None:
    target = out.resolve()
    for run in runs:
        root = run.folder.resolve()
        if target == root or root in target.parents:
            raise AnalysisError(
                f"--out {out} is inside the run folder {run.folder}; pearl analyze never "
                "writes into a run folder: give a folder outside it"
            )


def _stage_labels(last_generation: int, stages: int) -> list[str]:
    return [
        f"stage {s + 1} (gen {a}-{b})" if a <= b else f"stage {s + 1} (empty)"
        for s, (a, b) in enumerate(stage_ranges(stages, last_generation))
    ]


def _latency_label(run: SearchRun) -> str:
    """``latency (ms), table:NAME.csv``: the backends, table paths shortened to the file name."""
    specs = sorted({_short_spec(r.latency_spec) for r in run.rows if r.latency_spec})
    return f"latency (ms){', ' + ', '.join(specs) if specs else ''}"


def _short_spec(spec: str) -> str:
    kind, colon, where = spec.partition(":")
    return f"{kind}:{Path(where).name}" if colon and kind == "table" else spec


def _runs_section(runs: Sequence[SearchRun]) -> list[str]:
    table = [
        (
            r.label,
            f"`{r.layout.root}`",
            r.config.controller.name,
            r.config.proxy.loss,
            f"`{r.config.teacher.spec or '-'}`",
            r.config.search.seed,
            len(r.rows),
            len(r.scored),
            r.last_generation + 1,
        )
        for r in runs
    ]
    header = [
        "run",
        "folder",
        "controller",
        "proxy loss",
        "teacher",
        "seed",
        "candidates",
        "distinct scored",
        "generations",
    ]
    return ["## Runs", "", markdown_table(header, table), ""]


def _fig4(run: SearchRun, stages: int, out: AnalysisLayout) -> list[str]:
    rows = [r for r in run.scored if r.accuracy is not None and r.latency_ms is not None]
    lines = [f"### {run.label}", ""]
    if len(rows) < 2:
        return lines + ["Fewer than two students with an accuracy and a latency: no Fig. 4.", ""]
    points = {
        "latency_ms": np.array([r.latency_ms for r in rows]),
        "accuracy": np.array([r.accuracy for r in rows]),
        "generation": np.array([r.generation for r in rows]),
        "stage": run.stages(rows, stages),
        "mmacs": np.array([r.macs / 1e6 for r in rows]),
    }
    try:
        bounds = fit_linear_bounds(points["latency_ms"], points["mmacs"])
    except ValueError:
        bounds = None
    name = f"fig4_{file_label(run.label)}.png"
    plots.plot_search_attributes(
        points,
        _stage_labels(run.last_generation, stages),
        bounds,
        out.figure(name),
        title=f"{run.label}: {len(rows)} distinct students",
        latency_label=_latency_label(run),
    )
    lines += [f"![Fig. 4 of {run.label}]({_link(out, name)})", ""]
    if bounds is not None:
        lines += [
            f"MACs vs latency: {bounds.text(' x ')} "
            f"({100 * bounds.coverage:.0f}% of the {len(rows)} students between the lines).",
            "",
        ]
    return lines


def _pca_section(runs, encodings, option_counts, stages, out: AnalysisLayout) -> list[str]:
    stacked = np.vstack(list(encodings.values()))
    pca = fit_pca(stacked, 2)
    xy = {label: pca.project(x) for label, x in encodings.items()}
    axis_labels = tuple(
        f"PC{i + 1} ({100 * e:.1f}% of the variance)" for i, e in enumerate(pca.explained)
    )
    background = pca.project(stacked)
    stage_of = {r.label: r.stages(r.rows, stages) for r in runs}
    generation = {r.label: np.array([row.generation for row in r.rows]) for r in runs}
    panels = [("initial (generation 0)", {k: v[generation[k] == 0] for k, v in xy.items()})]
    for s in range(stages):
        groups = {k: v[stage_of[k] == s] for k, v in xy.items() if (stage_of[k] == s).any()}
        if groups:
            panels.append((f"stage {s + 1} of {stages}", groups))
    plots.plot_pca_panels(
        panels,
        background,
        out.figure("pca_stages.png"),
        title="sampled students by stage (PCA fitted on all runs)",
        axis_labels=axis_labels,
    )
    last = {k: v[stage_of[k] == stages - 1] for k, v in xy.items()}
    plots.plot_pca_panels(
        [("all samples", xy), (f"last stage ({stages} stages)", last)],
        background,
        out.figure("pca_runs.png"),
        title="runs compared (PCA fitted on all runs)",
        axis_labels=axis_labels,
    )
    return [
        "## Architectures in the search space (AKD Figs. 5-7)",
        "",
        f"One-hot encoding: {stacked.shape[1]} dimensions ({len(option_counts)} decisions; AKD's "
        f"space has 77). PCA (SVD) fitted once on the {len(stacked)} samples of all runs; PC1 "
        f"and PC2 explain {100 * pca.explained.sum():.1f}% of the variance. Grey: every sample.",
        "",
        f"![PCA by stage]({_link(out, 'pca_stages.png')})",
        "",
        f"![PCA by run]({_link(out, 'pca_runs.png')})",
        "",
    ]


def _separability(a: np.ndarray, b: np.ndarray) -> tuple[str, str]:
    if min(len(a), len(b)) < 2:
        return "n/a (under 2 samples)", "n/a"
    try:
        accuracy = f"{100 * cv_accuracy(a, b):.1f}"
    except ValueError as error:  # too few distinct archs to hold some out
        accuracy = f"n/a ({error})"
    return accuracy, num(mean_distance_ratio(a, b), ".3f")


def _separability_section(runs, encodings, stages) -> list[str]:
    last = {r.label: encodings[r.label][r.stages(r.rows, stages) == stages - 1] for r in runs}
    first = {r.label: encodings[r.label][[row.generation == 0 for row in r.rows]] for r in runs}
    table = []
    for a, b in itertools.combinations(runs, 2):
        table.append(
            (
                f"{a.label} vs {b.label}, last stages",
                len(last[a.label]),
                len(last[b.label]),
                *_separability(last[a.label], last[b.label]),
            )
        )
    for run in runs:
        table.append(
            (
                f"{run.label}: generation 0 vs last stage",
                len(first[run.label]),
                len(last[run.label]),
                *_separability(first[run.label], last[run.label]),
            )
        )
    return [
        "### Separability",
        "",
        "Cross-validated accuracy (5-fold, fewer when a group has fewer distinct archs; "
        "balanced) of a linear discriminant (Fisher's, covariance shrunk 20% towards its mean "
        "eigenvalue) telling the two groups apart: 50% "
        "means inseparable, 100% fully separable. Distance ratio: distance between the group "
        "means over the RMS distance of a sample to its own group's mean (about 0 for one "
        "distribution; it grows as the groups move apart). Samples include repeated archs. "
        "With few samples per group (n below) the CV accuracy swings around 50% by chance, "
        "below it too: read it together with n.",
        "",
        markdown_table(
            ["groups", "n first", "n second", "CV accuracy (%)", "distance ratio"], table
        ),
        "",
    ]


def _top_k(run: SearchRun, k: int, latency_range) -> list:
    rows = [r for r in run.scored if r.accuracy is not None]
    if latency_range is not None:
        rows = [r for r in rows if r.latency_ms is not None]
    low, high = latency_range or (-math.inf, math.inf)
    latency = [r.latency_ms if r.latency_ms is not None else 0.0 for r in rows]
    return [rows[i] for i in top_k_in_range([r.accuracy for r in rows], latency, k, low, high)]


def _operators_section(runs, option_counts, names, top_k, latency_range, out: AnalysisLayout):
    where = (
        "every latency"
        if latency_range is None
        else f"latency {latency_range[0]:g}-{latency_range[1]:g} ms"
    )
    lines = [
        "## Operator probabilities (AKD Fig. 8)",
        "",
        f"The top {top_k} students (proxy accuracy, distinct archs) of each run within {where}: "
        "how often each one-hot dimension is chosen, the difference (first run - second), its "
        "standard error sqrt(var1/n1 + var2/n2) and the significance |diff| / s.e.; sorted by "
        "significance. The CSVs list every dimension.",
        "",
    ]
    for a, b in itertools.combinations(runs, 2):
        top_a, top_b = _top_k(a, top_k, latency_range), _top_k(b, top_k, latency_range)
        title = f"{a.label} vs {b.label}"
        if min(len(top_a), len(top_b)) < 2:
            lines += [f"### {title}", "", "Under 2 students in the range: skipped.", ""]
            continue
        diffs = operator_differences(
            encode(top_a, option_counts), encode(top_b, option_counts), names
        )
        stem = f"operators_{file_label(a.label)}_vs_{file_label(b.label)}"
        write_csv(diffs, out.operators_csv(stem))
        plots.plot_operator_differences(
            diffs,
            out.figure(f"{stem}.png"),
            title=f"{title}: top {len(top_a)} vs top {len(top_b)} students, {where}",
        )
        shown = [
            (
                d["dimension"],
                f"{d['mean_a']:.2f} ± {d['std_a']:.2f}",
                f"{d['mean_b']:.2f} ± {d['std_b']:.2f}",
                f"{d['diff']:+.2f}",
                num(d["significance"], ".2f"),
            )
            for d in diffs[:SHOWN_DIMENSIONS]
        ]
        lines += [
            f"### {title}",
            "",
            f"![{title}]({_link(out, stem + '.png')})",
            "",
            markdown_table(
                [
                    "dimension",
                    f"{a.label} (mean ± std)",
                    f"{b.label} (mean ± std)",
                    "diff",
                    "significance",
                ],
                shown,
            ),
            "",
            f"All {len(diffs)} dimensions: `{stem}.csv`.",
            "",
        ]
    return lines


def _winning_section(result: dict, runs, out: AnalysisLayout) -> list[str]:
    kd, ce = runs[0].label, runs[1].label
    pairs = [
        {
            "stage": p["stage"] + 1,
            "kd_searched": p["kd_searched"],
            "ce_searched": p["ce_searched"],
            "gain_pp": p["gain_pp"],
        }
        for p in result["pairs"]
    ]
    write_csv(pairs, out.winning_csv)
    table = [
        (
            s["stage"] + 1,
            f"{s['wins']} / {s['counted']}"
            + (f" ({s['pairs'] - s['counted']} unscored)" if s["pairs"] > s["counted"] else ""),
            num(s["mean_gain_pp"], "+.2f"),
        )
        for s in result["stages"]
    ]
    return [
        "## Winning ratio (AKD Table 4)",
        "",
        f"Students sampled per stage from `{kd}` (KD reward) and `{ce}` (CE reward), each "
        f"trained on `{kd}`'s proxy task for {result['epochs']} epoch(s) with `{result['kd_loss']}`"
        " and with `ce` (same data, schedule and seed); gain = eq. 1, [KD(A) - CE(A)] - [KD(N) -"
        " CE(N)] in percentage points of mini-val accuracy; a win is a gain > 0. "
        f"{result['trained']} trainings ran in this call (the rest were read from "
        "`winning_trainings.json`). Pairs: `winning_ratio.csv`.",
        "",
        markdown_table(["stage", "winning ratio", "mean gain (pp)"], table),
        "",
    ]


def write_analysis(
    folders: Sequence[Path],
    out: Path,
    *,
    labels: Sequence[str] = (),
    stages: int = 4,
    top_k: int = 100,
    latency_range: tuple[float, float] | None = None,
    winning_per_stage: int = 0,
    winning_epochs: int | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = lambda message: None,
) -> Path:
    """Analyse the searches in `folders` into `out`; returns the report's path."""
    runs = load_runs(folders, labels)
    _check_out(out, runs)
    asked, stages = stages, min(stages, *(r.last_generation + 1 for r in runs))
    layout = AnalysisLayout(out)
    layout.figures.mkdir(parents=True, exist_ok=True)
    option_counts, names = encoding_of(runs[0].space)
    encodings = {r.label: encode(r.rows, option_counts) for r in runs}
    lines = [f"# Pearl analysis: {', '.join(r.label for r in runs)}", ""]
    lines += _runs_section(runs)
    lines += [
        "## The searches (AKD Fig. 4)",
        "",
        f"Stages: the generations of each run cut into {stages} equal slices"
        + (
            f" ({asked} asked; the shortest run has {stages} generations)."
            if asked > stages
            else "."
        ),
        "",
    ]
    for run in runs:
        lines += _fig4(run, stages, layout)
    lines += _pca_section(runs, encodings, option_counts, stages, layout)
    lines += _separability_section(runs, encodings, stages)
    if len(runs) > 1:
        lines += _operators_section(runs, option_counts, names, top_k, latency_range, layout)
    if winning_per_stage:
        from pipeline.analysis.winning import run_winning_ratio

        result = run_winning_ratio(
            runs,
            layout,
            per_stage=winning_per_stage,
            stages=stages,
            seed=seed,
            epochs=winning_epochs,
            progress=progress,
            log=log,
        )
        lines += _winning_section(result, runs, layout)
    _write_samples(runs, layout)
    return atomic_write(layout.report, "\n".join(lines))


def _write_samples(runs, out: AnalysisLayout) -> None:
    """``samples.csv``: every sampled student of every run (the rows behind the figures)."""
    table = []
    for run in runs:
        for row in run.rows:
            table.append(
                {
                    "run": run.label,
                    "id": row.id,
                    "generation": row.generation,
                    "slot": row.slot,
                    "key": row.key,
                    "status": row.status,
                    "accuracy": row.accuracy,
                    "latency_ms": row.latency_ms,
                    "macs": row.macs,
                    "params": row.params,
                    "reward": row.reward,
                    "reused_from": row.reused_from,
                    "arch": row.arch,
                }
            )
    write_csv(table, out.samples_csv)
