"""Resumable multi-pass measurement of many files (layers and whole networks) on one backend.

`MeasureRun` keeps every finished measurement in a JSON state file, rewritten atomically after
each batch, so an interrupted build or validation resumes where it stopped and never times a
file twice in the same pass.  State layout::

    {"version": 1, "device": IDENTITY_ID, "what": {...},
     "passes": {"0": {ITEM: measurement dict (+ "batch": index), ...}, "1": {...}},
     "load": [...], "batches": [{"pass", "reference_ms", "load"}, ...]}

ITEM is a stable name (a layer key's encoding or an arch string), never a path, so a moved
cache does not invalidate the state.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from device_bench.host import MeasureSettings
from device_bench.measurement import Measurement, MeasurementError
from device_bench.speed_modes import Sample, SpeedModes, needs_more_passes, speed_modes
from device_bench.table_measure import DEFAULT_BATCH, run_batch
from models.files import atomic_write

STATE_VERSION = 1


class MeasureRun:
    def __init__(self, state_path: str | os.PathLike | None, device_id: str, what: dict) -> None:
        self.path = Path(state_path) if state_path is not None else None
        self.state: dict[str, Any] = {
            "version": STATE_VERSION,
            "device": device_id,
            "what": what,
            "passes": {},
            "load": [],
        }
        if self.path is not None and self.path.is_file():
            try:
                saved = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise MeasurementError(
                    f"cannot resume from {self.path} ({err}); delete it to start over"
                ) from None
            if saved.get("version") != STATE_VERSION or saved.get("device") != device_id:
                raise MeasurementError(
                    f"{self.path} holds a run for another device, precision or pearl version; "
                    "delete it or choose another output file"
                )
            if saved.get("what") != what:
                raise MeasurementError(
                    f"{self.path} holds a run with other settings ({saved.get('what')}); "
                    "delete it or choose another output file"
                )
            self.state = saved

    def done(self, pass_index: int) -> dict[str, dict]:
        return self.state["passes"].setdefault(str(pass_index), {})

    def save(self) -> None:
        if self.path is not None:
            atomic_write(self.path, json.dumps(self.state))

    def remaining(self, items: Sequence[str], passes: int) -> int:
        return sum(1 for p in range(passes) for item in items if item not in self.done(p))

    def measure(
        self,
        spec: str,
        groups: Sequence[tuple[Mapping[str, Path], MeasureSettings]],
        passes: int,
        *,
        batch: int = DEFAULT_BATCH,
        on_progress: Callable[[int], None] | None = None,
        reference: Path | None = None,
        max_passes: int | None = None,
    ) -> None:
        """Time every item of every group `passes` times.  Each pass shuffles each group
        (seed = pass number), cuts it into batches of at most `batch` files, and interleaves
        the groups' batches so layers and whole networks share the machine's slow and fast
        stretches.  Each batch runs in a fresh process.

        With a `reference` file, every batch times it first (its time is the batch's speed,
        `device_bench.speed_modes`), and up to `max_passes` passes are run: after `passes`,
        each further pass times only the items that are not settled yet
        (`speed_modes.needs_more_passes`)."""
        for pass_index in range(passes):
            self._run_pass(spec, pass_index, groups, batch, on_progress, reference)
        if reference is None or max_passes is None:
            return
        for pass_index in range(passes, max_passes):
            modes = self.modes()
            unsettled = [
                ({k: v for k, v in files.items() if needs_more_passes(self.samples(k), modes)},
                 settings)
                for files, settings in groups
            ]  # fmt: skip
            if not any(files for files, _ in unsettled):
                return
            self._run_pass(spec, pass_index, unsettled, batch, on_progress, reference)

    def _run_pass(self, spec, pass_index, groups, batch, on_progress, reference) -> None:
        done = self.done(pass_index)
        per_group = []
        for files, settings in groups:
            items = [item for item in files if item not in done]
            random.Random(pass_index).shuffle(items)
            per_group.append((items, files, settings))
        count = max((-(-len(items) // batch) for items, _, _ in per_group), default=0)
        batches = []
        for items, files, settings in per_group:
            if not items:
                continue
            size = -(-len(items) // count)  # spread this group evenly over `count` slots
            for slot, start in enumerate(range(0, len(items), size)):
                batches.append((slot, items[start : start + size], files, settings))
        batches.sort(key=lambda b: b[0])
        for _, items, files, settings in batches:
            by_path = {str(files[item]): item for item in items}
            errors: list[str] = []
            found: dict[str, dict] = {}
            ref_path = str(reference) if reference is not None else None

            def record(path, measurement, error, found=found, errors=errors) -> None:
                if measurement is None:
                    errors.append(error)
                else:
                    found[path] = measurement.to_dict()

            started = time.perf_counter()
            paths = ([ref_path] if ref_path else []) + list(by_path)
            run_batch(spec, settings, paths, record)
            self.state["seconds"] = self.state.get("seconds", 0.0) + (time.perf_counter() - started)
            load = round(os.getloadavg()[0], 2)
            self.state["load"].append(load)
            tag = {}
            if ref_path and ref_path in found:
                batches_seen = self.state.setdefault("batches", [])
                tag = {"batch": len(batches_seen)}
                batches_seen.append(
                    {"pass": pass_index, "reference_ms": found[ref_path]["min_ms"], "load": load}
                )
            recorded = [item for path, item in by_path.items() if path in found]
            for path, item in by_path.items():
                if path in found:
                    done[item] = {**found[path], **tag}
            self.save()  # before telling anyone: an interruption keeps the whole batch
            if on_progress and recorded:
                on_progress(len(recorded))
            if errors:
                raise MeasurementError(f"{len(errors)} file(s) failed: {errors[0]}")

    def modes(self) -> SpeedModes:
        """The speed modes of the batches so far (`device_bench.speed_modes`)."""
        return speed_modes([b["reference_ms"] for b in self.state.get("batches", [])])

    def samples(self, item: str) -> list[Sample]:
        """Every timing of `item` with its batch's reference time (items timed without a
        reference are left out)."""
        batches = self.state.get("batches", [])
        found = []
        for timings in self.state["passes"].values():
            data = timings.get(item)
            if data is not None and "batch" in data:
                found.append(Sample(data["min_ms"], batches[data["batch"]]["reference_ms"]))
        return found

    def pass_count(self) -> int:
        return len(self.state["passes"])

    def measurements(self, item: str, passes: int | None = None) -> list[Measurement]:
        """`item`'s measurements in passes 0..passes-1 (None: every pass run)."""
        count = self.pass_count() if passes is None else passes
        return [
            Measurement.from_dict(self.done(p)[item]) for p in range(count) if item in self.done(p)
        ]
