"""The noise-proof table protocol's pure parts: speed-mode detection from the reference network,
the value a table keeps per file, the adaptive-pass rule, and the validation warnings."""

from __future__ import annotations

import pytest

from device_bench.speed_modes import Sample, entry_value, needs_more_passes, speed_modes
from device_bench.table_build import run_warnings
from latency_tables.table import LatencyTable

# the VM: fastest invoke 12.3-12.5 ms in some processes, 18.8-19.1 ms in others
BIMODAL = [12.4, 18.9, 12.3, 12.5, 19.1, 18.8, 12.4, 12.45, 18.95, 12.35]


def test_two_modes_are_found_and_shared():
    modes = speed_modes(BIMODAL)
    assert modes.fast_ms == pytest.approx(12.4, abs=0.05)
    assert modes.slow_ms == pytest.approx(18.92, abs=0.05)
    assert modes.threshold_ms == 12.5 and modes.fast_share == 0.6 and modes.batches == 10
    assert modes.is_fast(12.5) and not modes.is_fast(18.8)


def test_a_rare_fast_outlier_is_not_a_mode():
    modes = speed_modes([8.0, *([10.0, 10.2, 10.1, 10.3] * 3), 15.0, 15.2, 15.1])
    assert modes.fast_ms == pytest.approx(10.1, abs=0.1) and modes.slow_ms == 15.1
    assert modes.is_fast(8.0) and modes.fast_share == pytest.approx(13 / 16)


def test_one_mode_when_the_spread_is_small():
    modes = speed_modes([10.0, 10.4, 10.9, 11.2, 10.1])  # drift, no gap > 15%
    assert modes.slow_ms is None and modes.fast_share == 1.0 and modes.threshold_ms == 11.2
    with pytest.raises(ValueError, match="at least one positive"):
        speed_modes([])


def test_entry_value_keeps_the_fast_mode_and_normalises_slow_only_files():
    modes = speed_modes(BIMODAL)
    # timed twice fast (0.50, 0.52) and once slow (0.40 would be a wrong minimum: noise)
    mixed = [Sample(0.50, 12.4), Sample(0.52, 12.3), Sample(0.40, 18.9)]
    assert entry_value(mixed, modes) == (0.50, False)
    # only ever timed in slow batches: scaled by fast / batch reference
    slow_only = [Sample(0.76, 19.0), Sample(0.75, 18.8)]
    value, normalised = entry_value(slow_only, modes)
    assert normalised and value == pytest.approx(min(0.76 * 12.4 / 19.0, 0.75 * 12.4 / 18.8))


def test_adaptive_rule_wants_two_agreeing_fast_samples():
    modes = speed_modes(BIMODAL)
    assert needs_more_passes([Sample(0.5, 12.4)], modes)  # one fast sample
    assert needs_more_passes([Sample(0.5, 12.4), Sample(0.7, 18.9)], modes)  # one is slow
    assert needs_more_passes([Sample(0.50, 12.4), Sample(0.56, 12.3)], modes)  # 12% apart
    assert not needs_more_passes([Sample(0.50, 12.4), Sample(0.51, 12.3)], modes)
    # the two fastest agree; a third, slower fast-mode sample does not matter
    assert not needs_more_passes([Sample(0.50, 12.4), Sample(0.51, 12.3), Sample(0.9, 12.5)], modes)


def test_warnings_for_load_modes_and_a_changed_device():
    table = LatencyTable(
        {},
        {"fingerprint": {}, "space": {}, "protocol": {"reference": {"fast_ms": 10.0}}},
    )
    quiet = speed_modes([10.1, 10.2]).to_dict()
    assert run_warnings(quiet, [0.3, 0.5], table, cores=2) == []
    # the measurement and one other single-threaded job: each has a core
    assert run_warnings(quiet, [2.1, 1.9, 2.2], table, cores=2) == []
    loaded = run_warnings(quiet, [3.0, 3.5, 2.5], table, cores=2)
    assert len(loaded) == 1 and "machine was loaded (median 1-min load 3.00 on 2 cores" in loaded[0]
    bimodal = {**speed_modes([10.1, 15.0, 10.0]).to_dict(), "normalised_entries": 3}
    (text,) = run_warnings(bimodal, [0.2], table, cores=2)
    assert "two speed modes" in text and "33% of batches slow" in text and "3 normalised" in text
    moved = speed_modes([13.0, 13.1]).to_dict()
    (text,) = run_warnings(moved, [0.2], table, cores=2)
    assert "+31% off the table's" in text
