"""`pearl report RUN_DIR`: ``report.md`` with PNG figures from what a run folder holds.

Works on a `pearl run` folder (search/, winners.json, train/, export/, latency.json: every part
that exists is reported) and on a bare `pearl search` folder (results.sqlite at its top).
Figures: the search's latency-vs-accuracy scatter with the Pareto front, latency and accuracy
against generation, and the final training curves.  Tables never mix runtimes: LiteRT files
on the target device in one, ONNX Runtime on the host in another.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.export.common import FORMATS
from models.files import atomic_write
from pipeline.config import ConfigError, SearchConfig, load_config
from pipeline.layout import RunLayout, SearchLayout, is_baseline, searched_label
from pipeline.pareto import pareto_front
from pipeline.report_plots import (
    cost_axis_label,
    plot_progress,
    plot_search,
    plot_training,
)
from pipeline.run_config import RUN_SECTIONS, RunConfig
from pipeline.search_report import report_targets
from pipeline.store import ResultsStore

TFLITE_FORMATS = tuple(name for name, spec in FORMATS.items() if spec.runtime == "litert")


class ReportError(ValueError):
    """RUN_DIR is not something pearl wrote."""


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _config(layout: RunLayout, search: SearchLayout | None) -> SearchConfig | None:
    """The run's config through the config loader (a `pearl run` folder's has [train] and
    [export]; a bare search folder's has the search sections only)."""
    try:
        if layout.config.is_file() and search != SearchLayout(layout.root):
            return load_config(layout.config, None, RunConfig, RUN_SECTIONS)
        if search is not None and search.config.is_file():
            return load_config(search.config)
    except ConfigError as error:
        raise ReportError(f"cannot read the run's config: {error}") from None
    if search is not None:
        raise ReportError(f"{search.root} has no config.toml: not a folder pearl wrote")
    return None  # trained models alone: nothing in the report needs the config


# -- pure helpers ----------------------------------------------------------------------------


def kd_gain(per_loss: dict[str, dict]) -> float | None:
    """Final top-1 with KD minus with cross-entropy (percentage points), if both were trained."""
    kd, ce = per_loss.get("kd"), per_loss.get("ce")
    if not kd or not ce or kd.get("top1") is None or ce.get("top1") is None:
        return None
    return 100 * (kd["top1"] - ce["top1"])


def relative_gain(searched: float | None, baseline: float | None) -> float | None:
    """AKD eq. 1: [KD(searched) - CE(searched)] - [KD(baseline) - CE(baseline)]."""
    if searched is None or baseline is None:
        return None
    return searched - baseline


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "n/a" if value is None else format(value, fmt)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- the report ------------------------------------------------------------------------------


def trained_runs(run_dir: Path) -> dict[str, dict[str, dict]]:
    from pipeline.training import METRICS_FILE

    trained: dict[str, dict[str, dict]] = {}
    for metrics_path in sorted(RunLayout(run_dir).train_root.glob(f"*/{METRICS_FILE}")):
        label, loss = RunLayout.parse_train_dir(metrics_path.parent)
        trained.setdefault(label, {})[loss] = json.loads(metrics_path.read_text())
    return trained


def _search_section(
    search: SearchLayout, config: SearchConfig, winners, figures: Path, lines: list
) -> None:
    cost_name = config.reward.cost
    with ResultsStore(search.store) as store:
        rows = store.scored(cost_name)
        total = store.count()
    targets = report_targets(config)
    lines += [
        "## Search",
        "",
        f"{total} candidates proposed, {len(rows)} distinct archs scored, controller "
        f"`{config.controller.name}`, proxy loss `{config.proxy.loss}`, reward "
        f"`{config.reward.preset}` with target {', '.join(f'{t:g}' for t in targets)} "
        f"({cost_name}).",
        "",
    ]
    if not rows:
        lines += ["No candidate was scored yet.", ""]
        return
    sources = sorted({f"{r.latency_source} ({r.latency_spec})" for r in rows if r.latency_source})
    if sources:
        lines += [f"Latency sources: {', '.join(sources)}.", ""]
    winner_keys = {w["key"] for w in winners or [] if w.get("arch")}
    cost_label = cost_axis_label(cost_name, _latency_where(rows))
    chance = 1 / config.space.num_classes
    plot_search(
        rows,
        cost_name,
        targets,
        winner_keys,
        figures / "search_front.png",
        title=f"{len(rows)} archs: proxy accuracy vs {cost_name} (stars: winners)",
        x_label=cost_label,
        chance=chance,
    )
    plot_progress(rows, cost_name, figures / "search_progress.png", cost_label=cost_label)
    lines += [
        f"![search: accuracy vs {cost_name}]({figures.name}/search_front.png)",
        "",
        f"![search progress]({figures.name}/search_progress.png)",
        "",
    ]
    front = pareto_front([(r.accuracy, float(r.cost(cost_name))) for r in rows])
    lines += [
        "Pareto front:",
        "",
        markdown_table(
            ["proxy acc (%)", cost_name, "MACs (M)", "params (M)", "generation", "key"],
            [
                (
                    _pct(rows[i].accuracy),
                    _num(float(rows[i].cost(cost_name)), ".4g"),
                    f"{rows[i].macs / 1e6:.1f}",
                    f"{rows[i].params / 1e6:.3f}",
                    rows[i].generation,
                    f"`{rows[i].key}`",
                )
                for i in front
            ],
        ),
        "",
    ]


def _latency_where(rows) -> str:
    """`` on SPEC, STATISTIC`` for the latency axis: where the numbers were taken and how."""
    specs = sorted({r.latency_spec for r in rows if r.latency_spec})
    if not specs:
        return ""
    tables = all(r.latency_source == "table" for r in rows if r.latency_source)
    statistic = "table prediction" if tables else "fastest of the timed runs"
    return f" on {', '.join(specs)}, {statistic}"


def _latency_by(latency: dict | None) -> dict[tuple[str, str], dict]:
    return {(r["label"], r["format"]): r for r in (latency or {}).get("rows", [])}


def _relative_gain_lines(trained: dict[str, dict[str, dict]]) -> list[str]:
    """AKD eq. 1 per searched model, against the baseline (none without both losses)."""
    gains = {label: kd_gain(per_loss) for label, per_loss in trained.items()}
    baseline = next((g for label, g in gains.items() if is_baseline(label)), None)
    searched = [(label, g) for label, g in gains.items() if not is_baseline(label)]
    if baseline is not None and any(g is not None for _, g in searched):
        return [
            "### Relative gain (AKD eq. 1)",
            "",
            "[KD(searched) - CE(searched)] - [KD(baseline) - CE(baseline)], percentage points; "
            "positive means the searched student profits more from this teacher than the "
            "baseline does.",
            "",
            markdown_table(
                ["searched", "KD - CE", "baseline KD - CE", "relative gain"],
                [
                    (
                        f"`{label}`",
                        _num(g, "+.2f"),
                        _num(baseline, "+.2f"),
                        _num(relative_gain(g, baseline), "+.2f"),
                    )
                    for label, g in searched
                ],
            ),
            "",
        ]
    return []


def _final_section(run_dir, trained, winners, latency, figures: Path, lines: list) -> None:
    by_file = _latency_by(latency)
    device = (latency or {}).get("device", "?")
    key_of = {searched_label(w["key"]): w for w in winners or [] if w.get("arch")}
    lines += ["## Winners and baseline after final training", ""]
    header = ["model", "MACs (M)", "params (M)", "proxy acc (%)"]
    losses = sorted({loss for per_loss in trained.values() for loss in per_loss})
    header += [f"top-1 {loss} (%)" for loss in losses] + ["KD - CE (pp)"]
    header += [f"{fmt} ms" for fmt in TFLITE_FORMATS]
    rows = []
    for label, per_loss in sorted(trained.items(), key=lambda item: is_baseline(item[0])):
        any_metrics = next(iter(per_loss.values()))
        metadata = _read_json(RunLayout(run_dir).bundle_metadata(label)) or {}
        winner = key_of.get(label, {})
        rows.append(
            [
                f"`{label}`",
                _num((metadata.get("macs") or 0) / 1e6, ".1f"),
                _num((metadata.get("params") or any_metrics.get("params") or 0) / 1e6, ".3f"),
                _pct(winner.get("accuracy")),
            ]
            + [_pct(per_loss.get(loss, {}).get("top1")) for loss in losses]
            + [_num(kd_gain(per_loss), "+.2f")]
            + [_num(by_file.get((label, fmt), {}).get("latency_ms")) for fmt in TFLITE_FORMATS]
        )
    lines += [
        markdown_table(header, rows),
        "",
        f"Latency: the exported LiteRT files on `{device}` (min over timed runs, ms per image).",
        "",
    ]
    onnx = [(label, r) for (label, fmt), r in by_file.items() if fmt == "onnx"]
    if onnx:
        lines += [
            "ONNX Runtime on this host (a different runtime: not comparable with the table above):",
            "",
            markdown_table(
                ["model", "onnx ms (min)", "median ms"],
                [(f"`{label}`", _num(r["latency_ms"]), _num(r["median_ms"])) for label, r in onnx],
            ),
            "",
        ]
    teacher = next(
        (
            m["teacher"]
            for per_loss in trained.values()
            for m in per_loss.values()
            if m.get("teacher")
        ),
        None,
    )
    if teacher:
        lines += [
            f"Teacher `{teacher.get('spec')}`: test top-1 {_pct(teacher.get('top1'))}% on "
            "the same split.",
            "",
        ]
    lines += _relative_gain_lines(trained)
    plot_training(trained, figures / "final_training.png")
    lines += [f"![final training]({figures.name}/final_training.png)", ""]
    for label in trained:
        metadata = _read_json(RunLayout(run_dir).bundle_metadata(label))
        if metadata and metadata.get("accuracy"):
            lines += [
                f"Exported `{label}` accuracy per file: "
                + json.dumps(metadata["accuracy"], sort_keys=True)[:600],
                "",
            ]
        if metadata:
            lines += [f"`{label}` arch: `{metadata.get('arch')}`", ""]


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report.md`` and its figures; returns the report's path."""
    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    search = layout.find_search()
    trained = trained_runs(run_dir)
    if search is None and not trained:
        raise ReportError(
            f"{run_dir} holds neither a search (results.sqlite) nor trained models; give the "
            "folder of a `pearl run` or `pearl search`"
        )
    config = _config(layout, search)
    winners = _read_json(layout.winners)
    latency = _read_json(layout.latency)
    figures = layout.figures
    figures.mkdir(exist_ok=True)
    lines = [f"# Pearl report: {run_dir.name}", ""]
    if config is not None:
        lines += [f"Teacher `{config.teacher.spec}`, data `{config.data.path}`.", ""]
    if search is not None:
        _search_section(search, config, winners, figures, lines)
    if trained:
        _final_section(run_dir, trained, winners, latency, figures, lines)
    lines += ["## Reproduce", "", "```bash"]
    if layout.search.root.is_dir():
        lines += [
            f"pearl run --config {layout.config} --out NEW_RUN_DIR",
            f"pearl run --resume {run_dir}    # continue this one after a kill",
        ]
    else:
        lines += [f"pearl search --config {layout.config} --out NEW_RUN_DIR"]
    lines += [f"pearl report {run_dir}", "```", ""]
    return atomic_write(layout.report, "\n".join(lines))
