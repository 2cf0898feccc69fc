"""Shared by the search tests: a tiny corner of the search space, a config writer and a small
real teacher checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.config import load_config

# A tiny corner of the MnasNet space (one width, fewest layers, stride 32): each candidate
# trains in about a second, so the loop itself is what these tests exercise.
TINY = """
[data]
path = "{data}"
train_images = 256
val_images = 200

[space]
name = "mnas-imagenet"
width_multipliers = [0.5]
layer_deltas = [-1]
stem_channels = 8
head_channels = 64

[teacher]
spec = "{teacher}"
cache_dir = "{cache}/teacher_logits"

[proxy]
epochs = 2
batch_size = 64
threads = 1
{proxy_extra}

[reward]
preset = "soft"
cost = "macs"
target = 1000000.0

[controller]
name = "ppo"

[search]
batch_size = 2
max_candidates = {budget}
seed = 0
"""


TINY_SPACE = {
    "name": "mnas-imagenet",
    "width_multipliers": [0.5],
    "layer_deltas": [-1],
    "stem_channels": 8,
    "head_channels": 64,
}


def tiny_space():
    return load_config(None, {"space": TINY_SPACE, "proxy": {"loss": "ce"}}).space.build()


def make_tiny_teacher(folder: Path, cifar_small, seed: int = 0) -> Path:
    """A Pearl checkpoint of a small network trained for 40 batches: better than chance and a
    few seconds to make on a busy 2-core machine (a ResNet-20 costs ~40x more per image).
    Another `seed`: another member for an ensemble."""
    from models.builder import build
    from models.normalisation import CIFAR10_MEAN, CIFAR10_STD
    from models.teacher_loading import save_checkpoint
    from pipeline.batches import BatchLoader

    space = tiny_space()
    arch = space.arch_from([0] * len(space.decisions()))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny ops: extra threads only wait on a busy machine
    torch.manual_seed(seed)
    model = build(arch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step, (x, y) in enumerate(BatchLoader(cifar_small[0], 64, train=True, seed=seed)):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 39:
            break
    torch.set_num_threads(threads)
    path = folder / ("tiny_teacher.pt" if seed == 0 else f"tiny_teacher_{seed}.pt")
    save_checkpoint(
        path,
        model.eval(),
        model_name=arch.encode(),
        num_classes=10,
        input_size=32,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )
    return path


def write_config(folder: Path, data_dir: Path, teacher: Path, budget: int = 4, proxy_extra=""):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.toml"
    path.write_text(
        TINY.format(
            data=data_dir / "cifar10_small.npz",
            teacher=teacher,
            cache=folder.parent,
            budget=budget,
            proxy_extra=proxy_extra,
        )
    )
    return path


def logged_events(run_dir: Path) -> list[dict]:
    """Every line of the run's evaluations.jsonl."""
    import json

    path = run_dir / "evaluations.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def trained_events(run_dir: Path) -> list[dict]:
    """The proxy trainings logged in evaluations.jsonl (its other lines record later changes
    of a row: scored, reused, remeasured, and finished generations)."""
    return [line for line in logged_events(run_dir) if line["event"] == "trained"]


def start_search(config: Path, out: Path, *extra: str, stderr=None):
    """A real `pearl search --config CONFIG --out OUT` process (a subprocess.Popen; stdout
    discarded; stderr to `stderr`, default discarded)."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-c", "from pipeline.cli import main; main()", "search"]
    return subprocess.Popen(
        [*command, "--config", str(config), "--out", str(out), "--no-progress", *extra],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if stderr is None else stderr,
        text=True,
    )


def wait_for_trained(process, run_dir: Path, count: int, timeout_s: float = 240) -> None:
    """Wait until `count` candidates of `run_dir` are trained (or the process ended, or the
    time ran out)."""
    import time

    deadline = time.monotonic() + timeout_s
    while len(trained_events(run_dir)) < count and process.poll() is None:
        if time.monotonic() > deadline:
            return
        time.sleep(0.02)
