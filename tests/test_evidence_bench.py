"""bench/evidence.py and bench/proxy_rank.py: the target and the sampled archs, on the shipped
host latency table (no training)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from evidence import baseline_target_ms  # noqa: E402
from proxy_rank import archs_near, standard_error  # noqa: E402


def test_baseline_target_is_mobilenet_v2_at_the_width_and_smaller_when_narrower():
    arch_075, target_075 = baseline_target_ms(0.75)
    arch_100, target_100 = baseline_target_ms(1.0)
    assert "mb6_k3_s2_se0_id_c48_n4" in arch_075 and "mb6_k3_s2_se0_id_c64_n4" in arch_100
    assert 0 < target_075 < target_100


def test_baseline_width_outside_the_table_is_refused_with_the_widths_it_covers():
    with pytest.raises(SystemExit, match=r"0\.75, 1\.0, 1\.25"):
        baseline_target_ms(0.5)


def test_archs_near_the_target_are_distinct_within_range_and_repeatable():
    from evidence import TABLE

    from latency_tables.table import LatencyTable

    _, target = baseline_target_ms(0.75)
    drawn = archs_near(target, 5, seed=3)
    table = LatencyTable.load(TABLE)
    assert len({arch.key() for arch, _ in drawn}) == 5
    for arch, latency_ms in drawn:
        assert 0.8 * target <= latency_ms <= target
        assert table.predict_ms(arch) == latency_ms
    assert [a.key() for a, _ in archs_near(target, 5, seed=3)] == [a.key() for a, _ in drawn]


def test_standard_error_is_binomial():
    assert standard_error(0.5, 100) == pytest.approx(0.05)
    assert standard_error(0.0, 500) == 0.0
