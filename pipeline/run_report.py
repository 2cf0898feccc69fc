"""`pearl report RUN_DIR`: ``report.md`` with PNG figures from what a run folder holds.

Works on a `pearl run` folder (search/, winners.json, train/, export/, latency.json: every part
that exists is reported) and on a bare `pearl search` folder (results.sqlite at its top).
Figures: the search's latency-vs-accuracy scatter with the Pareto front, latency and accuracy
against generation, and the final training curves.  Tables never mix runtimes: LiteRT files
on the target device in one, ONNX Runtime on the host in another.
"""

from __future__ import annotations

import json
from pathlib import Path

from models.files import atomic_write, read_json
from pipeline.config import ConfigError, SearchConfig, load_config
from pipeline.gates.report import report_lines
from pipeline.layout import RunLayout, SearchLayout
from pipeline.pareto import pareto_front
from pipeline.report_ensemble import ensemble_section
from pipeline.report_final import final_section
from pipeline.report_plots import (
    COST_AXIS,
    cost_axis_label,
    plot_progress,
    plot_search,
)
from pipeline.report_text import markdown_table, num, pct
from pipeline.run_config import RUN_SECTIONS, RunConfig
from pipeline.search_report import report_targets
from pipeline.store import ResultsStore


class ReportError(ValueError):
    """RUN_DIR is not something pearl wrote."""


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
    method = config.search.method
    proposer = f"controller `{config.controller.name}`" if method == "akd" else f"method `{method}`"
    lines += [
        "## Search",
        "",
        f"{total} candidates proposed, {len(rows)} distinct archs scored, {proposer}, "
        f"proxy loss `{config.proxy.loss}`, reward "
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
        title=f"{len(rows)} archs: proxy accuracy vs {COST_AXIS[cost_name]} (stars: winners)",
        x_label=cost_label,
        chance=chance,
    )
    where = _latency_where(rows) if cost_name == "latency_ms" else ""
    plot_progress(rows, cost_name, figures / "search_progress.png", where=where)
    lines += [
        f"![search: accuracy vs {cost_name}]({figures.name}/search_front.png)",
        "",
        f"![search progress]({figures.name}/search_progress.png)",
        "",
    ]
    lines += report_lines(search.gates, figures.parent)
    if config.search.method == "kdas":
        from pipeline.report_kdas import kdas_section

        chosen = winners if winners is not None else read_json(search.best_arch_json)
        lines += kdas_section(config, rows, chosen, figures)
    front = pareto_front([(r.accuracy, float(r.cost(cost_name))) for r in rows])
    memory = config.reward.needs_memory and cost_name != "memory_mb"  # a column of its own
    lines += [
        "Pareto front:",
        "",
        markdown_table(
            ["proxy acc (%)", cost_name, "MACs (M)", "params (M)"]
            + ["memory (MB)"] * memory
            + ["generation", "key"],
            [
                (
                    pct(rows[i].accuracy),
                    num(float(rows[i].cost(cost_name)), ".4g"),
                    f"{rows[i].macs / 1e6:.1f}",
                    f"{rows[i].params / 1e6:.3f}",
                    *[num(rows[i].memory_mb, ".2f")] * memory,
                    rows[i].generation,
                    f"`{rows[i].key}`",
                )
                for i in front
            ],
        ),
        "",
    ]
    lines += memory_lines(config, winners or [])


def memory_lines(config: SearchConfig, winners) -> list[str]:
    """Where the memory numbers come from and each winner's, when the run uses memory."""
    if not config.reward.needs_memory:
        return []
    source = config.reward.memory_source
    how = "`models.memory` estimate" if source == "estimate" else "measured on the phone"
    budget = f", budget {config.reward.max_memory_mb:g} MB" if config.reward.max_memory_mb else ""
    chosen = [
        f"`{w['key']}` {num(w.get('memory_mb'), '.2f')} MB"
        + ("" if w.get("within_memory", True) else " (OVER the budget: none fits)")
        for w in winners
        if w.get("arch")
    ]
    return [f"Memory (MB, {how}{budget}); winners: {', '.join(chosen) or 'none'}.", ""]


def _latency_where(rows) -> str:
    """`` on SPEC, STATISTIC`` for the latency axis: where the numbers were taken and how."""
    specs = sorted({r.latency_spec for r in rows if r.latency_spec})
    if not specs:
        return ""
    tables = all(r.latency_source == "table" for r in rows if r.latency_source)
    statistic = "table prediction" if tables else "fastest of the timed runs"
    return f" on {', '.join(specs)}, {statistic}"


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
    winners = read_json(layout.winners)
    latency = read_json(layout.latency)
    figures = layout.figures
    figures.mkdir(exist_ok=True)
    lines = [f"# Pearl report: {run_dir.name}", ""]
    if config is not None:
        lines += [f"Teacher `{config.teacher.spec}`, data `{config.data.path}`.", ""]
        lines += ensemble_section(config.teacher.spec)
    if search is not None:
        _search_section(search, config, winners, figures, lines)
    if trained:
        lines += final_section(layout, trained, winners, latency, figures)
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
