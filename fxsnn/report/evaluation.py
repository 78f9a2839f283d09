"""``fxsnn.evaluate``: top-1 accuracy and mean cross-entropy of an ANN or a converted network."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

from ..calibration.measure import EvalResult, measure
from ..calibration.state import preserved_state

__all__ = ["evaluate", "measure", "EvalResult"]


def evaluate(
    model: nn.Module,
    data: Iterable,
    *,
    progress: bool = True,
    loss_fn: Callable | None = None,
    output: Callable | None = None,
) -> EvalResult:
    """Top-1 accuracy and mean loss of ``model`` over ``(input, target)`` batches, in eval mode.

    Works for the ANN and for any fxsnn stage (a lowered network returns
    time-averaged logits). The model's train/eval state is restored after, module by module.
    ``output`` picks the logits from the model's output (default: a tensor, a dict's ``"out"``, a tuple's
    first element); ``loss_fn(logits, target)`` a batch's mean loss (default: cross-entropy; dense
    ``[B, classes, H, W]`` logits are scored per pixel). See :func:`fxsnn.calibration.measure.measure`.

    Example::

        >>> fxsnn.evaluate(snn, test_loader).top1
        0.8123
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fxsnn.evaluate expects an nn.Module; got {type(model).__name__}")
    with preserved_state(model):
        model.eval()
        return measure(model, data, where="fxsnn.evaluate", progress=progress, loss_fn=loss_fn, output=output)
