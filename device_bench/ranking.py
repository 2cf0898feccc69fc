"""Which number of a `Measurement` to rank candidates by.

Decision: measured latencies (`host`, `device`) rank by `min_ms`.  Interference from other work
on the CPU only ever adds time, so the fastest run is the least polluted estimate of what the
network costs.  On a phone, pinning to the big cores and waiting for it to cool are what make
its minimum reproducible.  Latency tables predict medians (there is no minimum to add up), so
`table` measurements rank by `median_ms`.  Compare only numbers of the same source and device.
Evidence: BENCHMARKS.md, "Ranking statistic: min_ms vs median_ms (loopback ADB device)".
"""

from __future__ import annotations

from device_bench.measurement import Measurement


def ranking_latency_ms(measurement: Measurement) -> float:
    """The latency (ms) to compare candidates by: min_ms for measured, median_ms for tables."""
    if measurement.source in ("host", "device"):
        return measurement.min_ms
    return measurement.median_ms
