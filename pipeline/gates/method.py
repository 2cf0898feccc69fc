"""``search.method = "gates"``: Gu & Tresp's search as a `pipeline.methods.SearchMethod`.

Each generation runs ``gates.steps_per_generation`` joint steps (`GateEngine`) on mini-train
batches, then hands the network its closed gates leave (a ``resnetw:`` / ``densenet:`` string)
to ``search.evaluate``, which stores, proxy-trains, times and rewards it like any candidate; the
generation's saved state is the engine's (gates, momentum, weights, weight optimiser, step count
and the cost trajectory), so ``--resume`` continues the optimisation.  The search ends at the
first snapshot at or under ``gates.target_mmacs``, or at ``gates.max_steps`` with a "stopped at
X, target Y" line, or when the search budget is spent.  Winners, final training (KD from the
teacher), export, timing and the report are the shared stages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from pipeline.gates.engine import GateEngine

if TYPE_CHECKING:
    from pipeline.config import SearchConfig
    from pipeline.search import Search


class GateSearchError(ValueError):
    """The gate search cannot start; the message says why and what to do."""


def width_network(model_name: str, input_size: int, num_classes: int):
    """The width-family network a checkpoint's ``model`` names: a CIFAR ResNet (``resnet20``),
    a DenseNet-BC name or a ``resnetw:`` / ``densenet:`` string."""
    from models.network import decode_network
    from models.teacher_loading import CIFAR_RESNETS
    from models.widths_densenet import named_densenet
    from models.widths_resnet import ResNetW

    if model_name in CIFAR_RESNETS:
        return ResNetW.full(int(model_name.removeprefix("resnet")), input_size, num_classes)
    network = named_densenet(model_name, input_size, num_classes)
    if network is None and model_name.startswith(("resnetw:", "densenet:")):
        network = decode_network(model_name)
    if network is None:
        raise GateSearchError(
            f"the teacher is a {model_name[:60]!r}: Gu & Tresp gates need BN layers to gate in a "
            "CIFAR ResNet (resnet20 ...), a DenseNet-BC (densenet100_12 ...) or a resnetw: / "
            "densenet: network; train one with `pearl teacher train --model densenet40_12`"
        )
    return network


class GateSearch:
    def __init__(self, config: SearchConfig, space: Any) -> None:
        from models.teacher_loading import TeacherError, load_checkpoint, resolve_checkpoint_path
        from pipeline.device import placement
        from pipeline.search_setup import load_splits

        settings = config.gates
        spec = config.teacher.spec
        if not spec or "," in spec or spec.startswith("torchvision:"):
            raise GateSearchError(
                f"search.method = 'gates' needs one Pearl teacher checkpoint in teacher.spec "
                f"(a path or builtin:NAME), got {spec!r}"
            )
        try:
            teacher, payload = load_checkpoint(resolve_checkpoint_path(spec))
        except TeacherError as error:
            raise GateSearchError(str(error)) from None
        network = width_network(payload["model"], payload["input_size"], payload["num_classes"])
        teacher_macs = network.cost().macs
        self.target_macs = int(settings.target_mmacs * 1e6)
        if not 0 < self.target_macs < teacher_macs:
            raise GateSearchError(
                f"gates.target_mmacs = {settings.target_mmacs} must lie between 0 and the "
                f"teacher's {teacher_macs / 1e6:.2f} MMACs ({network.encode()[:40]}...)"
            )
        self.device = placement(config.compute).device
        self.teacher = teacher.to(self.device).eval()
        self.engine = GateEngine(network, teacher.state_dict(), settings, self.device)
        mini_train, _ = load_splits(config)
        from pipeline.batches import BatchLoader

        self.loader = BatchLoader(
            mini_train,
            min(settings.batch_size, len(mini_train)),
            train=True,
            seed=config.search.seed,
            mean=payload.get("mean") or (0.4914, 0.4822, 0.4465),
            std=payload.get("std") or (0.2470, 0.2435, 0.2616),
            device=self.device,
        )
        self.settings = settings
        self.outcome = ""

    def restore(self, state: dict[str, Any]) -> None:
        self.engine.load_state_dict(state)

    def run(self, search: Search) -> None:
        while search.next_batch_size():
            reached = self._advance()
            network = self.engine.shrunk()
            rows = search.evaluate([network], [self.engine.kept_per_group()])
            point = self.engine.trajectory[-1]
            stats = {"step": point.step, "macs": point.macs, "open_gates": point.open_gates}
            rewards = [row.reward if row.reward is not None else 0.0 for row in rows]
            search.finish_generation(self.engine.state_dict(), rewards, stats)
            if reached or self.engine.steps >= self.settings.max_steps:
                break
        point = self.engine.trajectory[-1]
        target = f"target {self.target_macs / 1e6:.2f} MMACs"
        if point.macs <= self.target_macs:
            self.outcome = f"reached {point.macs / 1e6:.2f} MMACs at step {point.step}, {target}"
        else:
            self.outcome = f"stopped at {point.macs / 1e6:.2f} MMACs (step {point.step}), {target}"
        search.log(f"gates: {self.outcome}")
        from pipeline.gates.report import write_gate_report

        write_gate_report(search.layout.gates, self.engine, self.target_macs, self.outcome)

    def _advance(self) -> bool:
        """Run gate steps until the next snapshot; True once the target is reached."""
        end = min(self.engine.steps + self.settings.steps_per_generation, self.settings.max_steps)
        self.loader.set_epoch(self.engine.steps // max(1, len(self.loader)))
        while self.engine.steps < end:
            for images, labels in self.loader:
                with torch.no_grad():
                    teacher_logits = self.teacher(images)
                self.engine.step(images, labels, teacher_logits)
                if self.engine.steps >= end or self._cost() <= self.target_macs:
                    break
            if self._cost() <= self.target_macs:
                break
        return self.engine.record().macs <= self.target_macs

    def _cost(self) -> int:
        return self.engine.shrunk().cost().macs
