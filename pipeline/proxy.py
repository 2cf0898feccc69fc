"""The proxy task that scores a candidate (AKD sec. 3.2): train the student for a few epochs on
mini-train (the first epoch warms the learning rate up), then measure top-1 on mini-val.

Teacher cost.  AKD runs the teacher online for every candidate, which made its search 3-4x
slower than plain NAS.  Here every candidate of a search sees the *same* augmented batches
(`BatchLoader` is deterministic per seed and epoch), so the teacher's logits for epoch e, batch i
are the same for all of them: `CachedTeacher` computes them once per search (keeping
augmentation) and a KD-guided candidate then costs a cross-entropy one plus a table lookup.
`OnlineTeacher` is the reference it must equal.

Where it trains.  `train_candidate` takes the config's ``[compute]`` section (`pipeline.device`):
on a GPU the mini-train images and the cached logits are copied there once per candidate, batches
are cut and augmented there, the forward passes run in mixed precision and the host reads the
losses once per epoch.  On the CPU the result is bit-identical to Pearl before devices existed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from models.network import Network
from models.teacher_loading import atomic_save
from pipeline.batches import BatchLoader
from pipeline.config import ComputeConfig, ProxyConfig
from pipeline.data import ImageArrays
from pipeline.device import Placement, backward_and_step, placement
from pipeline.losses import training_loss
from pipeline.registry import LOSSES


class TeacherSignal(Protocol):
    """Teacher logits for one training batch: (B, C), or (B, M, C) per ensemble member for
    oracle KD (loss "od")."""

    def logits(self, epoch: int, batch_index: int, images: torch.Tensor) -> torch.Tensor: ...

    def to(self, device: torch.device) -> TeacherSignal:
        """This signal answering with logits on `device` (for batches on `device`)."""
        ...


class MemberLogits(nn.Module):
    """A teacher seen member by member: (B, M, C) logits (M = 1 for a single network), the
    input of oracle KD.  An `models.teachers.Ensemble` exposes its members' logits."""

    def __init__(self, teacher: nn.Module):
        super().__init__()
        self.teacher = teacher

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.teacher, "member_logits"):
            return self.teacher.member_logits(x).transpose(0, 1)
        return self.teacher(x).unsqueeze(1)


class OnlineTeacher:
    """Runs the teacher on every batch (what AKD does)."""

    def __init__(self, teacher: nn.Module):
        self.teacher = teacher.eval()

    def to(self, device: torch.device) -> OnlineTeacher:
        """Moves the teacher network itself (as `nn.Module.to` does)."""
        self.teacher.to(device)
        return self

    def logits(self, epoch: int, batch_index: int, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher(images)


class CachedTeacher:
    """Teacher logits for every batch of epochs 0..E-1 of one training `BatchLoader`."""

    def __init__(self, per_epoch: list[torch.Tensor], batch_size: int):
        self.per_epoch = per_epoch
        self.batch_size = batch_size

    @classmethod
    def compute(
        cls, teacher: nn.Module, loader: BatchLoader, epochs: int, progress: Callable | None = None
    ) -> CachedTeacher:
        """Run `teacher` over every batch of `loader` on the loader's device (moving the teacher
        there), keeping the logits on the CPU."""
        online = OnlineTeacher(teacher).to(loader.device)
        per_epoch = []
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            logits = [online.logits(epoch, i, x) for i, (x, _) in enumerate(loader)]
            per_epoch.append(torch.cat(logits).cpu())
            if progress:
                progress(epoch + 1, epochs)
        return cls(per_epoch, loader.batch_size)

    def to(self, device: torch.device) -> CachedTeacher:
        """A copy whose logits live on `device` (one copy, then every lookup stays there)."""
        return CachedTeacher([t.to(device) for t in self.per_epoch], self.batch_size)

    def logits(self, epoch: int, batch_index: int, images: torch.Tensor) -> torch.Tensor:
        if epoch >= len(self.per_epoch):
            raise ValueError(
                f"teacher logits cached for {len(self.per_epoch)} epochs, epoch {epoch} asked: "
                "recompute the cache with at least as many epochs as the proxy training"
            )
        start = batch_index * self.batch_size
        return self.per_epoch[epoch][start : start + len(images)]

    def save(self, path: Path) -> None:
        atomic_save({"per_epoch": self.per_epoch, "batch_size": self.batch_size}, path)

    @classmethod
    def load(cls, path: Path) -> CachedTeacher:
        state = torch.load(path, weights_only=True)
        return cls(state["per_epoch"], state["batch_size"])


@dataclass(frozen=True)
class ProxyResult:
    accuracy: float  # top-1 on mini-val, a fraction
    seconds: float
    train_loss_per_epoch: tuple[float, ...] = field(default_factory=tuple)
    epochs_trained: int = 0
    early_accuracy: float | None = None  # mini-val accuracy at the early-termination check
    stopped_early: bool = False  # True: `accuracy` is the early one (training was cut short)
    device: str = "cpu"  # where it trained: cpu, cuda:N or mps
    amp: str | None = None  # mixed-precision dtype ("bfloat16", "float16"); None: fp32


@dataclass(frozen=True)
class EarlyStop:
    """Stop a hopeless candidate: after `after_epochs` epochs, evaluate on mini-val and stop
    if the accuracy is below `min_accuracy` (the search sets it from the best seen so far)."""

    after_epochs: int
    min_accuracy: float


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up to `peak_lr`, then cosine decay to zero (per optimiser step)."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak_lr * 0.5 * (1 + math.cos(math.pi * progress))


EVAL_BATCH_CPU, EVAL_BATCH_DEVICE = 500, 2000  # images per evaluation batch


def evaluate(
    model: nn.Module,
    arrays: ImageArrays,
    batch_size: int | None = None,
    *,
    place: Placement | None = None,
) -> float:
    """Top-1 accuracy (fraction) of `model` on `arrays`, no augmentation, on the device of
    `place` (default CPU), where `model` must be; batches of `EVAL_BATCH_CPU` images on the CPU,
    `EVAL_BATCH_DEVICE` on a GPU unless `batch_size` says otherwise."""
    place = place or Placement(torch.device("cpu"))
    batch_size = batch_size or (EVAL_BATCH_CPU if place.on_cpu else EVAL_BATCH_DEVICE)
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=place.device)
    with torch.no_grad(), place.autocast():
        for x, y in BatchLoader(arrays, batch_size, train=False, device=place.device):
            correct += (model(x).argmax(1) == y).sum()
    return correct.item() / len(arrays)


class EpochTally:
    """The training loss (and, if given, the correct count) of every batch of one epoch,
    written on the device as the batches run and read on the host only when asked, so a GPU
    never waits for the host between steps."""

    def __init__(self, batches: int, device: torch.device) -> None:
        self.loss = torch.zeros(batches, dtype=torch.float32, device=device)
        self.correct = torch.zeros(batches, dtype=torch.int64, device=device)
        self.sizes: list[int] = []  # images per recorded batch

    def add(self, loss: torch.Tensor, images: int, correct: torch.Tensor | None = None) -> None:
        index = len(self.sizes)
        self.loss[index] = loss.detach()
        if correct is not None:
            self.correct[index] = correct
        self.sizes.append(images)

    def losses(self) -> list[float]:
        """The recorded batches' losses, as exact Python floats (one read from the device)."""
        return self.loss[: len(self.sizes)].tolist()

    def correct_count(self) -> int:
        return int(self.correct.sum().item())


def sum_in_order(values) -> float:
    """``((0.0 + v0) + v1) + ...``: the running sum a loop of ``total += value`` computes
    (Python's `sum` of floats is compensated since 3.12, so it can differ in the last bit)."""
    total = 0.0
    for value in values:
        total += value
    return total


def train_candidate(
    arch: Network,
    mini_train: ImageArrays,
    mini_val: ImageArrays,
    settings: ProxyConfig,
    teacher: TeacherSignal | None = None,
    early_stop: EarlyStop | None = None,
    *,
    seed: int = 0,
    compute: ComputeConfig | Placement | None = None,
) -> ProxyResult:
    """Train `arch` from scratch on the proxy task (`settings`: the config's ``[proxy]``
    section) and score it; deterministic for a `seed` (the search passes ``search.seed``).
    `compute` (the config's ``[compute]`` section, default `ComputeConfig()`: auto, or a
    `pipeline.device.Placement`) says where; on the CPU the result is bit-identical to Pearl
    before devices existed, whatever else `compute` says.

    With `early_stop`, the mini-val accuracy after `early_stop.after_epochs` epochs is measured
    (evaluation does not change the training, so a candidate that passes ends exactly as without
    the check) and training stops there if it is below `early_stop.min_accuracy`.
    """
    if LOSSES[settings.loss].needs_teacher and teacher is None:
        raise ValueError(
            f"proxy loss {settings.loss!r} needs a teacher (OnlineTeacher or CachedTeacher)"
        )
    place = placement(compute)
    started = time.perf_counter()
    loader = BatchLoader(
        mini_train, settings.batch_size, train=True, seed=seed, device=place.device
    )
    if teacher is not None and not place.on_cpu:
        teacher = teacher.to(place.device)
    where = {"device": str(place.device), "amp": place.amp_name()}
    with place.fork_rng():
        torch.manual_seed(seed)
        model = arch.build().to(place.device, memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=settings.lr,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
            nesterov=True,
        )
        scaler = place.grad_scaler()
        losses, early_accuracy = [], None
        for epoch in range(settings.epochs):
            tally = _proxy_epoch(model, optimizer, scaler, loader, teacher, settings, place, epoch)
            losses.append(sum_in_order(tally.losses()) / len(loader))
            if early_stop is not None and epoch + 1 == early_stop.after_epochs:
                early_accuracy = evaluate(model, mini_val, place=place)
                if early_accuracy < early_stop.min_accuracy:
                    seconds = time.perf_counter() - started
                    return ProxyResult(
                        early_accuracy,
                        seconds,
                        tuple(losses),
                        epoch + 1,
                        early_accuracy,
                        True,
                        **where,
                    )
        accuracy = evaluate(model, mini_val, place=place)
    seconds = time.perf_counter() - started
    return ProxyResult(accuracy, seconds, tuple(losses), settings.epochs, early_accuracy, **where)


def proxy_loss(
    settings: ProxyConfig,
    logits: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    teacher: TeacherSignal | None,
    epoch: int,
    batch_index: int,
) -> torch.Tensor:
    """The ``[proxy]`` loss of one training batch (batch `batch_index` of `epoch`, whose cached
    teacher logits are looked up)."""
    kind = LOSSES[settings.loss]
    target = None
    if kind.needs_teacher:
        target = teacher.logits(epoch, batch_index, x)
        if kind.teacher == "members":
            target = target.transpose(0, 1)  # (B, M, C) -> (M, B, C)
    return training_loss(settings.loss, logits, target, y, settings.temperature, settings.alpha)


def _proxy_epoch(model, optimizer, scaler, loader, teacher, settings, place, epoch) -> EpochTally:
    """One epoch of proxy training (warm-up then cosine learning rate per step)."""
    total_steps = settings.epochs * len(loader)
    warmup_steps = settings.warmup_epochs * len(loader)
    model.train()
    loader.set_epoch(epoch)
    tally = EpochTally(len(loader), place.device)
    for batch_index, (x, y) in enumerate(loader):
        step = epoch * len(loader) + batch_index
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total_steps, warmup_steps, settings.lr)
        with place.autocast():
            logits = model(x)
        loss = proxy_loss(settings, logits.float(), x, y, teacher, epoch, batch_index)
        backward_and_step(loss, optimizer, scaler)
        tally.add(loss, len(y))
    return tally
