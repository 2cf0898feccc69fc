"""Speed modes of a machine, read from a fixed reference network timed in every batch.

Some machines run at two speeds for minutes at a time (a VM whose fresh processes land on a
fast or a slow host core: the same file's fastest invoke is ~12.4 ms in some processes and
~19 ms in others; phones do the same through thermal states and big/little migration).  The
table protocol times one fixed *reference* network at the start of every batch process
(`device_bench.table_runs.MeasureRun`), so each batch carries its speed.  Pure functions here:

* `speed_modes(reference_ms)`: split the batches' reference times into a fast mode and, when
  there is a gap of more than `MODE_GAP` between sorted neighbours with at least
  `MIN_FAST_SHARE` of the batches below it, a slow mode (a few unusually fast batches are
  outliers: they must not define the speed the table predicts);
* `entry_value(samples, modes)`: the value a table keeps for one file: its fastest time in a
  fast-mode batch, or, where it was only ever timed in slow batches, its fastest time scaled by
  ``fast reference / that batch's reference`` (marked as normalised);
* `needs_more_passes(samples, modes)`: the adaptive rule: a file is settled once it has
  `SETTLED_FAST` fast-mode samples that agree within `SETTLED_SPREAD`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MODE_GAP = 0.15  # a relative jump this large between sorted reference times separates modes
MIN_FAST_SHARE = 0.2  # a faster group of fewer batches than this is an outlier, not a mode
SETTLED_FAST = 2  # fast-mode samples a file needs ...
SETTLED_SPREAD = 0.05  # ... agreeing within this relative spread (max - min) / min


@dataclass(frozen=True)
class SpeedModes:
    """`fast_ms`: the median reference time in the fast mode; `slow_ms` the slow mode's (None:
    one mode); `threshold_ms`: batches with a reference at or below it are fast."""

    fast_ms: float
    slow_ms: float | None
    threshold_ms: float
    fast_share: float  # share of batches in the fast mode
    batches: int

    def is_fast(self, reference_ms: float) -> bool:
        return reference_ms <= self.threshold_ms

    def to_dict(self) -> dict:
        return {
            "fast_ms": round(self.fast_ms, 6),
            "slow_ms": None if self.slow_ms is None else round(self.slow_ms, 6),
            "threshold_ms": round(self.threshold_ms, 6),
            "fast_share": round(self.fast_share, 4),
            "batches": self.batches,
        }


def speed_modes(reference_ms: Sequence[float], gap: float = MODE_GAP) -> SpeedModes:
    """The fast (and slow) mode of a list of reference timings, one per batch."""
    ordered = sorted(float(v) for v in reference_ms if v > 0)
    if not ordered:
        raise ValueError("speed modes need at least one positive reference timing")
    split = len(ordered)
    for index in range(1, len(ordered)):
        big_gap = ordered[index] / ordered[index - 1] - 1 > gap
        if big_gap and index / len(ordered) >= MIN_FAST_SHARE:
            split = index
            break
    fast, slow = ordered[:split], ordered[split:]
    return SpeedModes(
        fast_ms=statistics.median(fast),
        slow_ms=statistics.median(slow) if slow else None,
        threshold_ms=fast[-1],
        fast_share=len(fast) / len(ordered),
        batches=len(ordered),
    )


@dataclass(frozen=True)
class Sample:
    """One timing of one file: its fastest invoke and its batch's reference time."""

    min_ms: float
    reference_ms: float


def entry_value(samples: Sequence[Sample], modes: SpeedModes) -> tuple[float, bool]:
    """``(value_ms, normalised)`` for one file (see the module docstring)."""
    if not samples:
        raise ValueError("no samples")
    fast = [s.min_ms for s in samples if modes.is_fast(s.reference_ms)]
    if fast:
        return min(fast), False
    return min(s.min_ms * modes.fast_ms / s.reference_ms for s in samples), True


def needs_more_passes(samples: Sequence[Sample], modes: SpeedModes) -> bool:
    """True while a file lacks `SETTLED_FAST` fast-mode samples within `SETTLED_SPREAD`."""
    fast = sorted(s.min_ms for s in samples if modes.is_fast(s.reference_ms))
    if len(fast) < SETTLED_FAST:
        return True
    best = fast[:SETTLED_FAST]
    return best[-1] / best[0] - 1 > SETTLED_SPREAD
