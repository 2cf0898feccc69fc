"""Write a benchmark's results into BENCHMARKS.md at the repository root, one ``## title``
section per benchmark; rerunning a benchmark replaces its section and leaves the others alone."""

from __future__ import annotations

import datetime
import os
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from models.files import atomic_write

BENCHMARKS_PATH = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
_HEADER = (
    "# Benchmarks\n\nMeasured numbers. Each section is rewritten by the command shown in it.\n"
)
_SECTION_END = re.compile(r"^#{1,2} ")


def write_section(
    title: str,
    command: str,
    table_markdown: str,
    *,
    notes: str = "",
    path: Path = BENCHMARKS_PATH,
) -> Path:
    """Replace the ``## title`` section of `path` (or append it) with `table_markdown`, stamped
    with the exact `command` that produced it, today's date and the number of usable CPUs."""
    cpus = len(os.sched_getaffinity(0))
    stamp = f"Command: `{command}`  \nDate: {datetime.date.today().isoformat()}, nproc: {cpus}"
    section = f"## {title}\n\n{stamp}\n\n{table_markdown.strip()}\n"
    if notes.strip():
        section += f"\n{notes.strip()}\n"

    lines = (path.read_text() if path.exists() else _HEADER).splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == f"## {title}"), None)
    if start is None:
        before, after = "".join(lines).rstrip("\n") + "\n\n", ""
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if _SECTION_END.match(lines[i])), len(lines)
        )
        before = "".join(lines[:start])
        after = "\n" + "".join(lines[end:]) if end < len(lines) else ""
    return atomic_write(path, before + section + after)  # readers never see half a file


def median_and_range(values: Sequence[float], decimals: int) -> tuple[float, str]:
    """The median of ``values`` and their range written ``min-max`` with ``decimals`` decimals."""
    return statistics.median(values), f"{min(values):.{decimals}f}-{max(values):.{decimals}f}"


def seconds_rows(header: str, seconds: dict[str, list[float]], names: dict[str, str]) -> list:
    """Markdown rows ``| names[k] | median | min-max | n |`` for each list of `seconds`, under
    a header whose first column is `header`."""
    rows = [f"| {header} | median s per file | min-max s | n |", "|---|---:|---:|---:|"]
    for name, values in seconds.items():
        median, spread = median_and_range(values, 3)
        rows.append(f"| {names[name]} | {median:.3f} | {spread} | {len(values)} |")
    return rows


def publish(title: str, table_markdown: str, notes: str, *, write: bool) -> None:
    """Print a benchmark's table and notes; with `write`, also into its BENCHMARKS.md section,
    stamped with the command line that ran this script."""
    print(table_markdown + "\n\n" + notes)
    if write:
        command = " ".join(["python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])
        write_section(title, command, table_markdown, notes=notes)
