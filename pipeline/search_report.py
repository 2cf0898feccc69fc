"""What a finished search writes into its folder (`pipeline.layout.SearchLayout`), from its
scored rows:

* ``candidates.csv``: every distinct evaluated arch;
* ``pareto.csv`` / ``pareto.png``: the accuracy-vs-cost Pareto front (cost = the reward's cost,
  latency in ms by default);
* ``best_arch.json``: the winner of each report target (`pipeline.winners`: the most accurate
  arch within the target), and ``best_arch.txt``: the arch string for the reward's target (the
  input of ``pearl export`` / a later ``pearl run``).

The rows it is given are final: re-measuring winners on the best backend is a step of the
search (`pipeline.search.Search.settle_winners`), done before this runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.files import atomic_write, atomic_write_json
from pipeline.config import SearchConfig
from pipeline.layout import SearchLayout
from pipeline.pareto import pareto_front, plot_front, write_csv
from pipeline.winners import WINNER_FIELDS, memory_budgets, pick_winners

CSV_FIELDS = (*WINNER_FIELDS[:-1], "reward", "status", "train_seconds", "arch")


def report_targets(config: SearchConfig) -> list[float]:
    return list(config.search.report_targets or (config.reward.target,))


def winners_of(rows: Sequence[Any], config: SearchConfig) -> list[dict[str, Any]]:
    """`pipeline.winners.pick_winners` with this config's targets, reward and memory budget."""
    return pick_winners(rows, report_targets(config), config.reward.spec(), memory_budgets(config))


def _front(rows: Sequence[Any], cost_name: str) -> list[int]:
    return pareto_front([(r.accuracy, float(r.cost(cost_name))) for r in rows])


def contenders(rows: Sequence[Any], config: SearchConfig) -> list[Any]:
    """The rows whose latency decides the result: the Pareto front and every winner."""
    cost_name = config.reward.cost
    chosen = {rows[i].id: rows[i] for i in _front(rows, cost_name)}
    by_key = {r.key: r for r in rows}
    for winner in winners_of(rows, config):
        if winner.get("arch"):
            chosen.setdefault(by_key[winner["key"]].id, by_key[winner["key"]])
    return list(chosen.values())


def write_search_outputs(
    layout: SearchLayout,
    config: SearchConfig,
    rows: Sequence[Any],
    *,
    candidates: int,
    generations: int,
    latency_backends: list[dict[str, Any]],
) -> dict[str, Any]:
    """Write the result files from the scored rows (`ResultsStore.scored`); the summary."""
    cost_name = config.reward.cost
    targets = report_targets(config)
    front = _front(rows, cost_name)
    table = [{name: r.to_dict()[name] for name in CSV_FIELDS} for r in rows]
    write_csv(table, layout.candidates_csv)
    write_csv([table[i] for i in front], layout.pareto_csv)
    if rows:
        title = (
            f"{len(rows)} archs, {config.controller.name}, loss "
            f"{config.proxy.loss}, reward {config.reward.preset}"
        )
        points = [(r.accuracy, float(r.cost(cost_name))) for r in rows]
        plot_front(
            points, front, layout.pareto_png, cost_name=cost_name, targets=targets, title=title
        )
    row_of = {r.key: r for r in rows}
    best = []
    for winner in winners_of(rows, config):
        entry = {**winner, "cost": cost_name}
        if winner.get("arch"):
            fields = row_of[winner["key"]].to_dict()
            entry.update({name: fields[name] for name in CSV_FIELDS if name not in entry})
        best.append(entry)
    atomic_write_json(layout.best_arch_json, best)
    primary = next((b for b in best if b["target"] == config.reward.target), best[0])
    if primary.get("arch"):
        atomic_write(layout.best_arch_txt, primary["arch"] + "\n")
    return {
        "run_dir": str(layout.root),
        "candidates": candidates,
        "distinct_archs": len(rows),
        "generations": generations,
        "cost": cost_name,
        "best": best,
        "best_arch": primary if primary.get("arch") else None,
        "pareto_front": [table[i] for i in front],
        "latency_backends": latency_backends,
    }
