"""AKD Table 4: does the KD-reward search find students that gain more from distillation?

From two searches (KD reward, CE reward) N students are sampled from each stage, each student
is trained twice on the KD search's proxy task (same data, schedule and seed): once with its
loss (KD) and once with cross-entropy, through the project's executor (`search.executor`).
Each pair (i-th KD-searched, i-th CE-searched student of a stage) gets AKD eq. 1's relative gain
``[KD(A) - CE(A)] - [KD(N) - CE(N)]`` (percentage points of mini-val accuracy); the winning
ratio of a stage is the share of pairs with a positive gain.

Resumable: the plan (which students) and every finished training are written atomically to
the --out folder as they happen; a rerun trains only what is missing.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

from models.files import atomic_write_json, read_json
from pipeline.analysis.runs import AnalysisError, SearchRun
from pipeline.analysis.stats import relative_gains, winning_ratio
from pipeline.layout import AnalysisLayout
from pipeline.registry import LOSSES


def sample_pairs(kd: SearchRun, ce: SearchRun, per_stage: int, stages: int, seed: int):
    """Pairs of ``(stage, KD-searched arch, CE-searched arch)``: up to `per_stage` distinct
    scored students drawn at random from each stage of each search (as many pairs as the
    smaller draw)."""
    pairs = []
    for stage in range(stages):
        drawn = []
        for run in (kd, ce):
            rows = [
                r
                for r, s in zip(run.scored, run.stages(run.scored, stages), strict=True)
                if s == stage
            ]
            distinct = list({r.key: r.arch for r in rows}.values())
            rng = random.Random(f"{seed}:{stage}:{run.label}")
            drawn.append(rng.sample(distinct, min(per_stage, len(distinct))))
        pairs += [
            {"stage": stage, "kd_searched": a, "ce_searched": b}
            for a, b in zip(*drawn, strict=False)
        ]
    return pairs


def _plan(kd, ce, per_stage, stages, seed, epochs, out: AnalysisLayout) -> dict:
    settings = {
        "kd_search": str(kd.layout.root.resolve()),
        "ce_search": str(ce.layout.root.resolve()),
        "per_stage": per_stage,
        "stages": stages,
        "seed": seed,
        "epochs": epochs,
    }
    stored = read_json(out.winning_plan)
    if stored is not None:
        if stored["settings"] != settings:
            raise AnalysisError(
                f"{out.winning_plan} holds a winning-ratio plan made with other settings "
                f"({stored['settings']}); give another --out, or delete the file to start over"
            )
        return stored
    plan = {"settings": settings, "pairs": sample_pairs(kd, ce, per_stage, stages, seed)}
    atomic_write_json(out.winning_plan, plan)
    return plan


def _check_runs(kd: SearchRun, ce: SearchRun) -> None:
    if not kd.uses_teacher or ce.uses_teacher:
        raise AnalysisError(
            "--winning-ratio compares the first RUN_DIR (a KD-reward search) with the second (a "
            f"CE-reward search); got proxy.loss {kd.config.proxy.loss!r} and "
            f"{ce.config.proxy.loss!r}: give the KD search first, then the CE search"
        )


def training_task(config, loss: str, epochs: int, log: Callable[[str], None]):
    """The executor that trains students on `config`'s proxy task with `loss` for `epochs`
    (the teacher's logits come from the teacher-logit cache, as in the search)."""
    from pipeline.search_setup import build_executor, load_splits, proxy_task, proxy_teacher

    proxy = dataclasses.replace(config.proxy, loss=loss, epochs=epochs, early_stop_epoch=0)
    warmup = min(proxy.warmup_epochs, epochs)
    config = dataclasses.replace(config, proxy=dataclasses.replace(proxy, warmup_epochs=warmup))
    mini_train, mini_val = load_splits(config)
    teacher = None
    if LOSSES[loss].needs_teacher:
        teacher = proxy_teacher(config, mini_train)[0]
    task = proxy_task(config, mini_train, mini_val, teacher)
    return build_executor(config, task, log)


def run_winning_ratio(
    runs: Sequence[SearchRun],
    out: AnalysisLayout,
    *,
    per_stage: int,
    stages: int,
    seed: int = 0,
    epochs: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Train what the plan still lacks and return ``{"pairs": [...], "stages": [...],
    "trained": count trained now, "epochs": E, "kd_loss": loss}``."""
    from models.network import decode_network
    from pipeline.executor import TrainJob
    from pipeline.progress import progress_bar

    if len(runs) < 2:
        raise AnalysisError(
            "--winning-ratio needs two RUN_DIRs: a KD-reward and a CE-reward search"
        )
    kd, ce = runs[0], runs[1]
    _check_runs(kd, ce)
    epochs = epochs or kd.config.proxy.epochs
    plan = _plan(kd, ce, per_stage, stages, seed, epochs, out)
    kd_loss = kd.config.proxy.loss
    done = read_json(out.winning_trainings) or {}
    archs = {p[side] for p in plan["pairs"] for side in ("kd_searched", "ce_searched")}
    todo = {
        loss: sorted(a for a in archs if loss not in done.get(decode_network(a).key(), {}))
        for loss in (kd_loss, "ce")
    }
    trained = 0
    total = sum(len(v) for v in todo.values())
    with progress_bar(fields=("status",), transient=True) as bar:
        task_id = bar.add_task(
            "winning ratio: trainings", total=total, status="", visible=progress and total > 0
        )
        for loss, pending in todo.items():
            if not pending:
                continue
            executor = training_task(kd.config, loss, epochs, log)
            try:
                jobs = [TrainJob(0, i, arch) for i, arch in enumerate(pending)]
                for job, result in executor.train(jobs):
                    key = decode_network(job.arch).key()
                    entry = (
                        {"error": f"{type(result).__name__}: {result}"}
                        if isinstance(result, BaseException)
                        else result.accuracy
                    )
                    done.setdefault(key, {})[loss] = entry
                    atomic_write_json(out.winning_trainings, done)
                    trained += 1
                    bar.update(task_id, advance=1, status=f"{loss} {key}")
            finally:
                executor.close()
    return {
        **summarise(plan["pairs"], done, kd_loss, stages),
        "trained": trained,
        "epochs": epochs,
        "kd_loss": kd_loss,
    }


def summarise(pairs: Sequence[dict], done: dict, kd_loss: str, stages: int) -> dict[str, Any]:
    """Eq. 1 per pair (None when a training of the pair failed) and the ratio per stage."""
    from models.network import decode_network

    def scores(arch: str):
        entry = done.get(decode_network(arch).key(), {})
        kd, ce = entry.get(kd_loss), entry.get("ce")
        ok = isinstance(kd, float) and isinstance(ce, float)
        return (100 * kd, 100 * ce) if ok else None

    rows = []
    for pair in pairs:
        a, n = scores(pair["kd_searched"]), scores(pair["ce_searched"])
        gain = relative_gains([a], [n])[0] if a and n else None
        rows.append({**pair, "kd_searched_scores": a, "ce_searched_scores": n, "gain_pp": gain})
    per_stage = []
    for stage in range(stages):
        mine = [r for r in rows if r["stage"] == stage]
        gains = [r["gain_pp"] for r in mine if r["gain_pp"] is not None]
        wins, counted = winning_ratio(gains)
        per_stage.append(
            {
                "stage": stage,
                "pairs": len(mine),
                "wins": wins,
                "counted": counted,
                "mean_gain_pp": sum(gains) / len(gains) if gains else None,
            }
        )
    return {"pairs": rows, "stages": per_stage}
