"""Pieces several `pearl` commands share: the ARCH_OR_BASELINE argument with its --input and
--classes options, and turning them into an `Arch` or a clear usage error."""

from __future__ import annotations

import click

from models.arch import Arch
from models.baselines import resolve_arch

INPUT_OPTION = click.option(
    "--input",
    "input_size",
    type=click.IntRange(min=8),
    default=None,
    help="input size for a baseline name (default 224)",
)
CLASSES_OPTION = click.option(
    "--classes",
    "num_classes",
    type=click.IntRange(min=1),
    default=None,
    help="class count for a baseline name (default 1000)",
)


def arch_or_fail(arch_text: str, input_size: int | None, num_classes: int | None) -> Arch:
    """`resolve_arch`, with a bad name or string reported as a usage error on the argument."""
    try:
        return resolve_arch(arch_text, input_size, num_classes)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="ARCH_OR_BASELINE") from None
