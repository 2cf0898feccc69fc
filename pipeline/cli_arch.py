"""`pearl arch ...`: sample and describe architectures."""

from __future__ import annotations

import json
import random

import click

from models.costs import arch_cost, layer_cost
from models.layers import expand_layers
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
    """Show an architecture's canonical string, key, MACs, parameters and layers."""
    arch = arch_or_fail(arch_text, input_size, num_classes)
    cost = arch_cost(arch)
    layers = expand_layers(arch)
    if as_json:
        summary = {
            "arch": arch.encode(),
            "key": arch.key(),
            "macs": cost.macs,
            "params": cost.params,
            "input_size": arch.input_size,
            "num_classes": arch.num_classes,
            "layers": len(layers),
        }
        click.echo(json.dumps(summary))
        return
    click.echo(f"arch    {arch.encode()}")
    click.echo(f"key     {arch.key()}")
    click.echo(f"input   {arch.input_size}x{arch.input_size}x3, {arch.num_classes} classes")
    click.echo(f"MACs    {cost.macs / 1e6:.2f} M")
    click.echo(f"params  {cost.params / 1e6:.3f} M")
    click.echo(
        f"{'layer':>5} {'op':>5} {'k':>2} {'s':>2} {'se':>5} {'skip':>6} "
        f"{'in':>5} {'out':>5} {'res':>4} {'MMACs':>8}"
    )
    for index, layer in enumerate(layers, start=1):
        op = f"mb{layer.expand}" if layer.op == "mb" else layer.op
        click.echo(
            f"{index:>5} {op:>5} {layer.kernel:>2} {layer.stride:>2} {layer.se_ratio:>5.2f} "
            f"{layer.skip:>6} {layer.in_channels:>5} {layer.out_channels:>5} "
            f"{layer.input_size:>4} {layer_cost(layer).macs / 1e6:>8.2f}"
        )
