"""The teacher-logit cache on disk, shared by every search that trains on the same batches.

A KD-guided candidate needs the teacher's logits for every augmented training batch it sees.
All candidates of a search (and of any later search with the same settings) see exactly the same
batches, because `BatchLoader` is deterministic per seed and epoch; so the logits are computed
once (`CachedTeacher.compute`) and stored in ``CACHE_DIR/<key>.pt``, where the key hashes

* the teacher's identity: the sha256 of every checkpoint / weights file in the spec (so a
  retrained file never serves stale logits), in spec order;
* the data: the sha256 of the mini-train images and labels;
* the loader settings: seed, batch size, epochs, padding, normalisation, drop-last;
* the mode: one averaged logit vector per image (``kd``) or one per ensemble member (``od``);
* where the logits were computed, when not on the CPU (``cuda``, ``mps``: a GPU's float
  arithmetic differs in the last bits, so a CPU search never reads GPU logits and stays
  bit-identical; CPU keys are those of before devices existed);
* a format version.

The logits are computed on the ``[compute]`` device (`pipeline.device`) in float32 and stored on
the CPU.

Writes are atomic (temporary file + rename): a killed search leaves either no file or a whole one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from models.damage import set_aside, zip_problem
from models.normalisation import CIFAR10_MEAN, CIFAR10_STD
from pipeline.data import ImageArrays

CACHE_VERSION = 1


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def teacher_identity(spec: str) -> list[str]:
    """One identity string per member of a teacher spec (an ensemble file counts as its
    members): kind, name and file content hash."""
    from models.ensembles import member_specs
    from models.teacher_loading import TORCHVISION_PREFIX, TeacherError, resolve_checkpoint_path

    identities = []
    for part in member_specs(spec):
        if part.startswith(TORCHVISION_PREFIX):
            name, _, weights = part.removeprefix(TORCHVISION_PREFIX).partition("=")
            path = Path(weights).expanduser()
            kind = f"torchvision:{name}"
        else:
            path = resolve_checkpoint_path(part)
            kind = "checkpoint"
        if not path.is_file():
            raise TeacherError(f"teacher file {path} (from spec {part!r}) does not exist")
        identities.append(f"{kind}:{file_sha256(path)}")
    return identities


def arrays_sha256(arrays: ImageArrays) -> str:
    digest = hashlib.sha256()
    digest.update(str(arrays.images.shape).encode())
    digest.update(arrays.images.tobytes())
    digest.update(arrays.labels.tobytes())
    return digest.hexdigest()


def cache_key(
    spec: str,
    mini_train: ImageArrays,
    *,
    batch_size: int,
    seed: int,
    epochs: int,
    members: bool,
    pad: int = 4,
    mean=CIFAR10_MEAN,
    std=CIFAR10_STD,
    device_type: str = "cpu",
) -> str:
    """The file stem for these teacher logits (32 hex digits); `device_type` is where they are
    computed (``cpu``, ``cuda``, ``mps``)."""
    description = {
        "version": CACHE_VERSION,
        "teacher": teacher_identity(spec),
        "data": arrays_sha256(mini_train),
        "loader": {
            "batch_size": batch_size,
            "seed": seed,
            "epochs": epochs,
            "pad": pad,
            "mean": list(mean),
            "std": list(std),
            "drop_last": True,
        },
        "members": members,
    }
    if device_type != "cpu":
        description["device"] = device_type
    text = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cached_teacher(
    spec: str,
    mini_train: ImageArrays,
    *,
    batch_size: int,
    seed: int,
    epochs: int,
    members: bool,
    cache_dir: str | os.PathLike,
    input_size: int,
    progress: Callable[[int, int], None] | None = None,
    compute=None,
):
    """``(CachedTeacher, path, hit)``: the logits for every training batch of epochs 0..E-1,
    read from the cache or computed with the teacher (loaded only on a miss) on the device of
    `compute` (the ``[compute]`` section; default auto) and stored."""

    from models.teacher_loading import load_teacher
    from pipeline.batches import BatchLoader
    from pipeline.device import placement
    from pipeline.proxy import CachedTeacher, MemberLogits

    place = placement(compute)
    key = cache_key(
        spec,
        mini_train,
        batch_size=batch_size,
        seed=seed,
        epochs=epochs,
        members=members,
        device_type=place.device.type,
    )
    folder = Path(cache_dir).expanduser()
    path = folder / f"{key}.pt"
    if path.is_file():  # checked (zip CRCs, then loading); damaged: set aside and recomputed
        try:
            problem = zip_problem(path)
            if problem is None:
                return CachedTeacher.load(path), path, True
        except Exception as error:
            problem = f"{type(error).__name__}: {error}"
        set_aside(path, "teacher-logit cache", problem, then="computing the logits again")
    teacher = load_teacher(
        spec,
        num_classes=mini_train.num_classes,
        input_size=input_size,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )
    if members:
        teacher = MemberLogits(teacher)
    loader = BatchLoader(mini_train, batch_size, train=True, seed=seed, device=place.device)
    with place.fork_rng():
        cached = CachedTeacher.compute(teacher, loader, epochs, progress)
    folder.mkdir(parents=True, exist_ok=True)
    cached.save(path)
    return cached, path, False
