"""Where everything lives in a run folder: the one place its folder and file names are spelled.

A `pearl search` folder (`SearchLayout`)::

    config.toml        the resolved config (`pipeline.config_hash.save_config`)
    results.sqlite     every candidate and controller update (`pipeline.store`)
    evaluations.jsonl  every row the store writes, appended whole, and each finished
                       generation (a log; the store is the truth; `pipeline.repair` rebuilds
                       a damaged store from it)
    pearl.lock         while a process works in the folder (`pipeline.lock`)
    summary.json       written when the search reached its budget
    candidates.csv, pareto.csv, pareto.png, best_arch.json, best_arch.txt

A `pearl run` folder (`RunLayout`) holds a search folder and the stages after it::

    config.toml, pearl.lock, search/, winners.json, train/LABEL-LOSS/, export/LABEL/,
    latency.json, report.md, figures/

LABEL is ``searched-KEY`` for a winner (KEY: its arch key) and ``baseline-NAME``.

A `pearl analyze --out` folder (`AnalysisLayout`)::

    analysis.md, figures/, samples.csv, operators_A_vs_B.csv (one per pair of runs),
    winning_plan.json, winning_trainings.json, winning_ratio.csv (with --winning-ratio)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.export.common import METADATA
from pipeline.config import CONFIG_FILE_NAME
from pipeline.lock import LOCK_FILE_NAME
from pipeline.store import STORE_FILE_NAME

SEARCHED, BASELINE = "searched-", "baseline-"  # prefixes of the LABELs of trained models


def searched_label(key: str) -> str:
    """The LABEL of a searched winner (its arch key)."""
    return SEARCHED + key


def baseline_label(name: str) -> str:
    return BASELINE + name


def is_baseline(label: str) -> bool:
    return label.startswith(BASELINE)


def _file(name: str) -> property:
    return property(lambda self: self.root / name, doc=f"``{name}`` in this folder")


@dataclass(frozen=True)
class _Folder:
    """What every run folder has: its config and its lock."""

    root: Path

    config = _file(CONFIG_FILE_NAME)
    lock = _file(LOCK_FILE_NAME)


class SearchLayout(_Folder):
    store = _file(STORE_FILE_NAME)
    events = _file("evaluations.jsonl")
    summary = _file("summary.json")
    candidates_csv = _file("candidates.csv")
    pareto_csv = _file("pareto.csv")
    pareto_png = _file("pareto.png")
    best_arch_json = _file("best_arch.json")
    best_arch_txt = _file("best_arch.txt")
    gates = _file("gates")  # a gate search's gates.json and figures (`pipeline.gates.report`)


class RunLayout(_Folder):
    winners = _file("winners.json")
    latency = _file("latency.json")
    report = _file("report.md")
    figures = _file("figures")
    train_root = _file("train")

    @property
    def search(self) -> SearchLayout:
        return SearchLayout(self.root / "search")

    def train_dir(self, label: str, loss: str) -> Path:
        return self.train_root / f"{label}-{loss}"

    @staticmethod
    def parse_train_dir(folder: Path) -> tuple[str, str]:
        """``(label, loss)`` of a folder made by `train_dir`."""
        label, _, loss = folder.name.rpartition("-")
        return label, loss

    def export_dir(self, label: str) -> Path:
        return self.root / "export" / label

    def bundle_metadata(self, label: str) -> Path:
        return self.export_dir(label) / METADATA

    def find_search(self) -> SearchLayout | None:
        """The search of this folder: ``search/`` of a `pearl run`, or the folder itself when
        it is a bare `pearl search` folder; None when it holds no results store."""
        for layout in (self.search, SearchLayout(self.root)):
            if layout.store.is_file():
                return layout
        return None


@dataclass(frozen=True)
class AnalysisLayout:
    """What `pearl analyze` writes (never inside a run folder)."""

    root: Path

    report = _file("analysis.md")
    figures = _file("figures")
    samples_csv = _file("samples.csv")
    winning_plan = _file("winning_plan.json")
    winning_trainings = _file("winning_trainings.json")
    winning_csv = _file("winning_ratio.csv")

    def operators_csv(self, stem: str) -> Path:
        return self.root / f"{stem}.csv"

    def figure(self, name: str) -> Path:
        return self.figures / name
