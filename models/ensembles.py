"""Ensemble spec files: N Pearl checkpoints named as one teacher (KDAS's ensemble of
independently trained copies of the backbone).

``ensemble.json`` (written by `write_ensemble`, e.g. by ``pearl teacher train --seeds``)::

    format "pearl-ensemble", version 1,
    members      checkpoint paths, relative to the file's folder (absolute ones stay absolute),
    models       each member's network name (informative),
    num_classes, class_names, input_size, mean, std   what every member was trained for,
    command      what wrote it

It is accepted wherever a teacher spec is (`member_specs` expands it; it may also be one part of
a comma-separated spec).  Members must agree on class count, class names, input size and input
normalisation: a member that does not (when the file is written, or later because a member file
was replaced) is an error naming it and the fix.  A comma-separated list of checkpoints instead
lets members of other normalisations in (each sees its own, `teacher_loading.Renormalize`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.files import atomic_write_json
from models.teacher_loading import TeacherError, read_checkpoint

ENSEMBLE_FORMAT = "pearl-ensemble"
ENSEMBLE_VERSION = 1
SPEC_FILE = "ensemble.json"  # the name `pearl teacher train --seeds` gives it in its folder
ENSEMBLE_SUFFIX = ".json"
_AGREED = ("num_classes", "class_names", "input_size", "mean", "std")
_NORMALISATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class EnsembleFile:
    """A read and checked ensemble spec file; `members` are absolute checkpoint paths."""

    path: Path
    members: tuple[Path, ...]
    num_classes: int
    class_names: tuple[str, ...]
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def is_ensemble_file(part: str) -> bool:
    """Does this part of a teacher spec name an ensemble spec file (``*.json``)?"""
    return part.strip().lower().endswith(ENSEMBLE_SUFFIX)


def member_specs(spec: str) -> list[str]:
    """The single-teacher specs a teacher spec stands for: its comma-separated parts, with each
    ensemble file replaced by its members' absolute checkpoint paths (checked: they exist and
    agree with the file)."""
    members: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if part and is_ensemble_file(part):
            members += [str(path) for path in read_ensemble(part).members]
        else:
            members.append(part)
    return members


def agreement_problem(
    reference: dict[str, Any], header: dict[str, Any], *, normalisation: bool = True
) -> str | None:
    """What `header` (a checkpoint dict or an ensemble file's record) disagrees with in
    `reference`, in words, or None.  Pure; class names count only when both have them."""
    problems = []
    if header["num_classes"] != reference["num_classes"]:
        problems.append(f"{header['num_classes']} classes, not {reference['num_classes']}")
    names, reference_names = list(header.get("class_names") or []), reference.get("class_names")
    if names and reference_names and names != list(reference_names):
        problems.append(f"class names {names} instead of {list(reference_names)}")
    if header["input_size"] != reference["input_size"]:
        problems.append(f"{header['input_size']} px input, not {reference['input_size']} px")
    if normalisation and not all(
        _close(header.get(key), reference.get(key)) for key in ("mean", "std")
    ):
        problems.append(
            f"input normalisation mean {header.get('mean')} std {header.get('std')} instead of "
            f"mean {reference.get('mean')} std {reference.get('std')}"
        )
    return "; ".join(problems) or None


def _close(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    if not a or not b:
        return not a and not b
    return len(a) == len(b) and all(
        abs(x - y) <= _NORMALISATION_TOLERANCE for x, y in zip(a, b, strict=True)
    )


def write_ensemble(
    path: str | os.PathLike, member_paths: Sequence[str | os.PathLike], *, command: str = ""
) -> EnsembleFile:
    """Check that the member checkpoints agree (first member = reference) and write the spec
    file atomically, members relative to its folder when they lie under it."""
    path = Path(path)
    if not member_paths:
        raise TeacherError(f"{path}: an ensemble needs at least one member checkpoint")
    headers = [(Path(member), read_checkpoint(member)) for member in member_paths]
    first_path, first = headers[0]
    for member, header in headers[1:]:
        problem = agreement_problem(first, header)
        if problem:
            raise TeacherError(
                f"ensemble member {member} has {problem} (member {first_path} sets the "
                "reference); train every member on the same data, or give the checkpoints "
                "comma-separated, which lets each member keep its own normalisation"
            )
    folder = path.parent.resolve()
    document = {
        "format": ENSEMBLE_FORMAT,
        "version": ENSEMBLE_VERSION,
        "members": [_relative(Path(member).resolve(), folder) for member, _ in headers],
        "models": [header["model"] for _, header in headers],
        "num_classes": first["num_classes"],
        "class_names": list(first.get("class_names") or []),
        "input_size": first["input_size"],
        "mean": list(first.get("mean") or []),
        "std": list(first.get("std") or []),
        "command": command,
    }
    atomic_write_json(path, document)
    return read_ensemble(path)


def _relative(member: Path, folder: Path) -> str:
    return str(member.relative_to(folder)) if member.is_relative_to(folder) else str(member)


def _make_it(path: Path) -> str:
    """How to write the missing ensemble file `path`: the command that makes it."""
    folder = path.parent if path.name == SPEC_FILE else "DIR"
    return (
        f"train the members and write it with `pearl teacher train --model MODEL --seeds 0,1,2 "
        f"--data DATA --epochs E -o {folder}` (writes {folder}/{SPEC_FILE}; the KDAS "
        "quickstart's exact command is at the top of configs/kdas_quickstart.toml), or give "
        "the member checkpoints comma-separated instead"
    )


def read_ensemble(path: str | os.PathLike) -> EnsembleFile:
    """The checked contents of an ensemble spec file: every member exists and agrees with what
    the file records (`agreement_problem`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TeacherError(f"{path}: no such ensemble spec file; {_make_it(path)}")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TeacherError(f"{path}: not a readable JSON ensemble spec ({error})") from None
    if not isinstance(document, dict) or document.get("format") != ENSEMBLE_FORMAT:
        raise TeacherError(
            f"{path}: not a Pearl ensemble spec (no format tag {ENSEMBLE_FORMAT!r}); a teacher "
            "spec ending in .json must be one"
        )
    if document.get("version", 0) > ENSEMBLE_VERSION:
        raise TeacherError(
            f"{path}: ensemble spec version {document['version']} is newer than this Pearl "
            f"understands ({ENSEMBLE_VERSION}); upgrade Pearl"
        )
    missing = [key for key in ("members", *_AGREED) if key not in document]
    members = document.get("members")
    if missing or not isinstance(members, list) or not members:
        raise TeacherError(
            f"{path}: ensemble spec needs a non-empty 'members' list and "
            f"{', '.join(_AGREED)}; missing or empty: {', '.join(missing) or 'members'}"
        )
    folder = path.parent
    member_paths = []
    for entry in members:
        member = (folder / Path(str(entry)).expanduser()).resolve()
        if not member.is_file():
            raise TeacherError(
                f"{path}: member {entry!r} ({member}) does not exist; finish its training "
                "(rerun `pearl teacher train --seeds ... --resume` with the same options) or "
                "remove it from the file"
            )
        problem = agreement_problem(document, read_checkpoint(member))
        if problem:
            raise TeacherError(
                f"{path}: member {member} has {problem}, which the ensemble file does not "
                "record; the member file was replaced: retrain it with the ensemble's data "
                "or rewrite the spec file"
            )
        member_paths.append(member)
    return EnsembleFile(
        path=path,
        members=tuple(member_paths),
        num_classes=int(document["num_classes"]),
        class_names=tuple(document["class_names"]),
        input_size=int(document["input_size"]),
        mean=tuple(document["mean"]),
        std=tuple(document["std"]),
    )
