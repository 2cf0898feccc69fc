"""How a network is trained to convergence, as one settings class (torch-free: configs import it).

`TrainRecipe` holds the hyper-parameters and their checks.  Two things are made of it:

* `TrainSettings`: one training run (`pipeline.training.train`, `pearl train`, `pearl teacher
  train`): the recipe plus the model and the loss;
* `pipeline.run_config.TrainStageConfig`: the ``[train]`` section of `pearl run`: the recipe
  plus what to train (which data, which losses, which baseline).  The stage hands the recipe
  to each run with `TrainSettings.from_recipe` - no field is copied by hand.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline.registry import LOSSES

SCHEDULES = ("cosine", "step")


class TrainingError(ValueError):
    """Bad settings, a run folder that cannot be resumed, or a teacher that does not fit."""


@dataclass(frozen=True)
class TrainRecipe:
    """Defaults follow the CIFAR literature: SGD, Nesterov momentum 0.9, lr 0.1 at batch 128,
    weight decay 5e-4, one warm-up epoch then cosine decay; step decay divides the rate by 10 at
    50% and 75% of the epochs (He et al. 2016).  KD defaults are AKD's (T = 1, alpha = 0.9)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)  # step schedule: fractions of all epochs
    gamma: float = 0.1  # step schedule: factor at each milestone
    temperature: float = 1.0
    alpha: float = 0.9
    dropout: float = 0.2  # classifier dropout of Pearl students (CIFAR ResNets have none)
    seed: int = 0
    eval_batch_size: int = 500

    def problems(self) -> list[tuple[str, str]]:
        """``(field, what is wrong)`` for every bad value; empty when the recipe is usable."""
        found = []

        def need(ok: bool, name: str, message: str) -> None:
            if not ok:
                found.append((name, message))

        need(self.epochs >= 1, "epochs", f"epochs must be >= 1, got {self.epochs}")
        need(self.batch_size >= 1 and self.eval_batch_size >= 1, "batch_size", "must be >= 1")
        need(
            0 <= self.warmup_epochs <= self.epochs,
            "warmup_epochs",
            f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}",
        )
        need(
            self.schedule in SCHEDULES,
            "schedule",
            f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule}",
        )
        need(
            self.lr > 0 and self.weight_decay >= 0 and 0 <= self.momentum < 1,
            "lr",
            "need lr > 0, weight_decay >= 0 and 0 <= momentum < 1",
        )
        need(
            not (self.nesterov and self.momentum == 0),
            "nesterov",
            "Nesterov momentum needs momentum > 0",
        )
        need(
            self.temperature > 0 and 0 <= self.alpha <= 1,
            "temperature",
            "need temperature > 0 and 0 <= alpha <= 1",
        )
        need(
            all(0 < m < 1 for m in self.milestones) and 0 < self.gamma <= 1,
            "milestones",
            "milestones must be fractions in (0, 1) and gamma in (0, 1]",
        )
        need(self.seed >= 0, "seed", f"seed must be >= 0, got {self.seed}")
        return found

    def recipe(self) -> TrainRecipe:
        """The hyper-parameters alone (for a subclass that adds more)."""
        names = [f.name for f in dataclasses.fields(TrainRecipe)]
        return TrainRecipe(**{name: getattr(self, name) for name in names})


@dataclass(frozen=True)
class TrainSettings(TrainRecipe):
    """One training run: a recipe, the model (CIFAR ResNet name, baseline name or arch string)
    and the loss (`pipeline.registry.LOSSES`)."""

    model: str = ""
    loss: str = "ce"

    def __post_init__(self) -> None:
        problems = [message for _, message in self.problems()]
        if not self.model:
            problems.append("model must be a CIFAR ResNet name, a baseline name or an arch string")
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {', '.join(LOSSES.names)}, got {self.loss!r}")
        if problems:
            raise TrainingError("; ".join(problems))

    @classmethod
    def from_recipe(cls, recipe: TrainRecipe, *, model: str, loss: str) -> TrainSettings:
        return cls(**dataclasses.asdict(recipe.recipe()), model=model, loss=loss)
