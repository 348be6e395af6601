"""The distillation loss of Hinton, Vinyals and Dean (2015), as a pure function (tested by hand)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hinton_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    hard_loss: torch.Tensor | None = None,
) -> torch.Tensor:
    """alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, labels).

    The KL is averaged over the batch (`batchmean`, the true KL per sample); T^2 keeps the soft
    term's gradients on the scale of the hard term's as T changes. Computed in float32 whatever
    the autocast dtype of the logits. `hard_loss`: the cross-entropy already computed by the module.
    """
    t = float(temperature)
    student = student_logits.float()
    soft = F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher_logits.detach().float() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student, labels) if hard_loss is None else hard_loss.float()
    return alpha * t * t * soft + (1.0 - alpha) * hard
