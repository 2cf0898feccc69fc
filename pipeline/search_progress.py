"""The progress bar of a search on stderr: candidates done out of the budget, the generation
(numbered from 0, as in the plots) and the best candidate so far (reward, accuracy, cost)."""

from __future__ import annotations

import threading

from pipeline.progress import progress_bar
from pipeline.store import Candidate


class NoProgress:
    """Nothing shown (while no `SearchProgress` runs)."""

    def candidate_done(self, row: Candidate) -> None:
        pass

    def generation_done(self) -> None:
        pass


class SearchProgress:
    """Candidates done out of the budget, the generation and the best reward so far."""

    def __init__(self, search, enabled: bool) -> None:
        self.search = search
        self._bar = progress_bar(fields=("best",), description=_BAR_TEXT) if enabled else None
        self._lock = threading.Lock()

    def __enter__(self) -> SearchProgress:
        if self._bar is not None:
            self._bar.__enter__()
            self._task = self._bar.add_task(
                "search",
                total=self.search.config.search.max_candidates or None,
                completed=self.search.store.count(),
                generation=self.search.generation,
                best="",
            )
            self._refresh_best()
        return self

    def _refresh_best(self) -> None:
        rows = self.search.front_runners(1)
        if self._bar is not None and rows:
            best = rows[0]
            cost = self.search.config.reward.cost
            value = best.cost(cost)
            shown = "" if value is None else f", {cost} {value:.4g}"
            self._bar.update(
                self._task,
                best=f"best reward {best.reward:.4f} (acc {100 * best.accuracy:.1f}%{shown})",
            )

    def candidate_done(self, row: Candidate) -> None:
        if self._bar is not None:
            with self._lock:
                self._bar.update(self._task, completed=self.search.store.count())
                self._refresh_best()

    def generation_done(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, generation=self.search.generation)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


_BAR_TEXT = "[bold]search[/] gen {task.fields[generation]}"
