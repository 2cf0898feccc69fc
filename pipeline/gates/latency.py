"""Latency as the gates' cost (Pearl's addition to Gu & Tresp): a measured linear model of how
the target device's latency falls as channels close.

**Method.**  Time the teacher, and for each gate group (a ResNet block's inner channels, the
lanes born in one stage, a DenseNet part's reads or bottleneck) the teacher with that group
alone *uniformly thinned* (every other gate closed; the keep-one rule respected).  The group's
slope is ``(teacher ms - thinned ms) / channels closed`` (least squares through the origin when
several fractions are timed), clamped at 0 (a thinning that timed slower is noise: it saves
nothing).  Then, for gate j of group G:

    alpha_j = slope_G / max_H slope_H                       (the L1 weights, as for MACs)
    predicted ms(keep) = teacher ms - sum_{closed j} slope_j  (the stop criterion)

The model is linear and per group (interactions between groups are ignored); the search's
latency chain measures every snapshot anyway, so the predicted number only decides when to
stop.  Timing goes through any callable ``measure_ms(network) -> ms`` (the search passes its
latency chain), so the fit itself is a pure function of the numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_FRACTIONS = (0.5,)  # share of a group's gates closed for its timing


@dataclass(frozen=True)
class LatencyFit:
    teacher_ms: float
    slopes_ms: tuple[float, ...]  # per group: ms saved per closed channel (>= 0)
    samples: tuple[tuple[int, int, float], ...]  # (group, channels closed, measured ms)
    group_of_gate: tuple[int, ...]

    def per_gate_ms(self) -> torch.Tensor:
        slopes = torch.tensor(self.slopes_ms, dtype=torch.float64)
        return slopes[torch.tensor(self.group_of_gate, dtype=torch.long)]

    def alpha(self) -> torch.Tensor:
        """The L1 weights: ms per channel / the largest (float32, one per gate)."""
        largest = max(self.slopes_ms)
        if largest <= 0:
            raise ValueError(
                "no gate group's thinning made the network measurably faster on the latency "
                "backend (all slopes 0): latency cannot weight the gates; use "
                "gates.weighting = 'flops'"
            )
        return (self.per_gate_ms() / largest).float()

    def predict_ms(self, keep: torch.Tensor) -> float:
        """The teacher's ms minus the slopes of the closed gates."""
        closed = ~torch.as_tensor(keep, dtype=torch.bool)
        return float(self.teacher_ms - self.per_gate_ms()[closed].sum())

    def to_json(self) -> dict:
        return {
            "teacher_ms": self.teacher_ms,
            "slopes_ms_per_channel": list(self.slopes_ms),
            "samples": [list(s) for s in self.samples],
        }


def fit_slopes(
    teacher_ms: float, samples: Sequence[tuple[int, int, float]], groups: int
) -> tuple[float, ...]:
    """Per group, the ms saved per closed channel: least squares through the origin of
    ``teacher_ms - ms`` against channels closed over that group's samples, clamped at 0; a group
    without samples (nothing to close) gets 0."""
    if teacher_ms <= 0:
        raise ValueError(f"the teacher's latency must be > 0 ms, got {teacher_ms}")
    sums = [[0.0, 0.0] for _ in range(groups)]
    for group, closed, ms in samples:
        if closed <= 0:
            raise ValueError(f"a latency sample of group {group} closes {closed} channels")
        sums[group][0] += closed * (teacher_ms - ms)
        sums[group][1] += closed * closed
    return tuple(max(0.0, saved / square) if square else 0.0 for saved, square in sums)


def thinned(layout, group_index: int, fraction: float) -> torch.Tensor | None:
    """The keep vector with `fraction` of one group's gates closed, spread evenly over the
    group (None when the group has nothing it may close)."""
    group = layout.groups[group_index]
    count = group.stop - group.start
    closing = min(round(count * fraction), count - 1 if group.keep_one else count)
    if closing < 1:
        return None
    keep = torch.ones(layout.size, dtype=torch.bool)
    positions = torch.linspace(0, count - 1, closing).round().long().unique()
    keep[group.start + positions] = False
    return keep


def measure_fit(
    helper,
    measure_ms: Callable[[object], float],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    log: Callable[[str], None] = lambda line: None,
) -> LatencyFit:
    """Time the teacher and each group thinned (see the module docstring) and fit the slopes."""
    layout = helper.layout
    teacher_ms = measure_ms(helper.shrink(torch.ones(layout.size, dtype=torch.bool)))
    samples = []
    for index, group in enumerate(layout.groups):
        for fraction in fractions:
            keep = thinned(layout, index, fraction)
            if keep is None:
                continue
            ms = measure_ms(helper.shrink(keep))
            samples.append((index, int((~keep).sum()), ms))
            log(f"gates latency: {group.name} -{int((~keep).sum())} channels: {ms:.3f} ms")
    slopes = fit_slopes(teacher_ms, samples, len(layout.groups))
    return LatencyFit(teacher_ms, slopes, tuple(samples), _group_of_gate(layout))


def _group_of_gate(layout) -> tuple[int, ...]:
    return tuple(i for i, group in enumerate(layout.groups) for _ in range(group.start, group.stop))


def stored_fit(
    path: Path, helper, measure_ms: Callable[[object], float], log=lambda line: None
) -> LatencyFit:
    """The fit saved at `path` (a resumed search keeps its weights), else `measure_fit`'s,
    saved there."""
    from models.files import atomic_write_json, read_json

    saved = read_json(path)
    if not saved:
        fit = measure_fit(helper, measure_ms, log=log)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, fit.to_json())
        return fit
    slopes = tuple(saved["slopes_ms_per_channel"])
    if len(slopes) != len(helper.layout.groups):
        raise ValueError(f"{path} is the latency fit of another teacher: delete it to re-time")
    samples = tuple(tuple(sample) for sample in saved["samples"])
    return LatencyFit(saved["teacher_ms"], slopes, samples, _group_of_gate(helper.layout))
