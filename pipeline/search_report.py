"""What a finished search writes into its run folder:

* ``candidates.csv``: every distinct evaluated arch;
* ``pareto.csv`` / ``pareto.png``: the accuracy-vs-cost Pareto front (cost = the reward's cost,
  latency in ms by default);
* ``best_arch.json``: the most accurate arch within each report target, and ``best_arch.txt``:
  the arch string for the reward's target (the input of ``pearl export`` / a later ``pearl run``).

Before a candidate can win, its latency must come from the most trusted backend that is up: a
winner or front member timed by a worse one (a table, while the phone was away) is re-measured
first, and the choice is made again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.pareto import best_under, pareto_front, plot_front, write_csv

CSV_FIELDS = (
    "key",
    "accuracy",
    "latency_ms",
    "latency_source",
    "latency_spec",
    "macs",
    "params",
    "reward",
    "status",
    "generation",
    "train_seconds",
    "arch",
)


def _evaluated(search) -> list:
    cost_name = search.config.reward.cost
    rows = search.store.candidates("WHERE reused_from IS NULL AND status IN ('ok','terminated')")
    return [r for r in rows if r.cost(cost_name) is not None and r.accuracy is not None]


def _choose(search):
    cost_name = search.config.reward.cost
    rows = _evaluated(search)
    points = [(r.accuracy, float(r.cost(cost_name))) for r in rows]
    targets = list(search.config.search.report_targets or (search.config.reward.target,))
    front = pareto_front(points)
    winners = {t: best_under(points, t) for t in targets}
    return rows, points, targets, front, winners


def write_report(search) -> dict[str, Any]:
    chain = search.setup.chain
    if chain is not None:
        chain.refresh()
        for _ in range(5):  # re-measure winners and the front until the choice is stable
            rows, _, _, front, winners = _choose(search)
            contenders = {rows[i].id: rows[i] for i in front}
            contenders.update({rows[i].id: rows[i] for i in winners.values() if i is not None})
            if not search.remeasure(list(contenders.values())):
                break
    rows, points, targets, front, winners = _choose(search)
    cost_name = search.config.reward.cost
    out = search.run_dir
    table = [{name: r.to_dict()[name] for name in CSV_FIELDS} for r in rows]
    write_csv(table, out / "candidates.csv")
    write_csv([table[i] for i in front], out / "pareto.csv")
    if rows:
        title = (
            f"{len(rows)} archs, {search.config.controller.name}, loss "
            f"{search.config.proxy.loss}, reward {search.config.reward.preset}"
        )
        plot_front(
            points, front, out / "pareto.png", cost_name=cost_name, targets=targets, title=title
        )
    best = []
    for target, index in winners.items():
        entry: dict[str, Any] = {"target": target, "cost": cost_name}
        if index is None:
            entry["arch"] = None
            entry["note"] = f"no evaluated arch has {cost_name} <= {target:g}"
        else:
            row = rows[index]
            entry.update({name: row.to_dict()[name] for name in CSV_FIELDS})
        best.append(entry)
    _write_text(out / "best_arch.json", json.dumps(best, indent=2) + "\n")
    reward_target = search.config.reward.target
    primary = next((b for b in best if b["target"] == reward_target), best[0] if best else None)
    if primary is None or primary.get("arch") is None:
        # nothing within the reward's target: fall back to the best reward
        top = max(rows, key=lambda r: (r.reward or 0.0, -r.id), default=None)
        primary = {name: top.to_dict()[name] for name in CSV_FIELDS} if top else None
    if primary is not None and primary.get("arch"):
        _write_text(out / "best_arch.txt", primary["arch"] + "\n")
    return {
        "run_dir": str(out),
        "candidates": search.store.count(),
        "distinct_archs": len(rows),
        "generations": search.generation,
        "cost": cost_name,
        "best": best,
        "best_arch": primary,
        "pareto_front": [table[i] for i in front],
        "latency_backends": chain.status() if chain is not None else [],
    }


def _write_text(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
