"""The one progress bar of the `pearl` commands: rich, on stderr (results stay on stdout).

``progress_bar()`` is a counted bar (description, bar, done/total, elapsed, ETA);
``progress_bar(counted=False)`` a spinner for work of unknown length; ``fields`` appends
``{task.fields[NAME]}`` columns (pass them to ``add_task`` / ``update``).
"""

from __future__ import annotations

from collections.abc import Sequence


def progress_bar(
    fields: Sequence[str] = (),
    *,
    counted: bool = True,
    transient: bool = False,
    description: str = "{task.description}",
):
    """A `rich.progress.Progress` (not started: use it as a context manager)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if counted:
        columns = [
            TextColumn(description),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        ]
    else:
        columns = [SpinnerColumn(), TextColumn(description), TimeElapsedColumn()]
    columns += [TextColumn(f"{{task.fields[{name}]}}") for name in fields]
    return Progress(*columns, console=Console(stderr=True), transient=transient)
