"""What an ensemble teacher gets right (KDAS, Kang et al. 2020): each member's top-1, the
ensemble's (logit average, what ``--loss kd`` distils), its *oracle accuracy* (the share of
images at least one member gets right, what ``--loss od`` distils from) and the paper's Table 5
statistic (the share of images by how many members get them right, 0..N).

`ensemble_statistics` is a pure function of the members' logits and the labels;
`member_logits` computes those logits for a teacher spec on a split; `write_statistics` puts the
result beside an ensemble spec file (``NAME.stats.json`` and ``NAME.stats.md``, the tables of
`pipeline.report_ensemble`), where a run's report finds it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from models.files import atomic_write, atomic_write_json
from pipeline.report_ensemble import statistics_markdown


def ensemble_statistics(member_logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Statistics of an ensemble from ``member_logits`` (M, N, C) of M members on N images
    and the N integer ``labels``.  Accuracies are fractions; ``correct_members_share[k]`` is the
    share of images exactly k members get right (k = 0..M, summing to 1); a member's prediction
    is its argmax (ties go to the lower class index, as in `pipeline.losses.oracle_kd`)."""
    logits = np.asarray(member_logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 3 or logits.shape[0] < 1 or logits.shape[1] < 1:
        raise ValueError(
            f"member logits must be (members, images, classes) with at least one of each, got "
            f"shape {logits.shape}"
        )
    if labels.shape != logits.shape[1:2]:
        raise ValueError(
            f"labels must be ({logits.shape[1]},) to match the logits, got {labels.shape}"
        )
    members, images, _ = logits.shape
    correct = logits.argmax(axis=2) == labels[None, :]  # (M, N)
    counts = correct.sum(axis=0)  # members right per image
    ensemble_correct = logits.mean(axis=0).argmax(axis=1) == labels
    return {
        "members": members,
        "images": images,
        "member_top1": [float(row.mean()) for row in correct],
        "ensemble_top1": float(ensemble_correct.mean()),
        "oracle_top1": float((counts > 0).mean()),
        "correct_members_share": [float((counts == k).mean()) for k in range(members + 1)],
    }


def statistics_paths(spec_path: str | os.PathLike, split: str = "test") -> tuple[Path, Path]:
    """``(NAME.stats.json, NAME.stats.md)`` beside the ensemble spec file ``NAME.json`` for
    the test split (``NAME.train.stats.*`` for the training split)."""
    path = Path(spec_path)
    stem = path.parent / path.name.removesuffix(path.suffix)
    infix = "" if split == "test" else f".{split}"
    return Path(f"{stem}{infix}.stats.json"), Path(f"{stem}{infix}.stats.md")


def write_statistics(
    spec_path: str | os.PathLike, stats: dict[str, Any], member_names: list[str]
) -> tuple[Path, Path]:
    """Write `stats` (with `member_names` and its context keys: ``split``, ``data``) as JSON
    and as markdown beside the ensemble spec file; returns both paths."""
    split = stats.get("split", "test")
    json_path, md_path = statistics_paths(spec_path, split)
    atomic_write_json(json_path, {**stats, "member_names": member_names})
    title = f"Ensemble `{Path(spec_path).name}` on the {split} split of `{stats.get('data', '')}`"
    atomic_write(md_path, f"{title}\n\n{statistics_markdown(stats, member_names)}\n")
    return json_path, md_path


def member_logits(
    spec: str, arrays, *, mean, std, batch_size: int = 500, device: str = "cpu"
) -> np.ndarray:
    """Logits (M, N, C) of each member of teacher `spec` on `arrays` (an `ImageArrays`,
    normalised with `mean`/`std`, no augmentation)."""
    import torch

    from models.teachers import Ensemble
    from pipeline.batches import BatchLoader
    from pipeline.training import load_teacher_for

    teacher = load_teacher_for(spec, arrays, mean, std).to(device)
    loader = BatchLoader(arrays, batch_size, train=False, mean=mean, std=std, device=device)
    batches = []
    with torch.no_grad():
        for x, _ in loader:
            if isinstance(teacher, Ensemble):
                batches.append(teacher.member_logits(x).float().cpu())
            else:
                batches.append(teacher(x).float().cpu().unsqueeze(0))
    return torch.cat(batches, dim=1).numpy()
