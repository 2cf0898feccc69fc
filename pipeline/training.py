"""Full-schedule training, one loop for teachers and final students.

SGD with (Nesterov) momentum, weight decay, linear warm-up then cosine or step decay (per
optimiser step), CIFAR augmentation from the in-memory `BatchLoader` (random crop + flip for a
whole batch at once, channels-last float output), loss ``ce``, ``kd`` (Hinton, temperature T and
weight alpha) or ``od`` (oracle KD for ensemble teachers, KDAS eq. 4), evaluation on the test
split after every epoch (top-1, top-5, loss).

A run lives in a folder::

    config.json   resolved settings, data, teacher, command (written first)
    state.pt      weights, optimiser, RNG state, curve after the last finished epoch (atomic)
    metrics.json  top-1/top-5/loss of the last epoch, the per-epoch curve, images/s, the teacher's
                  accuracy on the same test split; rewritten each epoch, "finished" at the end
    model.pt      the trained network as a Pearl checkpoint (`models.teacher_loading`)

Killed at any moment, a run resumed from its folder continues exactly where the last finished
epoch left it: batches depend only on (seed, epoch), and the global RNG state (dropout) is saved
with the weights and the optimiser, so the resumed result equals an uninterrupted one.

Where it runs comes from `compute` (the ``[compute]`` section, `pipeline.device`): on a GPU the
data lives there as uint8 and batches are made there, forward passes use mixed precision, and the
host reads the losses about ten times per epoch (progress and the divergence check), never per
step.  On the CPU the results are bit-identical to Pearl before devices existed.  metrics.json
records the device under ``"device"``.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.files import atomic_write_json
from models.normalisation import CIFAR10_MEAN, CIFAR10_STD
from models.teacher_loading import build_model, load_teacher, save_checkpoint
from models.teachers import Ensemble
from pipeline.batches import BatchLoader
from pipeline.config import ComputeConfig
from pipeline.data import CIFAR10_CLASSES, ImageArrays, channel_mean_std
from pipeline.device import Placement, backward_and_step, placement
from pipeline.losses import training_loss
from pipeline.progress import progress_bar
from pipeline.proxy import EpochTally, sum_in_order
from pipeline.proxy import learning_rate as warmup_cosine_lr
from pipeline.registry import LOSSES
from pipeline.train_settings import TrainingError, TrainSettings
from pipeline.train_state import load_state, restore, run_config, save_state

STATE_FILE, METRICS_FILE, CONFIG_FILE, MODEL_FILE = (
    "state.pt",
    "metrics.json",
    "config.json",
    "model.pt",
)


def scheduled_lr(settings: TrainSettings, step: int, steps_per_epoch: int) -> float:
    """Learning rate of optimiser step `step`: linear warm-up over `warmup_epochs`, then cosine
    decay to zero (`pipeline.proxy.learning_rate`) or step decay at the milestones."""
    total_steps = settings.epochs * steps_per_epoch
    warmup_steps = settings.warmup_epochs * steps_per_epoch
    if settings.schedule == "cosine" or step < warmup_steps:
        return warmup_cosine_lr(step, total_steps, warmup_steps, settings.lr)
    passed = sum(step >= round(m * total_steps) for m in settings.milestones)
    return settings.lr * settings.gamma**passed


def input_statistics(train: ImageArrays) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation for a dataset: the standard CIFAR-10 constants (what the rest of Pearl uses)
    for CIFAR-10, else the training split's own per-channel mean and std."""
    if train.class_names == CIFAR10_CLASSES:
        return CIFAR10_MEAN, CIFAR10_STD
    mean, std = channel_mean_std(train)
    return tuple(round(v, 4) for v in mean), tuple(round(v, 4) for v in std)


def load_teacher_for(spec: str, arrays: ImageArrays, mean, std) -> nn.Module:
    """Teacher `spec` checked against data like `arrays` (class count, input size), fed
    inputs normalised with `mean`/`std` (`models.teacher_loading.load_teacher`)."""
    return load_teacher(
        spec,
        num_classes=arrays.num_classes,
        input_size=int(arrays.images.shape[1]),
        mean=mean,
        std=std,
    )


# --------------------------------------------------------------------------------------------
# Evaluation


def evaluate(
    model: nn.Module, loader: BatchLoader, num_classes: int, *, place: Placement | None = None
) -> dict[str, float]:
    """Top-1, top-5 (fractions) and mean cross-entropy of `model` over `loader`, on the
    loader's device (where `model` must be), in mixed precision if `place` says so.  Counts and
    per-batch loss sums stay on the device until one read at the end; the loss sums are then
    added in batch order as Python floats (as a loop of ``.item()`` would, bit for bit)."""
    place = place or Placement(loader.device)
    model.eval()
    k = min(5, num_classes)
    correct1, correct5 = (torch.zeros((), dtype=torch.int64, device=loader.device) for _ in "12")
    loss_sums = []  # float32 (0-dim) per batch; MPS has no float64
    count = 0
    with torch.no_grad():
        for x, y in loader:
            with place.autocast():
                logits = model(x)
            logits = logits.float()
            top = logits.topk(k, dim=1).indices
            correct1 += (top[:, 0] == y).sum()
            correct5 += (top == y[:, None]).any(dim=1).sum()
            loss_sums.append(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            count += len(y)
    loss_sum = sum_in_order(torch.stack(loss_sums).tolist())
    return {
        "top1": correct1.item() / count,
        "top5": correct5.item() / count,
        "loss": loss_sum / count,
    }


# --------------------------------------------------------------------------------------------
# The loop


class _Progress:
    """The progress bar on stderr (or nothing), with a log line per epoch."""

    def __init__(self, enabled: bool) -> None:
        self.bar = progress_bar(fields=("status",)) if enabled else None

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def start(self, total: int, done: int) -> None:
        if self.bar is not None:
            self.task = self.bar.add_task("training", total=total, completed=done, status="")

    def advance(self, description: str, status: str | None, batch: int, batches: int) -> None:
        """One batch done (`status`: new text, or None to keep the last); without a terminal (a
        log file) also a line every tenth of an epoch."""
        if self.bar is None:
            return
        fields = {} if status is None else {"status": status}
        self.bar.update(self.task, advance=1, description=description, **fields)
        tenth = (batch + 1) % max(1, batches // 10) == 0
        if status is not None and tenth and not self.bar.console.is_terminal:
            self.log(f"{description}: batch {batch + 1}/{batches}, {status}")

    def log(self, line: str) -> None:
        if self.bar is not None:
            self.bar.console.print(line, highlight=False)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _teacher_targets(teacher: nn.Module, x: torch.Tensor, loss: str) -> torch.Tensor:
    with torch.no_grad():
        if LOSSES[loss].teacher == "members":
            if isinstance(teacher, Ensemble):
                return teacher.member_logits(x)
            return teacher(x).unsqueeze(0)
        return teacher(x)


def train(
    settings: TrainSettings,
    train_arrays: ImageArrays,
    test_arrays: ImageArrays,
    run_dir: str | os.PathLike,
    *,
    teacher: nn.Module | None = None,
    resume: bool = False,
    run_info: dict[str, Any] | None = None,
    progress: bool = True,
    threads: int | None = None,
    stop_after_epochs: int | None = None,
    compute: ComputeConfig | Placement | None = None,
) -> dict[str, Any]:
    """Train `settings.model` on `train_arrays`, evaluating on `test_arrays` every epoch, in
    `run_dir`; returns the metrics (also written to ``metrics.json``).

    `teacher` (eval mode, expecting inputs normalised like the data) is needed for ``kd`` and
    ``od``; it is moved to the training device.  `run_info` (data path, teacher spec, command) is
    recorded in config.json and the checkpoint and must match on resume.  `threads`: torch
    intra-op threads (default: all usable cores).  `stop_after_epochs` ends this call early (the
    run stays resumable).  `compute`: where to train (default `ComputeConfig()`: auto, or a
    `pipeline.device.Placement`); a resumed run may continue on another device.
    """
    run_dir = Path(run_dir)
    if LOSSES[settings.loss].needs_teacher and teacher is None:
        raise TrainingError(f"loss {settings.loss!r} needs a teacher (--teacher)")
    if train_arrays.class_names != test_arrays.class_names:
        raise TrainingError("train and test splits have different class names")
    place = placement(compute)
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    num_classes = train_arrays.num_classes
    mean, std = input_statistics(train_arrays)
    run_info = _with_data_info(run_info, train_arrays, test_arrays, mean, std)
    config = run_config(settings, run_info)
    state_path = run_dir / STATE_FILE
    state = load_state(state_path, config, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / CONFIG_FILE, config)

    loader, test_loader = _loaders(settings, train_arrays, test_arrays, mean, std, place.device)
    with place.fork_rng():
        torch.manual_seed(settings.seed)
        model, optimizer = _model_and_optimizer(settings, run_info["data"], place.device)
        if teacher is not None:
            teacher = teacher.eval().to(place.device, memory_format=torch.channels_last)
        curve, teacher_metrics = restore(state, model, optimizer, place)
        if state is None and teacher is not None:
            teacher_metrics = evaluate(teacher, test_loader, num_classes, place=place)
        stepper = _Stepper(model, optimizer, place.grad_scaler(), teacher, place)
        start_epoch = len(curve)
        end_epoch = settings.epochs
        if stop_after_epochs is not None:
            end_epoch = min(end_epoch, start_epoch + stop_after_epochs)

        with _Progress(progress) as bar:
            steps_per_epoch = len(loader)
            bar.start(settings.epochs * steps_per_epoch, start_epoch * steps_per_epoch)
            if teacher_metrics is not None and start_epoch == 0:
                bar.log(f"teacher on the test split: top-1 {100 * teacher_metrics['top1']:.2f}%")
            for epoch in range(start_epoch, end_epoch):
                row = _train_epoch(settings, stepper, loader, epoch, bar)
                test = evaluate(model, test_loader, num_classes, place=place)
                row.update({f"test_{k}": v for k, v in test.items()})
                curve.append(row)
                save_state(state_path, model, optimizer, curve, teacher_metrics, config, place)
                metrics = _metrics(
                    settings, model, curve, teacher_metrics, run_info, threads, place
                )
                atomic_write_json(run_dir / METRICS_FILE, metrics)
                bar.log(
                    f"epoch {epoch + 1}/{settings.epochs}: train loss {row['train_loss']:.4f}, "
                    f"test top-1 {100 * row['test_top1']:.2f}% top-5 {100 * row['test_top5']:.2f}%"
                    f", {row['train_images_per_s']:.0f} images/s"
                )

    metrics = _metrics(settings, model, curve, teacher_metrics, run_info, threads, place)
    if metrics["finished"]:
        _save_model(run_dir / MODEL_FILE, model, settings, train_arrays, run_info, metrics)
    atomic_write_json(run_dir / METRICS_FILE, metrics)
    return metrics


def _loaders(settings, train_arrays, test_arrays, mean, std, device):
    """The training loader (augmented, seeded) and the test loader, their data on `device`."""
    loader = BatchLoader(
        train_arrays,
        settings.batch_size,
        train=True,
        seed=settings.seed,
        mean=mean,
        std=std,
        device=device,
    )
    test_loader = BatchLoader(
        test_arrays, settings.eval_batch_size, train=False, mean=mean, std=std, device=device
    )
    return loader, test_loader


def _save_model(path: Path, model, settings, train_arrays, run_info, metrics) -> None:
    data = run_info["data"]
    save_checkpoint(
        path,
        model,
        model_name=settings.model,
        num_classes=data["num_classes"],
        input_size=data["input_size"],
        mean=data["mean"],
        std=data["std"],
        class_names=train_arrays.class_names,
        test_top1=metrics["top1"],
        test_top5=metrics["top5"],
        command=run_info.get("command", ""),
    )


def _with_data_info(run_info, train_arrays, test_arrays, mean, std) -> dict[str, Any]:
    """`run_info` with what the data is (recorded, and compared on resume)."""
    run_info = dict(run_info or {})
    run_info["data"] = {
        **run_info.get("data", {}),
        "train_images": len(train_arrays),
        "test_images": len(test_arrays),
        "num_classes": train_arrays.num_classes,
        "input_size": int(train_arrays.images.shape[1]),
        "mean": list(mean),
        "std": list(std),
    }
    return run_info


def _model_and_optimizer(settings: TrainSettings, data: dict[str, Any], device: torch.device):
    """The network (initialised on the CPU from the seeded RNG, then moved) and its optimiser."""
    model = build_model(
        settings.model,
        num_classes=data["num_classes"],
        input_size=data["input_size"],
        dropout=settings.dropout,
    ).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        nesterov=settings.nesterov,
    )
    return model, optimizer


@dataclass
class _Stepper:
    """One optimiser step of the network on a batch, with the teacher's targets if any."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    teacher: nn.Module | None
    place: Placement

    def step(self, settings: TrainSettings, x, y, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)`` of the batch, the weights updated (nothing read on the host)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        targets = None
        with self.place.autocast():
            if self.teacher is not None:
                targets = _teacher_targets(self.teacher, x, settings.loss).float()
            logits = self.model(x)
        loss = training_loss(
            settings.loss, logits.float(), targets, y, settings.temperature, settings.alpha
        )
        backward_and_step(loss, self.optimizer, self.scaler)
        return loss, logits


def _train_epoch(settings, stepper: _Stepper, loader, epoch, bar) -> dict[str, Any]:
    """One epoch; the host reads the losses at each tenth (progress, divergence) and the end."""
    stepper.model.train()
    loader.set_epoch(epoch)
    batches = len(loader)
    tally = EpochTally(batches, stepper.place.device)
    started = time.perf_counter()
    for batch_index, (x, y) in enumerate(loader):
        lr = scheduled_lr(settings, epoch * batches + batch_index, batches)
        loss, logits = stepper.step(settings, x, y, lr)
        tally.add(loss, len(y), (logits.argmax(1) == y).sum())
        status = None
        if (batch_index + 1) % max(1, batches // 10) == 0 or batch_index + 1 == batches:
            loss_sum, seen = _checked_loss_sum(tally, epoch)
            images_per_s = seen / (time.perf_counter() - started)
            status = f"loss {loss_sum / seen:.3f}, {images_per_s:.0f} images/s"
        bar.advance(f"epoch {epoch + 1}/{settings.epochs}", status, batch_index, batches)
    loss_sum, seen = _checked_loss_sum(tally, epoch)
    seconds = time.perf_counter() - started
    return {
        "epoch": epoch + 1,
        "lr_end": lr,
        "train_loss": loss_sum / seen,
        "train_top1": tally.correct_count() / seen,
        "train_seconds": seconds,
        "train_images_per_s": seen / seconds,
    }


def _checked_loss_sum(tally: EpochTally, epoch: int) -> tuple[float, int]:
    """``(sum of loss x batch size, images)`` over the batches so far, summed in batch order as
    Python floats; a `TrainingError` naming the first batch whose loss is not finite."""
    loss_sum = 0.0
    for batch_index, (loss, images) in enumerate(zip(tally.losses(), tally.sizes, strict=True)):
        if not math.isfinite(loss):
            raise TrainingError(
                f"training diverged (loss {loss}) at epoch {epoch + 1}, batch "
                f"{batch_index + 1}; lower --lr or raise --warmup-epochs"
            )
        loss_sum += loss * images
    return loss_sum, sum(tally.sizes)


def _metrics(settings, model, curve, teacher_metrics, run_info, threads, place) -> dict[str, Any]:
    last = curve[-1] if curve else {}
    speeds = [row["train_images_per_s"] for row in curve]
    return {
        "finished": len(curve) == settings.epochs,
        "model": settings.model,
        "params": sum(p.numel() for p in model.parameters()),
        "loss": settings.loss,
        "epochs_done": len(curve),
        "epochs": settings.epochs,
        "top1": last.get("test_top1"),
        "top5": last.get("test_top5"),
        "test_loss": last.get("test_loss"),
        "best_top1": max((row["test_top1"] for row in curve), default=None),
        "train_images_per_s": statistics.median(speeds) if speeds else None,
        "teacher": None
        if teacher_metrics is None
        else {"spec": run_info.get("teacher"), **teacher_metrics},
        "curve": curve,
        "threads": threads or len(os.sched_getaffinity(0)),
        "device": place.describe(),
        "settings": asdict(settings),
        **{k: v for k, v in run_info.items() if k not in ("teacher",)},
    }
