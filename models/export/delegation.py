"""Which ops of a .tflite file XNNPACK takes, and which fall back to LiteRT's reference kernels.

Source of truth: the XNNPACK delegate itself, not a hand-kept table.  ai-edge-litert's
Interpreter applies XNNPACK by default; we build the interpreter twice:

1. with default delegates off (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``): the file's own ops and
   their input types;
2. with XNNPACK on and delegate node fusion off (``experimental_disable_delegate_node_fusion``):
   every op the delegate accepts is replaced by its own ``DELEGATE`` node whose outputs are that
   op's outputs, so an op whose outputs no DELEGATE node produces was refused.

The first build is also allocated on its own: a file whose ops do not prepare on the reference
kernels is reported (``reference_kernels_error``), since it runs only where XNNPACK takes them.
A third, normal build counts the delegate partitions: more than one means the graph hops between
XNNPACK and the CPU kernels, which costs copies on top of the slow kernels.  Op lists come from
the Interpreter's ``_get_ops_details()`` (documented there as experimental).

The decisions are those of the XNNPACK delegate inside the installed ai-edge-litert (host build).
Its support checks (op, types, parameters) are the same code as in the Android
``benchmark_model`` of the same LiteRT release, but an older LiteRT on a phone may accept fewer
ops; the report names the runtime it came from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib import metadata

from models.export.tflite import interpreter


@dataclass(frozen=True)
class Delegation:
    runtime: str
    ops: dict[str, int]  # "CONV_2D[int8]" -> count, keyed by op and its first input's type
    not_delegated: dict[str, int] = field(default_factory=dict)
    nodes: int = 0
    delegated_nodes: int = 0
    partitions: int = 0  # XNNPACK partitions in a normal (fused) build
    transposes: int = 0
    # Set when the file does not even prepare on LiteRT's reference kernels (e.g. an int8
    # requantisation multiplier out of range): it then runs only where XNNPACK takes those ops.
    reference_kernels_error: str | None = None

    @property
    def fully_delegated(self) -> bool:
        return not self.not_delegated

    def to_dict(self) -> dict:
        return {**asdict(self), "fully_delegated": self.fully_delegated}

    def summary(self) -> str:
        text = f"{self.delegated_nodes}/{self.nodes} ops in XNNPACK, {self.partitions} partition(s)"
        if self.not_delegated:
            slow = ", ".join(f"{op} x{n}" for op, n in self.not_delegated.items())
            text += f"; NOT delegated (run on reference CPU kernels): {slow}"
        return text


def _op_key(detail: dict) -> str:
    types = detail["operand_types"]
    return f"{detail['op_name']}[{types[0].__name__ if types else '-'}]"


def report(model: bytes) -> Delegation:
    """The delegation report of a .tflite file (see the module docstring for the method)."""
    from ai_edge_litert.interpreter import OpResolverType

    plain = interpreter(
        model,
        num_threads=1,
        allocate=False,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    own_ops = list(plain._get_ops_details())
    reference_error = None
    try:
        plain.allocate_tensors()
    except RuntimeError as error:
        reference_error = " ".join(str(error).split())
    split = interpreter(model, num_threads=1, experimental_disable_delegate_node_fusion=True)
    details = split._get_ops_details()
    delegated_outputs = {
        int(t) for d in details if d["op_name"] == "DELEGATE" for t in d["outputs"]
    }
    originals = [d for d in details if d["op_name"] != "DELEGATE"]
    refused = Counter(
        _op_key(d) for d in originals if not {int(t) for t in d["outputs"]} <= delegated_outputs
    )
    fused = interpreter(model, num_threads=1)
    partitions = sum(d["op_name"] == "DELEGATE" for d in fused._get_ops_details())
    ops = Counter(_op_key(d) for d in own_ops)
    return Delegation(
        runtime=f"ai-edge-litert {metadata.version('ai-edge-litert')} XNNPACK delegate (host)",
        ops=dict(sorted(ops.items())),
        not_delegated=dict(sorted(refused.items())),
        nodes=len(own_ops),
        delegated_nodes=len(own_ops) - sum(refused.values()),
        partitions=partitions,
        transposes=sum(n for op, n in ops.items() if op.startswith("TRANSPOSE[")),
        reference_kernels_error=reference_error,
    )
