"""Which layer of an architecture each profiled operator belongs to (`pearl bench --op-profile`).

A pearl export names every op's output tensor after the module path that made it
(``.../models.builder.ConvBN_stem/...``, ``.../models.builder.Layer_3/...``, the head's
``ConvBN_head``, the pooling and the classifier).  benchmark_model prints that name, with the
op's node index, for every profiled node (`android_runner.op_profile`).  The first ``;``-joined
part of a name is the op's own output (later parts are fused neighbours), so:

* ``ConvBN_stem`` -> the stem; ``Layer_N`` -> layer N (``models.layers.expand_layers`` order);
* any other op is the head when a layer op ran before it, else the stem (the input padding).

Pure: the rows come from a parsed profile, the layer names from `latency_tables.keys.arch_keys`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from android_runner.op_profile import OpProfile
from latency_tables.keys import arch_keys
from models.arch import Arch

_LAYER_RE = re.compile(r"\.Layer_(?P<index>\d+)(?:[/;]|$)")
_STEM_RE = re.compile(r"\.ConvBN_stem(?:[/;]|$)")


@dataclass(frozen=True)
class LayerTime:
    """One row of the per-layer table: `part` is ``stem``, ``layer N`` or ``head``; `key` the
    latency-table key of that layer (what a table row of it is called)."""

    part: str
    key: str
    ops: int
    op_types: tuple[str, ...]
    avg_ms: float
    share: float


def _own_name(name: str) -> str:
    return name.strip().lstrip("[").split(";")[0]


def op_parts(names: Sequence[str]) -> list[str]:
    """``stem`` / ``layer N`` / ``head`` for each op name, in run order.  ValueError when no
    name carries pearl's module path (not a pearl export, or a delegate hid the ops)."""
    parts: list[str] = []
    seen_layer = False
    for name in names:
        own = _own_name(name)
        if match := _LAYER_RE.search(own):
            parts.append(f"layer {int(match['index'])}")
            seen_layer = True
        elif _STEM_RE.search(own):
            parts.append("stem")
        else:
            parts.append("head" if seen_layer else "stem")
    if not seen_layer:
        raise ValueError(
            "no profiled op names a pearl layer (models.builder.Layer_N): the file is not a "
            "pearl export, or a delegate ran the ops (profile with --use_xnnpack=false)"
        )
    return parts


def layer_times(profile: OpProfile, arch: Arch) -> list[LayerTime]:
    """The profile summed per part of `arch` (stem, each layer, head), in network order."""
    keys = arch_keys(arch)
    parts = op_parts([row.name for row in profile.run_order])
    order = ["stem", *(f"layer {i}" for i in range(len(keys) - 2)), "head"]
    unknown = sorted(set(parts) - set(order))
    if unknown:
        raise ValueError(
            f"the profile names {', '.join(unknown)}, which {arch.encode()} does not have: "
            "the profiled file is not this architecture"
        )
    total = profile.total_avg_ms or 1.0
    rows = []
    for part, key in zip(order, keys, strict=True):
        mine = [row for row, p in zip(profile.run_order, parts, strict=True) if p == part]
        avg = sum(row.avg_ms for row in mine)
        types = tuple(dict.fromkeys(row.node_type for row in mine))
        rows.append(LayerTime(part, key.encode(), len(mine), types, avg, avg / total))
    return rows


def format_layer_table(rows: Sequence[LayerTime]) -> str:
    """The per-layer table `pearl bench --op-profile` prints."""
    lines = [f"{'part':<9} {'avg ms':>8} {'share':>6} {'ops':>4}  {'table key':<48} op types"]
    for row in rows:
        lines.append(
            f"{row.part:<9} {row.avg_ms:>8.3f} {row.share:>6.1%} {row.ops:>4}  {row.key:<48} "
            + ", ".join(row.op_types)
        )
    return "\n".join(lines)
