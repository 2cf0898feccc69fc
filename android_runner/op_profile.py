"""Parse the per-operator profile ``benchmark_model --enable_op_profiling=true`` prints.

Pure: text in, `OpProfile` out; no I/O, no torch.  What the tool prints (TFLite's
``ProfileSummarizer`` over tsl's ``StatSummarizer``; see the test data under
``tests/data/op_profile/`` for real outputs):

* an optional ``Profiling Info for Benchmark Initialization:`` section (ModifyGraphWithDelegate,
  AllocateTensors), then ``Operator-wise Profiling Info for Regular Benchmark Runs:``; each
  section holds blocks titled ``==== Run Order ====``, ``==== Top by Computation Time ====`` and
  ``==== Summary by node type ====``, then ``Timings (microseconds): ...`` and
  ``Memory (bytes): ...`` lines.  Old builds printed the regular runs' blocks without the
  section title.
* each block has a column-title line (``[node type] [start] [first] [avg ms] [%] [cdf%]
  [mem KB] [times called] [Name]``; newer builds drop ``[start]``) and one row per node.
  Old builds separate columns with tabs, newer ones pad with spaces; XNNPACK's node types
  contain spaces (``Convolution (NHWC, QC8) GEMM``), so rows are matched from their numeric
  columns, not split on whitespace.
* the tool's own lines may carry ``INFO:`` prefixes; the blocks themselves usually do not.

Only the regular runs are parsed (the initialisation section is skipped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from android_runner.benchmark_output import TimingStats, parse_stat_line, strip_log_prefix

__all__ = ["NodeTypeRow", "OpProfile", "OpProfileError", "OpRow", "parse_op_profile"]

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_REGULAR_TITLE = "Operator-wise Profiling Info for Regular Benchmark Runs"
_INIT_TITLE = "Profiling Info for Benchmark Initialization"
_BLOCK_RE = re.compile(r"^=+ (?P<name>[A-Za-z ]+?) =+$")
_TAIL = (
    rf"(?P<avg>{_NUM})\s+(?P<pct>{_NUM})%\s+(?P<cdf>{_NUM})%\s+(?P<mem>{_NUM})\s+"
    r"(?P<times>\d+)"
)
_ROW_RE = re.compile(rf"^(?P<type>\S.*?)\s+(?P<first>{_NUM})\s+{_TAIL}\s+(?P<name>\S.*)$")
_ROW_START_RE = re.compile(
    rf"^(?P<type>\S.*?)\s+(?P<start>{_NUM})\s+(?P<first>{_NUM})\s+{_TAIL}\s+(?P<name>\S.*)$"
)
_TYPE_RE = re.compile(rf"^(?P<type>\S.*?)\s+(?P<count>\d+)\s+{_TAIL}$")
_NODE_INDEX_RE = re.compile(r":(?P<index>\d+)$")


class OpProfileError(ValueError):
    """The text holds no operator profile, or a row that cannot be read (quoted)."""


@dataclass(frozen=True, slots=True)
class OpRow:
    """One node of the Run Order block (milliseconds; `start_ms` None where not printed).
    `node_index` is the TFLite node index the name ends with (``[...]:12``), if any."""

    node_type: str
    start_ms: float | None
    first_ms: float
    avg_ms: float
    percent: float
    cdf_percent: float
    mem_kb: float
    times_called: int
    name: str
    node_index: int | None


@dataclass(frozen=True, slots=True)
class NodeTypeRow:
    """One row of the Summary by node type block."""

    node_type: str
    count: int
    avg_ms: float
    percent: float
    cdf_percent: float
    mem_kb: float
    times_called: int


@dataclass(frozen=True, slots=True)
class OpProfile:
    """The regular runs' profile: nodes in run order, the per-type summary (empty where the
    output was cut before it) and the ``Timings (microseconds)`` statistics (None likewise)."""

    run_order: tuple[OpRow, ...]
    by_type: tuple[NodeTypeRow, ...]
    timings: TimingStats | None

    @property
    def total_avg_ms(self) -> float:
        """Sum of the nodes' average times."""
        return sum(row.avg_ms for row in self.run_order)


def _regular_lines(text: str) -> list[str]:
    """The lines of the regular runs' section, log prefixes removed."""
    lines = [strip_log_prefix(raw)[1].strip() for raw in text.splitlines()]
    for number, line in enumerate(lines):
        if line.startswith(_REGULAR_TITLE):
            return lines[number + 1 :]
    # old builds: no section title; skip an initialisation section if there is one
    start = 0
    for number, line in enumerate(lines):
        if line.startswith(_INIT_TITLE):
            ends = [i for i, ln in enumerate(lines) if i > number and ln.endswith("nodes observed")]
            start = ends[0] + 1 if ends else len(lines)
            break
    return lines[start:]


def _row(pattern: re.Pattern[str], line: str) -> re.Match[str]:
    match = pattern.match(line)
    if match is None:
        raise OpProfileError(
            f"cannot read this operator-profile row: {line!r}. Pass the whole, unedited output "
            "of benchmark_model --enable_op_profiling=true"
        )
    return match


def parse_op_profile(text: str) -> OpProfile:
    """Parse the regular runs' operator profile out of the whole benchmark_model output."""
    lines = _regular_lines(text)
    block = ""
    has_start = False
    run_order: list[OpRow] = []
    by_type: list[NodeTypeRow] = []
    timings: TimingStats | None = None
    for line in lines:
        if not line:
            continue
        if heading := _BLOCK_RE.match(line):
            block = heading["name"].strip().lower()
            continue
        if line.startswith("[node type]") or line.startswith("[Node type]"):
            has_start = "[start]" in line
            continue
        if line.startswith("Number of nodes executed"):
            continue
        if line.startswith("Timings (microseconds):"):
            timings = parse_stat_line(line.partition(":")[2].strip())
            if block:
                break  # the regular runs' blocks end here
            continue
        if block == "run order":
            match = _row(_ROW_START_RE if has_start else _ROW_RE, line)
            index = _NODE_INDEX_RE.search(match["name"])
            run_order.append(
                OpRow(
                    node_type=match["type"],
                    start_ms=float(match["start"]) if has_start else None,
                    first_ms=float(match["first"]),
                    avg_ms=float(match["avg"]),
                    percent=float(match["pct"]),
                    cdf_percent=float(match["cdf"]),
                    mem_kb=float(match["mem"]),
                    times_called=int(match["times"]),
                    name=match["name"],
                    node_index=int(index["index"]) if index else None,
                )
            )
        elif block == "summary by node type":
            match = _row(_TYPE_RE, line)
            by_type.append(
                NodeTypeRow(
                    node_type=match["type"],
                    count=int(match["count"]),
                    avg_ms=float(match["avg"]),
                    percent=float(match["pct"]),
                    cdf_percent=float(match["cdf"]),
                    mem_kb=float(match["mem"]),
                    times_called=int(match["times"]),
                )
            )
    if not run_order:
        raise OpProfileError(
            "no operator profile in the benchmark_model output (no 'Run Order' block for the "
            "regular runs): run the tool with --enable_op_profiling=true and capture its whole "
            "stdout and stderr"
        )
    return OpProfile(tuple(run_order), tuple(by_type), timings)
