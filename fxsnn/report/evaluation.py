"""``fxsnn.evaluate``: top-1 accuracy and mean cross-entropy of an ANN or a converted network."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from ..calibration.measure import EvalResult, measure
from ..calibration.state import preserved_state

__all__ = ["evaluate", "measure", "EvalResult"]


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
