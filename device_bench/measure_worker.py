"""`python -m device_bench.measure_worker`: one batch of the table protocol in a fresh process
(`device_bench.table_measure.run_batch` starts it; the protocol is described there).

Reads ``{"spec", "settings", "paths"}`` as JSON on stdin; prints ``{"fingerprint": ...}``, then
one line per file: ``{"path", "measurement", "load"}`` or ``{"path", "error"}``.  On
``host:tflite`` each invoke is timed in CPU time of the invoking thread
(`table_measure.HOST_CLOCK`, "thread_cpu").
"""

from __future__ import annotations

import json
import os
import sys
import time

from device_bench.backends import backend_from_spec
from device_bench.host import HostTFLiteBackend, MeasureSettings
from device_bench.measurement import LatencyBackend, MeasurementError
from device_bench.spec import BackendSpec


def batch_backend(spec: str, settings: MeasureSettings) -> LatencyBackend:
    """The backend a batch times with: `spec`'s, timing host:tflite invokes in thread CPU
    time."""
    parsed = BackendSpec.parse(spec)
    if str(parsed) == HostTFLiteBackend.spec:
        return HostTFLiteBackend(settings, sample_clock=time.thread_time_ns)
    return backend_from_spec(parsed, settings)


def serve() -> None:
    request = json.loads(sys.stdin.read())
    backend = batch_backend(request["spec"], MeasureSettings(**request["settings"]))
    print(json.dumps({"fingerprint": backend.fingerprint()}), flush=True)
    for path in request["paths"]:
        try:
            line = {
                "path": path,
                "measurement": backend.measure(path).to_dict(),
                "load": os.getloadavg()[0],
            }
        except MeasurementError as err:
            line = {"path": path, "error": str(err)}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    serve()
