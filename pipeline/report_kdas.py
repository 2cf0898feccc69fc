"""The KDAS part of ``report.md`` (`pipeline.run_report`, for ``search.method = "kdas"``): the
accuracy-vs-memory scatter with the memory budget, and the chosen network drawn as its backbone
stages and add-on layers."""

from __future__ import annotations

from pathlib import Path

from models.addon_net import AddonNet, backbone
from models.layers import conv_output_size
from pipeline.config import SearchConfig
from pipeline.report_plots import plot_memory

OP_NAMES = {
    "id": "identity",
    "conv3": "conv 3x3, BN, ReLU",
    "conv5": "conv 5x5, BN, ReLU",
    "sep3": "depthwise-separable 3x3",
    "sep5": "depthwise-separable 5x5",
    "max3": "max-pool 3x3",
    "avg3": "avg-pool 3x3",
}


def draw_network(network: AddonNet) -> str:
    """The network as text: stem, each stage (its basic blocks, then its add-on layers with
    the earlier add-on layers each one adds), the classifier."""
    spec = backbone(network.backbone)
    size = network.input_size
    blocks = "pre-activation wide blocks" if spec.preact else "basic blocks"
    lines = [
        f"input {size}x{size}x3",
        f"stem        conv 3x3, {spec.stem_channels} ch" + ("" if spec.preact else ", BN, ReLU"),
    ]
    for s, (width, stride, layers) in enumerate(
        zip(spec.widths, spec.strides, network.stages, strict=True), start=1
    ):
        size = conv_output_size(size, stride)
        lines.append(
            f"stage {s}     {spec.blocks} {blocks}, {width} ch, {size}x{size} "
            f"(backbone {network.backbone})"
        )
        if not layers:
            lines.append("  (no add-on layers)")
        for j, layer in enumerate(layers, start=1):
            adds = [f"a{i}" for i, bit in enumerate(layer.skips, start=1) if bit]
            plus = f"   + output of {', '.join(adds)}" if adds else ""
            lines.append(f"  + a{j}      {OP_NAMES[layer.op]}{plus}")
    lines.append(
        "classifier  " + ("BN, ReLU, " if spec.preact else "") + "global average pool, "
        f"linear {spec.widths[-1]} -> {network.num_classes}"
    )
    return "\n".join(lines)


def kdas_section(config: SearchConfig, rows, winners, figures: Path) -> list[str]:
    """Markdown lines: the memory scatter (a figure in `figures`) and the chosen network."""
    from models.network import decode_network

    space = config.kdas.build(config.space)
    max_params, base = config.max_params(), space.backbone_params()
    chosen = [w for w in winners or [] if w.get("arch")]
    plot_memory(
        rows,
        max_params,
        base,
        {w["key"] for w in chosen},
        figures / "kdas_memory.png",
        title=f"{len(rows)} archs of {space.name}: proxy accuracy vs parameter memory",
        chance=1 / config.space.num_classes,
    )
    budget = (
        f"{config.kdas.memory_mb:g} MB"
        if config.kdas.memory_mb
        else f"{config.kdas.memory_factor:g} x the backbone"
    )
    lines = [
        "## KDAS",
        "",
        f"Backbone `{config.kdas.backbone}` ({base:,} parameters, {4 * base / 1e6:.2f} MB), "
        f"{config.kdas.layers_per_stage} add-on layer(s) per stage; memory budget M = {budget} "
        f"= {max_params:,} parameters ({4 * max_params / 1e6:.2f} MB); "
        f"{sum(r.params <= max_params for r in rows)} of {len(rows)} archs within it.",
        "",
        f"![KDAS: accuracy vs memory]({figures.name}/kdas_memory.png)",
        "",
    ]
    for w in chosen:
        network = decode_network(w["arch"])
        fits = "within" if w.get("within_memory", True) else "OVER"
        lines += [
            f"Chosen network at target {w['target']:g} (`{w['key']}`, proxy accuracy "
            f"{100 * w['accuracy']:.1f}%, {w['params']:,} parameters, {fits} the budget):",
            "",
            "```",
            draw_network(network),
            "```",
            "",
            f"`{w['arch']}`",
            "",
        ]
    return lines
