"""Knowledge-distillation losses: cross-entropy, Hinton KD (AKD) and oracle KD (KDAS).

Pure functions of logits; every loss is the mean over the batch of a per-example loss.  Teacher
logits are used as given (not detached): compute them under ``torch.no_grad()`` or from a cache
when the teacher is frozen, as in both papers.

Conventions (the weight names follow each paper):

* AKD (Liu et al., CVPR 2020, sec. 3.2): "temperature is set to 1 and the distilling weight
  alpha is set to 0.9", where alpha weights the KL term and ``1 - alpha`` the label term.
* KDAS (Kang et al., AAAI 2020, eq. 1) writes ``L_KD = lambda * L_CE + (1 - lambda) * L_KL``:
  its lambda weights the *label* term, so ``alpha = 1 - lambda`` here.  KDAS trains with T = 3
  and lambda = 0, i.e. ``temperature=3.0, alpha=1.0``.
* The KL term is multiplied by T^2 (KDAS eq. 3; Hinton et al. 2015), which keeps its gradient
  magnitude roughly independent of T, so alpha means the same thing at every temperature.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.registry import LOSSES

AKD_TEMPERATURE, AKD_ALPHA = 1.0, 0.9  # AKD sec. 3.2
KDAS_TEMPERATURE, KDAS_ALPHA = 3.0, 1.0  # KDAS "Implementation details": T = 3, lambda = 0


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """``L_CE = H(softmax(l_s), y)`` (KDAS eq. 2), averaged over the batch.

    ``logits``: (B, C) floats; ``labels``: (B,) class indices.
    """
    _check_logits_and_labels(logits, labels)
    return F.cross_entropy(logits, labels)


def hinton_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    temperature: float = AKD_TEMPERATURE,
    alpha: float = AKD_ALPHA,
) -> Tensor:
    """Hinton KD, averaged over the batch:

    ``alpha * T^2 * KL(softmax(l_t / T) || softmax(l_s / T)) + (1 - alpha) * CE(l_s, y)``

    which is KDAS eqs. 1-3 with ``lambda = 1 - alpha``.  Defaults are AKD's (T = 1,
    alpha = 0.9).  ``student_logits`` and ``teacher_logits``: (B, C); ``labels``: (B,).
    """
    _check_logits_and_labels(student_logits, labels)
    _check_hyperparameters(temperature, alpha)
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher logits {tuple(teacher_logits.shape)} and student logits "
            f"{tuple(student_logits.shape)} must have the same shape (B, C)"
        )
    return _kd_per_example(student_logits, teacher_logits, labels, temperature, alpha).mean()


def oracle_kd(
    student_logits: Tensor,
    member_logits: Tensor,
    labels: Tensor,
    temperature: float = AKD_TEMPERATURE,
    alpha: float = KDAS_ALPHA,
) -> Tensor:
    """Oracle KD for an ensemble teacher (KDAS eq. 4), averaged over the batch.

    With ``u_j = 1`` when member j's top-1 prediction (argmax of its logits; ties go to the lower
    class index) equals the label of example i::

        L_OD = L_KD(l_s, l_bar_t, y)   if sum_j u_j > 0
               L_CE(l_s, y)            otherwise                      (KDAS eq. 4)

        l_bar_t = sum_j u_j * l_t,j / sum_j u_j   (mean logits of the correct members)

    where ``L_KD`` is `hinton_kd` with the same ``temperature`` and ``alpha`` and ``L_CE`` is the
    plain, unweighted cross-entropy.  The default ``alpha=1.0`` is KDAS's lambda = 0 (pure
    distillation where some member is right); KDAS used ``temperature=3.0``.

    ``student_logits``: (B, C); ``member_logits``: (M, B, C), one slice per ensemble member;
    ``labels``: (B,).  Gradients flow to the member logits through ``l_bar_t``; the selection
    ``u`` is piecewise constant.
    """
    _check_logits_and_labels(student_logits, labels)
    _check_hyperparameters(temperature, alpha)
    if member_logits.dim() != 3 or member_logits.shape[1:] != student_logits.shape:
        raise ValueError(
            f"member logits must be (M, B, C) = (M, {student_logits.shape[0]}, "
            f"{student_logits.shape[1]}), got {tuple(member_logits.shape)}"
        )
    if member_logits.shape[0] == 0:
        raise ValueError("member logits hold no ensemble member (M = 0)")
    correct = (member_logits.argmax(dim=-1) == labels).to(member_logits.dtype)  # u: (M, B)
    num_correct = correct.sum(dim=0)  # (B,)
    oracle_logits = (correct.unsqueeze(-1) * member_logits).sum(dim=0) / num_correct.clamp(
        min=1
    ).unsqueeze(-1)  # l_bar_t: (B, C); all zeros (a finite dummy) where nobody is correct
    distill = _kd_per_example(student_logits, oracle_logits, labels, temperature, alpha)
    plain = F.cross_entropy(student_logits, labels, reduction="none")
    return torch.where(num_correct > 0, distill, plain).mean()


def _kd_per_example(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float, alpha: float
) -> Tensor:
    """``alpha * T^2 * KL(p_t || p_s) + (1 - alpha) * CE`` per example, shape (B,)."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    ce = F.cross_entropy(student_logits, labels, reduction="none")
    return alpha * temperature**2 * kl + (1.0 - alpha) * ce


def _check_logits_and_labels(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, C), got shape {tuple(logits.shape)}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(
            f"labels must be (B,) = ({logits.shape[0]},), got shape {tuple(labels.shape)}"
        )
    if labels.dtype != torch.int64:
        raise ValueError(f"labels must be int64 class indices, got dtype {labels.dtype}")


def _check_hyperparameters(temperature: float, alpha: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (the weight of the KL term) must be in [0, 1], got {alpha}")


def training_loss(
    kind: str,
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor,
    temperature: float,
    alpha: float,
) -> Tensor:
    """The loss called `kind` (`pipeline.registry.LOSSES`): ``ce`` ignores the teacher, ``kd``
    takes (B, C) teacher logits, ``od`` (M, B, C) logits of the M ensemble members."""
    entry = LOSSES[kind]
    if not entry.needs_teacher:
        return cross_entropy(student_logits, labels)
    if teacher_logits is None:
        raise ValueError(f"loss {kind!r} needs teacher logits")
    return entry.load()(student_logits, teacher_logits, labels, temperature, alpha)
