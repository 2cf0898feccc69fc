"""`pearl arch ...`: sample and describe architectures."""

from __future__ import annotations

import json
import random

import click

from models.arch import Arch
from models.costs import (
    classifier_cost,
    head_conv_cost,
    layer_cost,
    stem_cost,
)
from models.layers import conv_output_size, expand_layers, last_block_output
from models.space import default_space_name, get_space
from pipeline.cli_common import CLASSES_OPTION, INPUT_OPTION, arch_or_fail

_SPACE_HELP = "search space: mnas-cifar or mnas-imagenet (default: mnas-cifar for inputs <= 64 px)"


@click.group("arch")
def arch_group() -> None:
    """Architecture strings: sample them from a search space, describe them."""


@arch_group.command("sample")
@click.option("--n", "count", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--input", "input_size", type=click.IntRange(min=8), default=32, show_default=True)
@click.option("--classes", "num_classes", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--space", "space_name", default=None, help=_SPACE_HELP)
def sample_command(count, seed, input_size, num_classes, space_name) -> None:
    """Print N random architecture strings, one per line."""
    try:
        space = get_space(space_name or default_space_name(input_size), input_size, num_classes)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--space") from None
    rng = random.Random(seed)
    for _ in range(count):
        click.echo(space.sample(rng).encode())


@arch_group.command("describe")
@click.argument("arch_text", metavar="ARCH_OR_BASELINE")
@INPUT_OPTION
@CLASSES_OPTION
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def describe_command(arch_text, input_size, num_classes, as_json) -> None:
    """Show an architecture's canonical string, key, MACs, parameters and a table of its rows
    (stem, every layer, head conv, classifier) that add up to the totals."""
    arch = arch_or_fail(arch_text, input_size, num_classes)
    cost = arch.cost()
    # MnasNet strings: every layer; another family: its own rows (same keys) where it has them
    rows = describe_rows(arch) if isinstance(arch, Arch) else getattr(arch, "rows", list)()
    if as_json:
        summary = {
            "arch": arch.encode(),
            "key": arch.key(),
            "macs": cost.macs,
            "params": cost.params,
            "input_size": arch.input_size,
            "num_classes": arch.num_classes,
            "layers": sum(1 for row in rows if row["block"] is not None),
            "rows": rows,
        }
        click.echo(json.dumps(summary))
        return
    click.echo(f"arch    {arch.encode()}")
    click.echo(f"key     {arch.key()}")
    click.echo(f"input   {arch.input_size}x{arch.input_size}x3, {arch.num_classes} classes")
    click.echo(f"MACs    {cost.macs / 1e6:.2f} M")
    click.echo(f"params  {cost.params / 1e6:.3f} M")
    click.echo(_ROW_FORMAT.format(*_COLUMNS))
    for row in rows:
        click.echo(_ROW_FORMAT.format(*_cells(row)))
    click.echo(_ROW_FORMAT.format("total", *[""] * 9, *_amounts(cost.macs, cost.params)))
    asked = {row["skip_asked"] for row in rows if row["skip"] != row["skip_asked"]}
    if asked:
        click.echo(
            f"* the block asks for {' / '.join(sorted(asked))}, but this layer changes its "
            "stride or channel count, so it has no skip"
        )


# row: stem, BLOCK.LAYER (1-based), head, classifier; se%: SE width in % of the layer's input
# channels (as in the string); ch: channels; px: side of the feature map entering / leaving
_COLUMNS = ("row", "op", "k", "s", "se%", "skip", "ch in", "ch out", "px in", "px out")
_COLUMNS += ("MMACs", "kparams")
_ROW_FORMAT = "{:>6} {:>7} {:>2} {:>2} {:>3} {:>7} {:>6} {:>6} {:>5} {:>6} {:>8} {:>8}"


def _amounts(macs: int, params: int) -> tuple[str, str]:
    return f"{macs / 1e6:.2f}", f"{params / 1e3:.1f}"


def _cells(row: dict) -> tuple:
    def text(value):
        return "-" if value is None else value

    skip = row["skip"]
    if skip is not None and skip != row["skip_asked"]:
        skip += "*"
    return (
        row["row"],
        row["op"],
        text(row["kernel"]),
        text(row["stride"]),
        text(row["se_percent"]),
        text(skip),
        row["in_channels"],
        row["out_channels"],
        row["input_px"],
        row["output_px"],
        *_amounts(row["macs"], row["params"]),
    )


def describe_rows(arch: Arch) -> list[dict]:
    """Every part of `arch` that costs something, in order, with what was built (the skip
    actually applied, `skip_asked` the block's) and its MACs and parameters: the rows add up
    to `arch_cost(arch)`."""

    def row(name, block, op, kernel, stride, cin, cout, size_in, size_out, cost, **extra):
        fields = {"se_percent": None, "skip": None, "skip_asked": None, **extra}
        return {
            "row": name,
            "block": block,
            "op": op,
            "kernel": kernel,
            "stride": stride,
            **fields,
            "in_channels": cin,
            "out_channels": cout,
            "input_px": size_in,
            "output_px": size_out,
            "macs": cost.macs,
            "params": cost.params,
        }

    stem = arch.stem
    stem_px = conv_output_size(arch.input_size, stem.stride)
    rows = [
        row("stem", None, "conv", stem.kernel, stem.stride, 3, stem.out_channels,
            arch.input_size, stem_px, stem_cost(arch))
    ]  # fmt: skip
    layers = iter(expand_layers(arch))
    for block_index, block in enumerate(arch.blocks, start=1):
        for layer_index in range(1, block.layers + 1):
            layer = next(layers)
            op = f"mb{layer.expand}" if layer.op == "mb" else layer.op
            rows.append(
                row(f"{block_index}.{layer_index}", block_index, op, layer.kernel, layer.stride,
                    layer.in_channels, layer.out_channels, layer.input_size, layer.output_size,
                    layer_cost(layer), se_percent=round(layer.se_ratio * 100), skip=layer.skip,
                    skip_asked=block.skip)
            )  # fmt: skip
    channels, px = last_block_output(arch)
    if arch.head.channels:
        rows.append(
            row("head", None, "conv", 1, 1, channels, arch.head.channels, px, px,
                head_conv_cost(arch))
        )  # fmt: skip
        channels = arch.head.channels
    rows.append(
        row("fc", None, "pool+fc", None, None, channels, arch.num_classes, px, 1,
            classifier_cost(arch))
    )  # fmt: skip
    return rows
