"""Graceful stop with real signals: a write in progress is finished before the stop, and a real
`pearl search` sent SIGTERM stops with a message on how to resume, its folder unlocked and its
store whole; the resumed search trains nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from search_helpers import (
    logged_events,
    make_tiny_teacher,
    start_search,
    trained_events,
    wait_for_trained,
    write_config,
)

from pipeline.lock import LOCK_FILE_NAME
from pipeline.stop import StopRequested, stop_on_signals, write_in_progress
from pipeline.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]


def test_a_signal_during_a_write_stops_when_the_write_ends():
    before = signal.getsignal(signal.SIGTERM)  # a library (Ray) may have set one already
    done = []
    with pytest.raises(StopRequested) as stop, stop_on_signals():
        with write_in_progress():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler has run by now; the write goes on
            done.append("written")
        done.append("never")  # the stop is raised as the write ends
    assert done == ["written"] and stop.value.exit_status == 128 + signal.SIGTERM
    with pytest.raises(StopRequested, match="SIGINT"), stop_on_signals():
        os.kill(os.getpid(), signal.SIGINT)  # outside a write: at once
        time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


def _trained(run_dir: Path) -> list[tuple[int, int]]:
    return [(e["generation"], e["slot"]) for e in trained_events(run_dir)]


def test_sigterm_stops_a_real_search_which_then_resumes(tmp_path, data_dir, cifar_small):
    teacher = make_tiny_teacher(tmp_path, cifar_small)
    config = write_config(tmp_path / "cfg", data_dir, teacher, budget=6)
    run_dir = tmp_path / "run"
    process = start_search(config, run_dir, stderr=subprocess.PIPE)
    wait_for_trained(process, run_dir, 3, timeout_s=300)
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM (the write in progress was finished)" in stderr
    assert f"continue with `pearl search --resume {run_dir}`" in stderr
    assert "Traceback" not in stderr and not (run_dir / LOCK_FILE_NAME).exists()
    with ResultsStore(run_dir / "results.sqlite") as store:
        stored = {(r.generation, r.slot) for r in store.candidates()}
    logged = {(e["generation"], e["slot"]) for e in logged_events(run_dir) if "slot" in e}
    assert logged == stored and 3 <= len(stored) < 6  # each row and its line, together

    resumed = subprocess.run(
        [sys.executable, "-c", "from pipeline.cli import main; main()", "search"]
        + ["--resume", str(run_dir), "--no-progress"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "taking it over" not in resumed.stderr  # the stopped search released its lock
    trained = _trained(run_dir)
    assert len(trained) == len(set(trained)) == 6  # nothing trained twice
