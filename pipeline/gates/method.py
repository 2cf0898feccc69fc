"""``search.method = "gates"``: Gu & Tresp's search as a `pipeline.methods.SearchMethod`.

Each generation runs ``gates.steps_per_generation`` joint steps (`GateEngine`) on mini-train
batches, then hands the network its closed gates leave (a ``resnetw:`` / ``densenet:`` /
``mnasw:`` string) to ``search.evaluate``, which stores, proxy-trains, times and rewards it like
any candidate; the generation's saved state is the engine's (gates, momentum, weights, weight
optimiser, step count and the cost trajectory), so ``--resume`` continues the optimisation. The
search ends at the first snapshot at or under ``gates.target_mmacs``, or at ``gates.max_steps``
with a "stopped at X, target Y" line, or when the search budget is spent. Winners, final
training (KD from the teacher), export, timing and the report are the shared stages.
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
    a DenseNet-BC name, a ``resnetw:`` / ``densenet:`` / ``mnasw:`` string, or a MnasNet-space
    arch string or baseline name (a ``[train]``-trained student; gated as its full-width
    ``mnasw:`` network, `models.widths_mnas`)."""
    from models.arch import Arch
    from models.baselines import resolve_arch
    from models.teacher_loading import CIFAR_RESNETS
    from models.widths_densenet import DenseNetW, named_densenet
    from models.widths_mnas import MnasW
    from models.widths_resnet import ResNetW

    if model_name in CIFAR_RESNETS:
        return ResNetW.full(int(model_name.removeprefix("resnet")), input_size, num_classes)
    network = named_densenet(model_name, input_size, num_classes)
    if network is None:
        try:
            network = resolve_arch(model_name, input_size, num_classes)
        except ValueError:
            network = None
    if isinstance(network, Arch):
        network = MnasW.from_arch(network)
    if isinstance(network, ResNetW | DenseNetW | MnasW):
        return network
    raise GateSearchError(
        f"the teacher is a {model_name[:60]!r}: Gu & Tresp gates need BN layers to gate in a "
        "CIFAR ResNet (resnet20 ...), a DenseNet-BC (densenet100_12 ...), a MnasNet-space "
        "network (an arch string or baseline name, as `pearl train` writes) or a resnetw: / "
        "densenet: / mnasw: network; train one with `pearl teacher train --model densenet40_12`"
    )


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
        self.target_ms = settings.target_ms
        if settings.needs_latency and not any(
            spec.lower().startswith(("host:", "adb:")) for spec in config.latency.backends
        ):
            raise GateSearchError(
                "gates.weighting = 'latency' / gates.target_ms time the teacher and thinned "
                "copies of it on this machine or a phone, but latency.backends = "
                f"{list(config.latency.backends)} has neither: add 'host:tflite' or 'adb:SERIAL'"
            )
        if self.target_macs and not self.target_macs < teacher_macs:
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
        self.seed = config.search.seed
        self.outcome = ""

    def restore(self, state: dict[str, Any]) -> None:
        self.engine.load_state_dict(state)

    def _use_latency(self, search: Search) -> None:
        """Fit the latency model (`pipeline.gates.latency`) on the search's latency chain, or
        read the one this search folder already has (a resumed search keeps its weights)."""
        from pipeline.gates.latency import stored_fit
        from pipeline.latency_chain import LatencyUnavailableError

        chain = search.setup.chain
        path = search.layout.gates / "latency_fit.json"
        if not path.is_file():
            search.log("gates: timing the teacher and each gate group thinned (latency fit)")
        try:
            fit = stored_fit(
                path, self.engine.helper, lambda net: chain.measure(net).latency_ms, search.log
            )
        except LatencyUnavailableError as error:
            raise GateSearchError(f"gates need latency, but {error}") from None
        except ValueError as error:
            raise GateSearchError(str(error)) from None
        if self.target_ms and not self.target_ms < fit.teacher_ms:
            raise GateSearchError(
                f"gates.target_ms = {self.target_ms} must be below the teacher's measured "
                f"{fit.teacher_ms:.3f} ms"
            )
        try:
            self.engine.use_latency(fit)
        except ValueError as error:
            raise GateSearchError(str(error)) from None

    def run(self, search: Search) -> None:
        if self.settings.needs_latency:
            self._use_latency(search)
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
        if self.target_macs:
            target = f"target {self.target_macs / 1e6:.2f} MMACs"
            where = f"{point.macs / 1e6:.2f} MMACs"
        else:
            target = f"target {self.target_ms:.3f} ms"
            where = f"{point.predicted_ms:.3f} ms predicted ({point.macs / 1e6:.2f} MMACs)"
        if self._reached(point):
            self.outcome = f"reached {where} at step {point.step}, {target}"
        else:
            self.outcome = f"stopped at {where} (step {point.step}), {target}"
        search.log(f"gates: {self.outcome}")
        from pipeline.gates.report import write_gate_report

        write_gate_report(
            search.layout.gates, self.engine, self.target_macs, self.outcome, self.target_ms
        )

    def _advance(self) -> bool:
        """Run gate steps until the next snapshot; True once the target is reached."""
        end = min(self.engine.steps + self.settings.steps_per_generation, self.settings.max_steps)
        # dropout (a MnasNet teacher keeps its classifier's) draws from torch's global generator:
        # seeded here from the search seed and the step, the gates come out the same whether the
        # search runs alone, inside `pearl run` or resumed, and the caller's generator is left as
        # it was
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed * 1_000_003 + self.engine.steps)
            self.engine.advance(self.loader, self.teacher, end, self._reached)
        return self._reached(self.engine.record())

    def _reached(self, point=None) -> bool:
        """Is the network left (now, or at trajectory `point`) at or under the target?"""
        if self.target_macs:
            macs = point.macs if point else self.engine.shrunk().cost().macs
            return macs <= self.target_macs
        keep = self.engine.keep()
        ms = point.predicted_ms if point else self.engine.latency.predict_ms(keep)
        return ms <= self.target_ms
