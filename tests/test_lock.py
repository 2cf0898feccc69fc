"""One process per run folder, with real processes: a second one is refused with the holder's
pid, host and start time; the lock of a process killed with SIGKILL is taken over with a note;
every command that writes a folder (search, run, train, teacher train, tables build) takes it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.lock import LOCK_FILE_NAME, LockHeldError, folder_lock, output_lock

REPO = Path(__file__).resolve().parents[1]

_HOLD = """
import sys
from pipeline.lock import {function}
with {function}(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes stdin (or kills this process)
"""


def _holder(path: Path, function: str = "folder_lock") -> subprocess.Popen:
    """A real process that holds the lock of `path` until its stdin closes."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD.format(function=function), str(path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.fixture
def held(tmp_path):
    run_dir = tmp_path / "run"
    process = _holder(run_dir)
    yield run_dir, process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_a_second_process_is_refused_with_the_holder_named(held):
    run_dir, holder = held
    with pytest.raises(LockHeldError) as refused, folder_lock(run_dir):
        pass
    message = str(refused.value)
    assert f"pid {holder.pid} on host {socket.gethostname()}" in message
    assert "since 20" in message and f"kill {holder.pid}" in message and str(run_dir) in message
    holder.stdin.close()  # the holder ends normally: the lock file goes with it
    assert holder.wait(timeout=30) == 0
    assert not (run_dir / LOCK_FILE_NAME).exists()
    notes = []
    with folder_lock(run_dir, notes.append):
        assert (run_dir / LOCK_FILE_NAME).is_file()
    assert notes == []  # a lock released properly leaves nothing to take over


def test_the_lock_of_a_killed_process_is_taken_over_with_a_note(held):
    run_dir, holder = held
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (run_dir / LOCK_FILE_NAME).is_file()  # a SIGKILL leaves the file, not the lock
    notes = []
    with folder_lock(run_dir, notes.append):
        pass
    assert len(notes) == 1 and f"pid {holder.pid}" in notes[0] and "taking it over" in notes[0]
    assert not (run_dir / LOCK_FILE_NAME).exists() and run_dir.is_dir()  # not ours to remove


def test_a_table_output_is_locked_beside_the_file(tmp_path):
    table = tmp_path / "t.csv"
    holder = _holder(table, "output_lock")
    try:
        with pytest.raises(LockHeldError, match=f"output {table} is in use by pid {holder.pid}"):
            output_lock(table).acquire()
        assert (tmp_path / "t.csv.lock").is_file()
    finally:
        holder.kill()
        holder.wait()


def test_every_writing_command_refuses_a_locked_folder(held, tmp_path):
    run_dir, holder = held
    config = tmp_path / "c.toml"
    config.write_text('[teacher]\nspec = "builtin:resnet20_cifar10"\n')
    (tmp_path / "data.npz").write_bytes(b"")
    train = "--loss ce --epochs 1 --data".split() + [str(tmp_path / "data.npz")]
    commands = {
        "search": ["search", "--config", str(config), "--out", str(run_dir)],
        "run": ["run", "--config", str(config), "--out", str(run_dir)],
        "train": ["train", "mobilenet_v2_0.35", *train, "-o", str(run_dir)],
    }
    for name, args in commands.items():
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, (name, result.output)
        assert f"in use by pid {holder.pid}" in result.output, (name, result.output)
    teacher = _holder(tmp_path / "t.pt.run")
    try:
        args = ["teacher", "train", "--model", "resnet20", *train[2:], "-o", f"{tmp_path}/t.pt"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1 and f"in use by pid {teacher.pid}" in result.output
    finally:
        teacher.kill()
        teacher.wait()
    table = tmp_path / "t.csv"
    build = ["tables", "build", "--device", "host:tflite", "--space", "mnas-cifar"]
    with output_lock(table):  # held by this process: a second holder is refused all the same
        result = CliRunner().invoke(cli, [*build, "-o", str(table)])
    assert result.exit_code == 1 and f"output {table} is in use" in result.output


def test_two_concurrent_resumes_the_second_refuses_at_once(tmp_path, data_dir, cifar_small):
    from search_helpers import make_tiny_teacher, write_config

    teacher = make_tiny_teacher(tmp_path, cifar_small)
    config = write_config(tmp_path / "cfg", data_dir, teacher, budget=2)
    run_dir = tmp_path / "run"
    started = CliRunner().invoke(
        cli, ["search", "--config", str(config), "--out", str(run_dir), "--no-progress"]
    )
    assert started.exit_code == 0, started.output
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    pearl = [sys.executable, "-c", "from pipeline.cli import main; main()", "search"]
    resume = [*pearl, "--resume", str(run_dir), "--no-progress"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    first = subprocess.Popen([*resume, "--max-candidates", "6"], cwd=REPO, env=env, **quiet)
    try:
        lock = run_dir / LOCK_FILE_NAME
        deadline = time.monotonic() + 120
        while f'"pid": {first.pid}' not in _text(lock) and time.monotonic() < deadline:
            assert first.poll() is None, "the first resume ended before it took the lock"
            time.sleep(0.05)
        second = subprocess.run(resume, cwd=REPO, env=env, capture_output=True, text=True)
        assert first.poll() is None  # refused while the first one still works
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert f"run folder {run_dir} is in use by pid {first.pid}" in second.stderr
        assert first.wait(timeout=600) == 0
    finally:
        first.kill()
        first.wait()
    lines = [json.loads(t) for t in (run_dir / "evaluations.jsonl").read_text().splitlines()]
    trained = [(e["generation"], e["slot"]) for e in lines if e["event"] == "trained"]
    assert len(trained) == len(set(trained)) == 6  # nothing trained twice
    assert not lock.exists()


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def test_a_search_built_in_python_locks_its_folder_and_nests_under_a_command(
    tmp_path, data_dir, cifar_small
):
    from search_helpers import make_tiny_teacher, write_config

    from pipeline.config import load_config
    from pipeline.search import Search, build_setup

    teacher = make_tiny_teacher(tmp_path, cifar_small)
    config = load_config(write_config(tmp_path / "cfg", data_dir, teacher, budget=2))
    run_dir = tmp_path / "run"
    setup = build_setup(config, log=lambda message: None)
    try:
        with Search(config, run_dir, setup, resume=False, show_progress=False):
            refused = subprocess.run(
                [sys.executable, "-c", _HOLD.format(function="folder_lock"), str(run_dir)],
                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                capture_output=True, text=True, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            assert refused.returncode == 1 and f"in use by pid {os.getpid()}" in refused.stderr
        assert not (run_dir / LOCK_FILE_NAME).exists()  # released by close()
        with folder_lock(run_dir):  # what `pearl search` does: the Search's lock nests inside
            with Search(config, run_dir, setup, resume=True, show_progress=False):
                pass
            assert (run_dir / LOCK_FILE_NAME).is_file()  # still held by the outer lock
        assert not (run_dir / LOCK_FILE_NAME).exists()
    finally:
        setup.close()
