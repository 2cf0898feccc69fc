"""Chaos benchmark: a tiny `pearl search` and a tiny `pearl run`, each started again and again,
killed with SIGKILL at a random moment (anywhere in the run: start-up, training, timing, store
writes, final training, export, re-timing, report) and resumed until done; before a resume,
by turns: nothing, damaged store pages, a damaged cache (teacher logits, measurements, exported
files), two resumes started at once, a full disk (a tmpfs of a few MiB, filled up).  Every
finished run is compared with an uninterrupted one (the notion of "identical" of the test suite:
every candidate row's key, accuracy and reward, the controller's final state, the winners and
the final training curves without timings).

    python bench/chaos.py [--kills 20] [--seed 0] [--only search|run] [--no-write]

Reports: trials, kills (and the stage each hit), candidates lost (goal 0), candidates trained
twice (goal 0), final results identical to the uninterrupted run, raw tracebacks (goal 0).
Mounting the small file system needs root; without it the full-disk trials are skipped (said
in the table).  Work files go to a temporary folder (``--work`` to keep them).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._report import write_section  # noqa: E402

TABLE = REPO / "latency_tables" / "host_tflite_mnas-cifar_32.csv"
CONFIG = """
[data]
path = "{data}"
train_images = 128
val_images = 100

[space]
name = "mnas-cifar"
input_size = 32
num_classes = 10
width_multipliers = [0.75]  # the table's narrowest and shallowest options: fast candidates
layer_deltas = [-1]

[teacher]
spec = "builtin:resnet20_cifar10"
cache_dir = "{cache}/teacher_logits"

[proxy]
epochs = 1
batch_size = 64
threads = 1

[reward]
preset = "soft"
cost = "latency_ms"
target = 0.5

[search]
batch_size = 2
max_candidates = 4
seed = {seed}

[latency]
backends = ["table:{table}"]
export_cache_dir = "{cache}/artifacts"
measurement_cache = "{cache}/measurements.sqlite"

[train]
epochs = 1
train_images = 128
test_images = 100
losses = ["kd"]
baseline = ""
batch_size = 64
threads = 1

[export]
formats = ["tflite"]
calib_images = 10
"""
INJECTIONS = ("none", "store pages", "cache", "two resumes at once", "full disk")


@dataclass
class Trial:
    kind: str  # search | run
    injection: str
    kill_stage: str = ""
    processes: int = 0
    lost: int = 0
    twice: int = 0
    identical: bool = False
    tracebacks: int = 0
    notes: list[str] = field(default_factory=list)


def pearl(kind: str, *args: str, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-c", "from pipeline.cli import main; main()", kind, *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    handle = open(log, "a")  # noqa: SIM115 (closed with the process, below)
    process = subprocess.Popen(
        [*command, "--no-progress"], cwd=REPO, env=env, stdout=handle, stderr=handle
    )
    process.log_handle = handle  # type: ignore[attr-defined]
    return process


def finish(process: subprocess.Popen, timeout: float = 1800) -> int:
    try:
        return process.wait(timeout=timeout)
    finally:
        process.log_handle.close()  # type: ignore[attr-defined]


def search_dir(kind: str, run_dir: Path) -> Path:
    return run_dir / "search" if kind == "run" else run_dir


def stage_of(kind: str, run_dir: Path) -> str:
    """Where a killed run was, judged from its folder (the next stage's output is missing)."""
    search = search_dir(kind, run_dir)
    if not (search / "results.sqlite").exists():
        return "start-up"
    if kind == "search" or not (search / "summary.json").exists():
        events = search / "evaluations.jsonl"
        last = events.read_text().splitlines()[-1:] if events.exists() else []
        if (search / "summary.json").exists() or (search / "pareto.csv").exists():
            return "search (writing its result files)"
        try:
            return f"search (after a {json.loads(last[0])['event']} event)"
        except (IndexError, ValueError, KeyError):
            return "search (nothing logged yet)"
    if not (run_dir / "winners.json").exists():
        return "winners"
    if not list((run_dir / "train").glob("*/model.pt")):
        return "final training"
    if not list((run_dir / "export").glob("*/metadata.json")):
        return "export"
    return "re-timing" if not (run_dir / "latency.json").exists() else "report"


def damage(path: Path, rng: random.Random) -> str:
    size = path.stat().st_size
    offset = rng.randrange(0, max(1, size - 64))
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(rng.randbytes(min(64, size - offset)))
    return f"damaged {path.name} at byte {offset}"


def inject_damage(what: str, kind: str, run_dir: Path, cache: Path, rng: random.Random) -> str:
    if what == "store pages":
        store = search_dir(kind, run_dir) / "results.sqlite"
        return damage(store, rng) if store.exists() else "no store yet"
    files = [p for p in cache.rglob("*") if p.is_file() and ".damaged-" not in p.name]
    files = [p for p in files if p.suffix in (".pt", ".sqlite", ".tflite", ".json")]
    return damage(rng.choice(sorted(files)), rng) if files else "no cache file yet"


def fill(disk: Path, leave_bytes: int) -> Path:
    filler = disk / "filler"
    with open(filler, "ab", buffering=0) as handle:
        while True:
            stat = os.statvfs(disk)
            room = stat.f_bavail * stat.f_frsize - leave_bytes
            if room < 4096:
                break
            try:
                handle.write(b"\0" * min(1 << 20, room // 4096 * 4096))
            except OSError:
                break
    return filler


def mount_small_disk(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    return done.returncode == 0


def outcome(kind: str, run_dir: Path) -> dict:
    """What must be identical to the uninterrupted run."""
    from pipeline.store import ResultsStore

    with ResultsStore(search_dir(kind, run_dir) / "results.sqlite") as store:
        rows = [(r.generation, r.slot, r.key, r.accuracy, r.reward) for r in store.candidates()]
        # the controller's state: a `pearl run` past its search stage never reads it again (a
        # store damaged then is only repaired by the next `pearl search --resume` of it)
        last = store.last_generation() if kind == "search" else None
    state = {k: v.tolist() for k, v in last[1]["policy"].items()} if last else None
    result = {"rows": rows, "policy": state}
    if kind == "run":
        result["winners"] = json.loads((run_dir / "winners.json").read_text())
        curves = {}
        for metrics in sorted((run_dir / "train").glob("*/metrics.json")):
            data = json.loads(metrics.read_text())
            curves[metrics.parent.name] = [
                {k: v for k, v in row.items() if "seconds" not in k and "per_s" not in k}
                for row in data["curve"]
            ]
        result["final"] = curves
    return result


def trained_counts(kind: str, run_dir: Path, expected: int) -> tuple[int, int]:
    """(candidates lost, candidates trained twice) from evaluations.jsonl and the store."""
    events = search_dir(kind, run_dir) / "evaluations.jsonl"
    lines = [json.loads(t) for t in events.read_text().splitlines()] if events.exists() else []
    trained = [(e["generation"], e["slot"]) for e in lines if e["event"] == "trained"]
    from pipeline.store import ResultsStore

    with ResultsStore(search_dir(kind, run_dir) / "results.sqlite") as store:
        stored = {(r.generation, r.slot) for r in store.candidates()}
    return expected - len(stored), len(trained) - len(set(trained))


def run_trial(kind, trial: Trial, config: Path, run_dir: Path, cache: Path, disk, reference_s,
              rng: random.Random, logs: Path) -> None:  # fmt: skip
    log = logs / f"{run_dir.name}.log"
    first = pearl(kind, "--config", str(config), "--out", str(run_dir), log=log)
    trial.processes += 1
    kill_at = rng.uniform(0.5, 0.9 * reference_s)  # its reference computed the teacher's
    deadline = time.monotonic() + kill_at
    while first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if first.poll() is None:
        trial.kill_stage = f"{stage_of(kind, run_dir)} at {kill_at:.1f} s"
        first.send_signal(signal.SIGKILL)
    else:
        trial.kill_stage = f"none (ended before {kill_at:.1f} s)"
    finish(first)
    what = trial.injection
    if what in ("store pages", "cache"):
        trial.notes.append(inject_damage(what, kind, run_dir, cache, rng))

    def resume() -> tuple[str, ...]:  # what a user does: resume, or start again when
        if (run_dir / "config.toml").exists():  # nothing was written yet
            return ("--resume", str(run_dir))
        return ("--config", str(config), "--out", str(run_dir))

    if what == "two resumes at once":
        pair = [pearl(kind, *resume(), log=log), pearl(kind, *resume(), log=log)]
        trial.processes += 2
        codes = [finish(p) for p in pair]
        trial.notes.append(f"exit statuses {codes}")
    if what == "full disk" and disk is not None:
        filler = fill(disk, rng.choice((0, 64 * 1024)))
        code = finish(pearl(kind, *resume(), log=log))
        trial.processes += 1
        filler.unlink()
        trial.notes.append(f"full disk: exit {code}")
    for _ in range(5):  # resumed until done
        trial.processes += 1
        if finish(pearl(kind, *resume(), log=log)) == 0:
            break
    text = log.read_text(errors="replace")
    trial.tracebacks = text.count("Traceback (most recent call last)")
    for sign, note in (("repaired ", "store repaired"), ("is damaged (", "cache set aside"),
                       ("is in use by pid", "second resume refused"),
                       ("the disk is full: writing", "disk-full message")):  # fmt: skip
        if sign in text:
            trial.notes.append(note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="killed runs per command")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("search", "run"), default=None)
    parser.add_argument("--work", type=Path, default=None, help="keep the work files here")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args()
    data = Path(os.environ.get("PEARL_DATA", REPO.parent / "shared" / "data")) / "cifar10_small.npz"
    work = args.work or Path(tempfile.mkdtemp(prefix="pearl-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    loads, started = [os.getloadavg()[0]], time.time()
    cache, logs = work / "cache", work / "logs"
    logs.mkdir(exist_ok=True)
    config = work / "chaos.toml"
    config.write_text(CONFIG.format(data=data, cache=cache, table=TABLE, seed=args.seed))
    disk = work / "small-disk"
    mounted = mount_small_disk(disk, "16m")
    trials: list[Trial] = []
    kinds = [args.only] if args.only else ["search", "run"]
    try:
        for kind in kinds:
            reference_dir = work / f"{kind}-reference"
            t0 = time.monotonic()
            code = finish(pearl(kind, "--config", str(config), "--out", str(reference_dir),
                                log=logs / f"{kind}-reference.log"))  # fmt: skip
            reference_s = time.monotonic() - t0
            if code != 0:
                raise SystemExit(f"the uninterrupted {kind} failed: see {logs}")
            reference = outcome(kind, reference_dir)
            expected = len(reference["rows"])
            print(f"{kind}: uninterrupted run {reference_s:.1f} s", flush=True)
            for i in range(args.kills):
                injection = INJECTIONS[i % len(INJECTIONS)]
                if injection == "full disk" and not mounted:
                    injection = "none (no tmpfs: not root)"
                trial = Trial(kind, injection)
                base = disk if injection == "full disk" else work
                run_dir = base / f"{kind}-{i:02d}"
                run_trial(kind, trial, config, run_dir, cache, disk if mounted else None,
                          reference_s, rng, logs)  # fmt: skip
                try:
                    trial.lost, trial.twice = trained_counts(kind, run_dir, expected)
                    trial.identical = outcome(kind, run_dir) == reference
                except Exception as error:  # the trial did not finish: counted, not hidden
                    trial.notes.append(f"unfinished: {type(error).__name__}: {error}")
                    trial.lost = expected
                if injection == "full disk":
                    shutil.rmtree(run_dir, ignore_errors=True)  # the small disk is reused
                trials.append(trial)
                loads.append(os.getloadavg()[0])
                print(f"{kind} {i}: {trial}", flush=True)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)], check=False)
    report(trials, args, loads, time.time() - started)


def report(trials: list[Trial], args, loads: list[float], wall_s: float) -> None:
    head = "| trial | command | killed in | then | processes | lost | twice | same | tracebacks |"
    rows = [head, "|---|---|---|---|---|---|---|---|---|"]
    for n, t in enumerate(trials):
        then = t.injection + (f" ({'; '.join(t.notes)})" if t.notes else "")
        rows.append(
            f"| {n} | {t.kind} | {t.kill_stage} | {then} | {t.processes} | {t.lost} | {t.twice} "
            f"| {'yes' if t.identical else 'NO'} | {t.tracebacks} |"
        )
    summary = []
    for kind in sorted({t.kind for t in trials}):
        mine = [t for t in trials if t.kind == kind]
        killed = sum(1 for t in mine if t.kill_stage.startswith("none") is False)
        summary.append(
            f"| {kind} | {len(mine)} | {killed} | {sum(t.lost for t in mine)} | "
            f"{sum(t.twice for t in mine)} | {sum(t.identical for t in mine)}/{len(mine)} | "
            f"{sum(t.tracebacks for t in mine)} |"
        )
    table = "\n".join(
        ["| command | trials | SIGKILLs | candidates lost | trained twice | identical | "
         "raw tracebacks |", "|---|---|---|---|---|---|---|", *summary, "", *rows]
    )  # fmt: skip
    notes = (
        f"Wall time {wall_s / 60:.1f} min; 1-min load average during the run "
        f"{min(loads):.1f}-{max(loads):.1f} (a shared 2-core machine). Each trial: a new run "
        "killed with SIGKILL at a moment drawn uniformly within the uninterrupted run's wall "
        "time, then by turns nothing / damaged store bytes / a damaged cache file / two "
        "concurrent resumes / a full disk (tmpfs of 16 MiB filled to 0 or 64 KiB free), then "
        "`--resume` until it ends with status 0. Lost: candidates missing from the final store; "
        "twice: (generation, slot) trained more than once in evaluations.jsonl; identical: "
        "every row's key, accuracy and reward, the controller's final state (search), the "
        "winners and the final training curves without timings (run) equal the uninterrupted "
        "run's."
    )
    command = f"python bench/chaos.py --kills {args.kills} --seed {args.seed}" + (
        f" --only {args.only}" if args.only else ""
    )
    print(table)
    print(notes)
    if not args.no_write:
        title = "Chaos: SIGKILL, damaged files, concurrent resumes, full disk"
        title += f" (pearl {args.only})" if args.only else ""
        write_section(title, command, table, notes=notes)


if __name__ == "__main__":
    main()
