"""The one loss/accuracy loop: top-1 and mean cross-entropy over ``(input, target)`` batches.

Used by :func:`fxsnn.evaluate` and by the fine-tuning loop's held-out evaluation (it sits here, with the data
steps, so that the fine-tuning loop does not depend on the report package).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .batches import batches, check_targets, run_batch

__all__ = ["measure", "EvalResult"]


@dataclass(frozen=True)
class EvalResult:
    """``top1`` in [0, 1], ``loss`` the mean cross-entropy, ``samples`` the number of inputs."""

    top1: float
    loss: float
    samples: int

    def __str__(self) -> str:
        return f"top-1 {100 * self.top1:.2f} %  loss {self.loss:.4f}  ({self.samples} samples)"


@torch.no_grad()
def measure(model: nn.Module, data: Iterable, *, where: str = "fxsnn.evaluate", progress: bool = True) -> EvalResult:
    """The one loss/accuracy loop: top-1 and mean cross-entropy of ``model`` as it is (no mode switch), no grad.

    Used by :func:`evaluate` and by the fine-tuning loop's held-out evaluation. ``where`` names the caller in
    data errors (batches without targets, on another device or dtype, non-finite inputs, targets that
    are not class indices in ``[0, classes)``, inputs the model cannot run).
    """
    correct = 0
    total = 0
    loss_sum = 0.0
    for i, (x, y) in enumerate(batches(data, where=where, need_targets=True, model=model, progress=progress)):
        logits = run_batch(model, x, where=where, index=i)
        y = check_targets(logits, y, where=where, index=i)
        loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        correct += int((logits.argmax(dim=1) == y).sum())
        total += y.numel()
    return EvalResult(correct / total, loss_sum / total, total)
