"""Pieces several `pearl` commands share: the ARCH_OR_BASELINE argument with its --input and
--classes options (turned into a network or a clear usage error), the run-folder options of
`pearl search` and `pearl run`, --device of every command that trains, and how pearl's own
warnings look on stderr."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import click

from models.baselines import resolve_arch
from models.damage import DamagedFileWarning
from models.network import Network


def _baseline_option(flag: str, dest: str, minimum: int, what: str):
    kind = click.IntRange(min=minimum)
    return click.option(flag, dest, type=kind, default=None, help=f"{what} for a baseline name")


INPUT_OPTION = _baseline_option("--input", "input_size", 8, "input size (default 224)")
CLASSES_OPTION = _baseline_option("--classes", "num_classes", 1, "class count (default 1000)")


def arch_or_fail(arch_text: str, input_size: int | None, num_classes: int | None) -> Network:
    """`resolve_arch`, with a bad name or string reported as a usage error on the argument."""
    try:
        return resolve_arch(arch_text, input_size, num_classes)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="ARCH_OR_BASELINE") from None


def run_folder_options(*, config_help: str, resume_help: str, set_example: str):
    """--config / --out / --resume / --set / --json / --no-progress, as `pearl search` and
    `pearl run` both take them."""

    def path(flag: str, dest: str, help_text: str, *, folder: bool):
        kind = click.Path(file_okay=not folder, dir_okay=folder, path_type=Path)
        return click.option(flag, dest, type=kind, help=help_text)

    options = [
        path("--config", "config_path", config_help, folder=False),
        path("--out", "out_dir", "run folder (default runs/<config name>-<time>)", folder=True),
        path("--resume", "resume_dir", resume_help, folder=True),
        click.option(
            "--set",
            "settings",
            multiple=True,
            metavar="SECTION.KEY=VALUE",
            help=f"override a config key, e.g. --set {set_example} (repeatable)",
        ),
        click.option("--json", "as_json", is_flag=True, help="print the result as JSON"),
        click.option(
            "--no-progress", is_flag=True, help="no progress bars (logs still go to stderr)"
        ),
    ]

    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def default_run_dir(config_path: Path) -> Path:
    """``runs/<config name>-<time>``: where a new run goes without --out."""
    return Path("runs") / f"{config_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def device_option(default: str | None, help_text: str):
    """--device auto|cpu|cuda|cuda:N|mps, checked for form here and for presence by
    `check_device` when the command runs."""

    def check_form(_context, _param, value):
        from pipeline.config import DEVICE_PATTERN

        if value is not None and DEVICE_PATTERN.fullmatch(value) is None:
            raise click.BadParameter(f"{value!r} is not one of auto, cpu, cuda, cuda:N, mps")
        return value

    return click.option(
        "--device",
        default=default,
        show_default=default is not None,
        metavar="auto|cpu|cuda|cuda:N|mps",
        callback=check_form,
        help=help_text,
    )


def check_device(spec: str) -> None:
    """Stop the command at once, with what is present and the fix, when this machine cannot
    give `spec` (before any data is loaded or anything is trained)."""
    from pipeline.device import DeviceError, resolve_device

    try:
        resolve_device(spec)
    except DeviceError as error:
        raise click.ClickException(str(error)) from None


_python_format_warning = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    if issubclass(category, DamagedFileWarning):
        return f"warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


def plain_warnings() -> None:
    """Show pearl's own warnings (a damaged cache moved aside) as one ``warning: ...`` line on
    stderr, not in Python's ``file:line: Category: ...`` form with a source line."""
    warnings.formatwarning = _format_warning
