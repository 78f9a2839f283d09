"""``fxsnn.evaluate``: top-1 accuracy and mean cross-entropy of an ANN or a converted network."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..calibrate.batches import batches
from ..calibrate.state import preserved_state

__all__ = ["evaluate", "measure", "EvalResult"]


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
    data errors (batches without targets, on another device or dtype).
    """
    correct = 0
    total = 0
    loss_sum = 0.0
    for x, y in batches(data, where=where, need_targets=True, model=model, progress=progress):
        logits = model(x)
        y = y.to(logits.device)
        loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        correct += int((logits.argmax(dim=1) == y).sum())
        total += y.numel()
    return EvalResult(correct / total, loss_sum / total, total)


def evaluate(model: nn.Module, data: Iterable, *, progress: bool = True) -> EvalResult:
    """Top-1 accuracy and mean loss of ``model`` over ``(input, target)`` batches, in eval mode.

    Works for the ANN and for any fxsnn stage (a lowered network returns
    time-averaged logits). The model's train/eval state is restored after, module by module.

    Example::

        >>> fxsnn.evaluate(snn, test_loader).top1
        0.8123
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fxsnn.evaluate expects an nn.Module; got {type(model).__name__}")
    with preserved_state(model):
        model.eval()
        return measure(model, data, where="fxsnn.evaluate", progress=progress)
