"""KDAS evaluation "shared" (``kdas.evaluation = "shared"``): ENAS-style weight sharing, as the
paper searched.  One network (`models.addon_builder.SharedAddonModule`) holds the backbone and
every add-on op; per generation:

1. the shared weights train for one pass over mini-train, each batch through one of the
   generation's proposed networks in turn, with the configured loss (oracle KD by default;
   teacher logits from the search's cache, pass p reading the cached epoch p mod proxy.epochs),
   SGD with Nesterov momentum at the constant ``proxy.lr``;
2. each proposed network is scored on one mini-val batch (``proxy.batch_size`` images, the next
   batch each generation) with the shared weights: its accuracy is the controller's reward.

`SharedWeightExecutor` does both behind the `pipeline.executor.Executor` interface, so the
shared loop stores, times and rewards the candidates as always; `SharedWeightSearch` saves the
shared weights and their optimiser with each generation's controller state, so ``--resume``
continues exactly where the last finished generation left off (a kill in the middle of a
generation's scoring trains that pass again on the networks not yet stored).  An arch
proposed again in a later generation reuses its first score (the shared loop's rule), although
the shared weights have moved on since.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from models.addon_builder import SharedAddonModule
from models.network import decode_network
from pipeline.batches import BatchLoader
from pipeline.executor import ProxyTask, TrainJob
from pipeline.methods import ControllerSearch
from pipeline.proxy import ProxyResult, proxy_loss


class SharedWeightExecutor:
    """Scores a generation's networks with shared weights (module docstring), in this
    process on the CPU."""

    trains_beside_driver = False

    def __init__(self, task: ProxyTask, space) -> None:
        self.task = task
        settings = task.settings
        with torch.random.fork_rng():
            torch.manual_seed(task.seed)
            self.model = SharedAddonModule(
                space.backbone, space.num_classes, space.layers_per_stage
            ).to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=settings.lr,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
            nesterov=True,
        )
        self.passes = 0  # shared-weight passes over mini-train so far

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "passes": self.passes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.passes = int(state["passes"])

    def train(self, jobs: Sequence[TrainJob]) -> Iterator[tuple[TrainJob, Any]]:
        if not jobs:
            return
        started = time.perf_counter()
        torch.set_num_threads(self.task.threads or os.cpu_count() or 1)
        networks = [decode_network(job.arch) for job in jobs]
        with torch.random.fork_rng():
            torch.manual_seed(self.task.seed + self.passes)
            loss = self._train_pass(networks)
            images, labels = self._val_batch()
            self.model.train()  # batch statistics: the running ones mix every network trained
            with torch.no_grad():
                correct = [
                    (self.model(images, n).argmax(1) == labels).sum().item() for n in networks
                ]
        seconds = (time.perf_counter() - started) / len(jobs)
        for job, right in zip(jobs, correct, strict=True):
            yield job, ProxyResult(right / len(labels), seconds, (loss,), 1)

    def _train_pass(self, networks) -> float:
        settings, teacher = self.task.settings, self.task.teacher
        epoch = self.passes % settings.epochs  # the teacher cache holds epochs 0..epochs-1
        loader = BatchLoader(
            self.task.mini_train, settings.batch_size, train=True, seed=self.task.seed
        )
        loader.set_epoch(epoch)
        self.model.train()
        total = 0.0
        for index, (x, y) in enumerate(loader):
            logits = self.model(x, networks[index % len(networks)])
            loss = proxy_loss(settings, logits, x, y, teacher, epoch, index)
            self.optimizer.zero_grad(set_to_none=True)  # unused ops: no grad, no decay
            loss.backward()
            self.optimizer.step()
            total += loss.item()
        self.passes += 1
        return total / max(1, len(loader))

    def _val_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mini-val batch of this generation (the next one each pass, cycling)."""
        loader = BatchLoader(self.task.mini_val, self.task.settings.batch_size, train=False)
        wanted = (self.passes - 1) % len(loader)
        for index, batch in enumerate(loader):
            if index == wanted:
                return batch
        raise RuntimeError("mini-val is empty")

    def close(self) -> None:
        pass


class SharedWeightSearch(ControllerSearch):
    """`ControllerSearch` whose saved state also holds the shared weights (the executor's)."""

    def __init__(self, config, space) -> None:
        super().__init__(config, space)
        self.shared_state: dict[str, Any] | None = None

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state["controller"])
        self.shared_state = state["shared"]

    def begin(self, search) -> None:
        if self.shared_state is not None:
            search.setup.executor.load_state_dict(self.shared_state)

    def state(self, search) -> dict[str, Any]:
        return {
            "controller": self.controller.state_dict(),
            "shared": search.setup.executor.state_dict(),
        }
