"""A full disk (a real tmpfs of a few MiB mounted for the test, then filled up): every write
fails whole (the previous file, line or store row is intact), the error names the file, and
the commands say to free space and resume, never a traceback.  Mounting needs root; elsewhere
these tests are skipped."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from search_helpers import make_tiny_teacher, start_search, trained_events, write_config

from models.files import append_line, atomic_write_json, disk_full, read_json

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs at tmp_path/disk, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave_bytes: int = 0) -> Path:
    """Fill `disk` up to about `leave_bytes` of free space with one file; returns it."""
    filler = disk / "filler"

    def free() -> int:
        stat = os.statvfs(disk)
        return stat.f_bavail * stat.f_frsize

    with open(filler, "ab", buffering=0) as handle:
        while free() - leave_bytes >= 4096:
            try:
                handle.write(b"\0" * min(1 << 20, (free() - leave_bytes) // 4096 * 4096))
            except OSError as error:
                assert error.errno == errno.ENOSPC
                break
    return filler


def test_writes_on_a_full_disk_fail_whole_and_name_the_file(small_disk):
    import torch

    from models.teacher_loading import atomic_save
    from pipeline.stop import disk_full_message
    from pipeline.store import ResultsStore

    events, state = small_disk / "evaluations.jsonl", small_disk / "state.json"
    append_line(events, json.dumps({"n": 1}))
    atomic_write_json(state, {"generation": 1})
    with ResultsStore(small_disk / "results.sqlite") as store:
        store.set_meta("config_hash", "abc")
    fill(small_disk)

    with pytest.raises(OSError) as full:
        append_line(events, json.dumps({"n": 2, "pad": "x" * 20_000}))
    assert disk_full(full.value) and full.value.filename == str(events)
    assert events.read_text() == '{"n": 1}\n'  # no half line

    with pytest.raises(OSError) as full:
        atomic_write_json(state, {"generation": 2, "pad": "x" * 20_000})
    assert disk_full(full.value) and full.value.filename == str(state)
    assert read_json(state) == {"generation": 1}
    assert sorted(p.name for p in small_disk.iterdir() if p.name.startswith(".")) == []

    checkpoint = small_disk / "state.pt"
    with pytest.raises(OSError) as full:  # torch's own writer says "unexpected pos ..."
        atomic_save({"weights": torch.zeros(100_000)}, checkpoint)
    assert disk_full(full.value) and full.value.filename == str(checkpoint)
    assert not checkpoint.exists()

    with (
        pytest.raises(sqlite3.OperationalError) as full,
        ResultsStore(small_disk / "results.sqlite") as store,
    ):
        store.set_meta("pad", "x" * 1_000_000)
    assert disk_full(full.value)
    message = disk_full_message(full.value, small_disk / "results.sqlite", "`pearl x`")
    assert f"writing {small_disk / 'results.sqlite'} failed" in message
    assert "Free space" in message and "`pearl x`" in message
    (small_disk / "filler").unlink()
    with ResultsStore(small_disk / "results.sqlite") as store:
        assert store.get_meta("config_hash") == "abc" and store.get_meta("pad") is None


def _resume(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from pipeline.cli import main; main()", "search"]
    return subprocess.run(
        [*command, "--resume", str(run_dir), "--no-progress", *extra],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_search_that_fills_the_disk_stops_clearly_and_resumes(
    small_disk, tmp_path, data_dir, cifar_small
):
    teacher = make_tiny_teacher(tmp_path, cifar_small)
    config = write_config(tmp_path / "cfg", data_dir, teacher, budget=2)
    run_dir = small_disk / "run"
    first = start_search(config, run_dir)
    assert first.wait(timeout=600) == 0
    for leave_bytes in (0, 48 * 1024):  # full at once; full after a few writes
        filler = fill(small_disk, leave_bytes)
        stopped = _resume(run_dir, "--max-candidates", "4")
        assert stopped.returncode == 1, stopped.stderr[-2000:]
        assert "Traceback" not in stopped.stderr and "the disk is full: writing" in stopped.stderr
        assert f"`pearl search --resume {run_dir}`" in stopped.stderr
        assert "--repair" not in stopped.stderr  # nothing was damaged
        lines = (run_dir / "evaluations.jsonl").read_text().splitlines()
        assert all(json.loads(line) for line in lines)  # whole lines only
        filler.unlink()
    done = _resume(run_dir, "--max-candidates", "4")
    assert done.returncode == 0, done.stderr[-2000:]
    trained = [(e["generation"], e["slot"]) for e in trained_events(run_dir)]
    assert len(trained) == len(set(trained)) == 4  # nothing lost, nothing trained twice
