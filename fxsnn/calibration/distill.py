"""Label-free calibration: the stages' targets are the ANN's own logits (knowledge distillation).

With ``objective="distill"`` (:class:`~fxsnn.calibration.config.Stage1Config`,
:class:`~fxsnn.calibration.config.Stage2Config`) a stage minimises, per batch of ``B`` inputs,

    L = τ² · (1/B) Σ_b KL( softmax(z_ANN,b / τ) ‖ softmax(z_b / τ) )

where ``z`` ``[B, classes]`` are the logits of the network being tuned (for a lowered network the time-averaged
logits, Alg. 3 l. 8-9), ``z_ANN`` the teacher's and τ the ``temperature`` (Hinton et al., 2015; the τ² keeps the
gradient's size independent of τ). Dense ``[B, classes, H, W]`` logits are compared per position (KL over the
class axis, averaged over positions). The teacher is the user's ANN, run in eval mode without gradients on the
same inputs; it is never modified (:func:`frozen_teacher` copies it). Batches need no targets: a tensor, an
``(x,)`` tuple or an ``(x, y, ...)`` tuple (``y`` is ignored).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CalibrationError
from .batches import check_finite, run_batch
from .measure import pick_output

__all__ = ["Distilled", "kl_loss", "frozen_teacher", "objective_heads"]


def frozen_teacher(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every parameter frozen (the user's model is untouched)."""
    teacher = copy.deepcopy(model)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def kl_loss(temperature: float = 1.0) -> Callable[[Tensor, Tensor], Tensor]:
    """``loss_fn(logits, teacher_logits)``: ``τ²·KL(softmax(t/τ) ‖ softmax(s/τ))``, the batch (and position) mean."""
    tau = float(temperature)

    def loss(logits: Tensor, teacher_logits: Tensor) -> Tensor:
        s = F.log_softmax(logits.float() / tau, dim=1)
        t = F.log_softmax(teacher_logits.to(logits.device).float() / tau, dim=1)
        kl = (t.exp() * (t - s)).sum(dim=1)  # [B] or [B, H, W]
        return kl.mean() * (tau * tau)

    return loss


class Distilled:
    """The re-iterable ``data`` with each batch's target replaced by the teacher's logits: yields ``(x, z_ANN)``.

    ``teacher(x)`` runs under ``torch.no_grad`` (the teacher is expected in eval mode, see
    :func:`frozen_teacher`); ``output`` picks its logits (default :func:`fxsnn.calibration.measure.pick_output`).
    Batches are a tensor or a tuple/list whose first element is the input.
    """

    def __init__(self, data: Iterable, teacher: Callable, *, output: Callable | None = None, where: str):
        self.data, self.teacher, self.output, self.where = data, teacher, output or pick_output, where

    def __len__(self) -> int:
        return len(self.data)  # TypeError when unknown, as for the data itself

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for i, batch in enumerate(self.data):
            x = batch if isinstance(batch, Tensor) else batch[0] if isinstance(batch, (tuple, list)) and batch else None
            if not isinstance(x, Tensor):
                yield batch  # the stage's batch check names the problem
                continue
            check_finite(x, where=self.where, index=i)
            with torch.no_grad():
                z = self.output(run_batch(self.teacher, x, where=self.where + " (teacher)", index=i))
            yield x, z.detach()


def objective_heads(
    config: object,
    data: Iterable,
    *,
    teacher: Callable | None,
    loss_fn: Callable | None,
    output: Callable | None,
    where: str,
) -> tuple[Iterable, dict]:
    """``(data, heads)`` for a stage's fine-tuning run under ``config.objective``.

    ``"labels"``: the data and ``loss_fn`` / ``output`` as given. ``"distill"``: :class:`Distilled` data and the
    :func:`kl_loss` at ``config.temperature`` (a user ``loss_fn`` replaces it and receives the teacher's logits as
    its target; an ``nn.Module`` teacher is copied by :func:`frozen_teacher`). Raises
    :class:`fxsnn.CalibrationError` when ``"distill"`` has no teacher.
    """
    if config.objective == "labels":
        return data, {"loss_fn": loss_fn, "output": output}
    if teacher is None:
        raise CalibrationError(
            f"{where}: objective='distill' needs the ANN to distil from: pass teacher=<the trained ANN> "
            "(fxsnn.convert passes the model it converts), or set objective='labels'"
        )
    if isinstance(teacher, nn.Module):
        teacher = frozen_teacher(teacher)
    heads = {"loss_fn": loss_fn or kl_loss(config.temperature), "output": output}
    return Distilled(data, teacher, output=output, where=where), heads
