"""The search folders `pearl analyze` reads: each a `pearl search` folder or a `pearl run` folder
(its ``search/``), read through `pipeline.layout`, the config loader and `ResultsStore`.  Nothing
is written into them (the store is opened only when ``results.sqlite`` is already there)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.analysis.stats import dimension_names, one_hot, stage_of
from pipeline.config import ConfigError, SearchConfig, load_config
from pipeline.layout import RunLayout, SearchLayout
from pipeline.registry import LOSSES
from pipeline.store import FINAL_STATUSES, ResultsStore, StoreError


class AnalysisError(ValueError):
    """The inputs cannot be analysed; the message names the folder and what to do."""


@dataclass(frozen=True)
class SearchRun:
    """One search, as the analyses need it."""

    label: str
    folder: Path  # as given: a search folder, or a `pearl run` folder holding search/
    layout: SearchLayout
    config: SearchConfig
    rows: list[Any]  # every proposed candidate that ended (ok, terminated, failed), id order
    scored: list[Any]  # first evaluations with an accuracy (no reuses)

    @property
    def space(self):
        return self.config.space.build()

    @property
    def uses_teacher(self) -> bool:
        return LOSSES[self.config.proxy.loss].needs_teacher

    @property
    def last_generation(self) -> int:
        return max((r.generation for r in self.rows), default=0)

    def stages(self, rows: Sequence[Any], stages: int) -> np.ndarray:
        return stage_of([r.generation for r in rows], stages, self.last_generation)


def load_run(folder: Path, label: str | None = None) -> SearchRun:
    """The search in `folder` (a `pearl search` or `pearl run` folder); an `AnalysisError`
    when it holds none, or its config or store cannot be read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AnalysisError(f"{folder} is not a folder; give the folder of a pearl search")
    layout = RunLayout(folder).find_search()
    if layout is None:
        raise AnalysisError(
            f"{folder} is not a search folder (no {SearchLayout(folder).store.name} in it or in "
            f"its search/); give the folder of a `pearl search` or `pearl run`"
        )
    if not layout.config.is_file():
        raise AnalysisError(f"{layout.root} has no {layout.config.name}: not a folder pearl wrote")
    try:
        config = load_config(layout.config)
    except ConfigError as error:
        raise AnalysisError(f"cannot read {layout.config}: {error}") from None
    try:
        with ResultsStore(layout.store) as store:
            rows = store.candidates("WHERE status IN (?, ?, ?)", FINAL_STATUSES)
            scored = store.scored()
    except StoreError as error:
        raise AnalysisError(str(error)) from None
    if not rows:
        raise AnalysisError(f"{layout.root} holds no finished candidate yet: nothing to analyse")
    return SearchRun(label or folder.name, folder, layout, config, rows, scored)


def load_runs(folders: Sequence[Path], labels: Sequence[str] = ()) -> list[SearchRun]:
    """Every folder as a `SearchRun`; they must share one search space (one encoding)."""
    if labels and len(labels) != len(folders):
        raise AnalysisError(
            f"{len(labels)} --label given for {len(folders)} folders: give one per folder or none"
        )
    runs = [load_run(f, labels[i] if labels else None) for i, f in enumerate(folders)]
    if len({r.label for r in runs}) != len(runs):
        raise AnalysisError("two runs have the same label; name them apart with --label")
    first = runs[0].space.decisions()
    for run in runs[1:]:
        if run.space.decisions() != first:
            raise AnalysisError(
                f"{run.layout.root} searched another space ({run.config.space}) than "
                f"{runs[0].layout.root} ({runs[0].config.space}); the encodings cannot be "
                "compared: analyse runs of one space together"
            )
    return runs


def encoding_of(space):
    """``(option counts per decision, dimension names)`` of the one-hot encoding of `space`."""
    return [len(d.options) for d in space.decisions()], dimension_names(space)


def encode(rows: Sequence[Any], option_counts: Sequence[int]) -> np.ndarray:
    return one_hot([r.choices for r in rows], option_counts)
