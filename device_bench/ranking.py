"""Which number of a `Measurement` to rank candidates by.

Decision (evidence in BENCHMARKS.md, "Host latency run-to-run spread" and "Ranking statistic:
min_ms vs median_ms (loopback ADB device)"): measured latencies (`host`, `device`) rank by
`min_ms`.  Interference from other work on the CPU only ever adds time, so the fastest run is
the least polluted estimate of what the network costs: on this shared machine min_ms varied
2.5% / 1.5% between processes where the median varied 14.9% / 25.6% (host LiteRT / ONNX
Runtime), and 10-12% vs 13-14% through the phone path (two runs); no pair of candidates
changed order either way.  On a phone, pinning to the big cores and waiting for it to cool
are what make its minimum reproducible.  Latency tables predict medians (there is no minimum
to add up), so `table` measurements rank by `median_ms`.  Compare only numbers of the same
source and device.
"""

from __future__ import annotations

from device_bench.measurement import Measurement


def ranking_latency_ms(measurement: Measurement) -> float:
    """The latency (ms) to compare candidates by: min_ms for measured, median_ms for tables."""
    if measurement.source in ("host", "device"):
        return measurement.min_ms
    return measurement.median_ms
