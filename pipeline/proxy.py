"""The proxy task that scores a candidate (AKD sec. 3.2): train the student for a few epochs on
mini-train (the first epoch warms the learning rate up), then measure top-1 on mini-val.

Teacher cost.  AKD runs the teacher online for every candidate, which made its search 3-4x
slower than plain NAS.  Here every candidate of a search sees the *same* augmented batches
(`BatchLoader` is deterministic per seed and epoch), so the teacher's logits for epoch e, batch i
are the same for all of them: `CachedTeacher` computes them once per search (keeping
augmentation) and a KD-guided candidate then costs a cross-entropy one plus a table lookup.
`OnlineTeacher` is the reference it must equal.
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

from models.arch import Arch
from models.builder import build
from models.files import atomic_path
from pipeline.batches import BatchLoader
from pipeline.config import ProxyConfig
from pipeline.data import ImageArrays
from pipeline.losses import training_loss
from pipeline.registry import LOSSES


class TeacherSignal(Protocol):
    """Teacher logits for one training batch: (B, C), or (B, M, C) per ensemble member for
    oracle KD (loss "od")."""

    def logits(self, epoch: int, batch_index: int, images: torch.Tensor) -> torch.Tensor: ...


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
        online = OnlineTeacher(teacher)
        per_epoch = []
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            logits = [online.logits(epoch, i, x) for i, (x, _) in enumerate(loader)]
            per_epoch.append(torch.cat(logits))
            if progress:
                progress(epoch + 1, epochs)
        return cls(per_epoch, loader.batch_size)

    def logits(self, epoch: int, batch_index: int, images: torch.Tensor) -> torch.Tensor:
        if epoch >= len(self.per_epoch):
            raise ValueError(
                f"teacher logits cached for {len(self.per_epoch)} epochs, epoch {epoch} asked: "
                "recompute the cache with at least as many epochs as the proxy training"
            )
        start = batch_index * self.batch_size
        return self.per_epoch[epoch][start : start + len(images)]

    def save(self, path: Path) -> None:
        with atomic_path(path) as temporary:
            torch.save({"per_epoch": self.per_epoch, "batch_size": self.batch_size}, temporary)

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


def evaluate(model: nn.Module, arrays: ImageArrays, batch_size: int = 500) -> float:
    """Top-1 accuracy (fraction) of `model` on `arrays`, no augmentation."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in BatchLoader(arrays, batch_size, train=False):
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / len(arrays)


def train_candidate(
    arch: Arch,
    mini_train: ImageArrays,
    mini_val: ImageArrays,
    settings: ProxyConfig,
    teacher: TeacherSignal | None = None,
    early_stop: EarlyStop | None = None,
    *,
    seed: int = 0,
) -> ProxyResult:
    """Train `arch` from scratch on the proxy task (`settings`: the config's ``[proxy]``
    section) and score it; deterministic for a `seed` (the search passes ``search.seed``).

    With `early_stop`, the mini-val accuracy after `early_stop.after_epochs` epochs is measured
    (evaluation does not change the training, so a candidate that passes ends exactly as without
    the check) and training stops there if it is below `early_stop.min_accuracy`.
    """
    kind = LOSSES[settings.loss]
    if kind.needs_teacher and teacher is None:
        raise ValueError(
            f"proxy loss {settings.loss!r} needs a teacher (OnlineTeacher or CachedTeacher)"
        )
    started = time.perf_counter()
    loader = BatchLoader(mini_train, settings.batch_size, train=True, seed=seed)
    total_steps = settings.epochs * len(loader)
    warmup_steps = settings.warmup_epochs * len(loader)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build(arch).to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=settings.lr,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
            nesterov=True,
        )
        losses, step, early_accuracy = [], 0, None
        for epoch in range(settings.epochs):
            model.train()
            loader.set_epoch(epoch)
            total = 0.0
            for batch_index, (x, y) in enumerate(loader):
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, total_steps, warmup_steps, settings.lr)
                logits = model(x)
                target = None
                if kind.needs_teacher:
                    target = teacher.logits(epoch, batch_index, x)
                    if kind.teacher == "members":
                        target = target.transpose(0, 1)  # (B, M, C) -> (M, B, C)
                loss = training_loss(
                    settings.loss, logits, target, y, settings.temperature, settings.alpha
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item()
                step += 1
            losses.append(total / len(loader))
            if early_stop is not None and epoch + 1 == early_stop.after_epochs:
                early_accuracy = evaluate(model, mini_val)
                if early_accuracy < early_stop.min_accuracy:
                    return ProxyResult(
                        early_accuracy,
                        time.perf_counter() - started,
                        tuple(losses),
                        epoch + 1,
                        early_accuracy,
                        stopped_early=True,
                    )
        accuracy = evaluate(model, mini_val)
    return ProxyResult(
        accuracy,
        time.perf_counter() - started,
        tuple(losses),
        settings.epochs,
        early_accuracy,
    )
