"""Latency lookup tables: versioned files (one per device fingerprint and search space) and the
torch-free predictor the search loop calls in microseconds.

* `latency_tables.keys`: what a row stands for (`LayerKey`), the keys of an arch
  (`arch_keys`) and of a whole search space (`space_keys`);
* `latency_tables.table`: the file format (`LatencyTable.load` / `save`), prediction
  (`LatencyTable.predict_ms`), the fitted correction (`fit_correction`), and the errors
  (`TableError`, `MissingKeyError`).

The shipped tables (``*.csv`` here, with their ``*.validation.*.json`` reports) were built on
this project's build machine with `pearl tables build`; rebuild them for your own device.
Building and validating live in `device_bench` (they measure); this package never measures.
"""
