"""What a stage minimises, from its config's ``objective``: the data, loss and output heads for its fine-tuning run."""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from ..errors import CalibrationError
from .config import distill_share, mixes_labels
from .distill import Distilled, InputsOnly, frozen_teacher, kl_loss, mixed_loss
from .features import FeatureDistill

__all__ = ["objective_heads"]


def objective_heads(
    config: Any,
    data: Iterable,
    *,
    teacher: Callable | None,
    loss_fn: Callable | None,
    output: Callable | None,
    where: str,
    student: nn.Module | None = None,
) -> tuple[Iterable, dict, contextlib.AbstractContextManager, Any]:
    """``(data, heads, context, config)`` for a stage's fine-tuning run under ``config.objective``; run it inside
    ``context`` with the returned ``config``, whose explicit ``train.holdout`` batches (an iterable) are wrapped as
    the data is, so that the held-out loss reads what the training loss reads.

    ``"labels"``: the data and ``loss_fn`` / ``output`` as given; with ``config.distill_weight`` α > 0, the
    :class:`Distilled` data with its targets kept and the :func:`mixed_loss` ``(1 − α)·CE + α·τ²·KL`` (a user
    ``loss_fn(z, y)`` replaces the cross-entropy part). ``"distill"``: :class:`Distilled` data and the
    :func:`kl_loss` at ``config.temperature`` (a user ``loss_fn`` replaces it and receives the teacher's logits as
    its target; an ``nn.Module`` teacher is copied by :func:`frozen_teacher`). ``"distill"`` with
    ``config.feature_weight > 0``: input-only data and the :class:`FeatureDistill` loss of ``student`` (the
    network the stage tunes), whose hooks ``context`` registers and removes; the context is a no-op otherwise.
    Raises :class:`fxsnn.CalibrationError` when ``"distill"`` or α > 0 has no teacher, and when feature matching is asked
    for with a ``loss_fn`` of the user's or a teacher that is not an ``nn.Module``.
    """
    wrap, heads, context = _heads(config, teacher=teacher, loss_fn=loss_fn, output=output, where=where, student=student)
    holdout = config.train.holdout
    if wrap is not None and holdout is not None and not isinstance(holdout, numbers.Real):
        config = config.replace(train=config.train.replace(holdout=wrap(holdout)))  # an explicit held-out set
    return (data if wrap is None else wrap(data)), heads, context, config


def _heads(config, *, teacher, loss_fn, output, where: str, student) -> tuple[Callable | None, dict, Any]:
    """``(wrap, heads, context)``: ``wrap(batches)`` gives the batches the loss reads (``None``: as they are)."""
    mixed = mixes_labels(config)
    if distill_share(config) == 0:
        return None, {"loss_fn": loss_fn, "output": output}, contextlib.nullcontext()
    if teacher is None:
        what, fix = (
            ("distill_weight > 0", "set distill_weight=0")
            if mixed
            else ("objective='distill'", "set objective='labels'")
        )
        raise CalibrationError(
            f"{where}: {what} needs the ANN to distil from: pass teacher=<the trained ANN> "
            f"(fxsnn.convert builds one from the model it converts), or {fix}"
        )
    if config.feature_weight > 0:
        if loss_fn is not None or not isinstance(teacher, nn.Module) or student is None:
            raise CalibrationError(
                f"{where}: feature_weight > 0 computes its own loss from the teacher's activations: pass the teacher "
                "as an nn.Module and no loss_fn, or set feature_weight=0"
            )
        loss = FeatureDistill(
            student, teacher, temperature=config.temperature, weight=config.feature_weight, output=output, where=where
        )
        return (lambda d: InputsOnly(d, where=where)), {"loss_fn": loss, "output": output}, loss
    if isinstance(teacher, nn.Module):
        teacher = frozen_teacher(teacher)
    if mixed:
        loss = mixed_loss(config.distill_weight, config.temperature, loss_fn)
    else:
        loss = loss_fn or kl_loss(config.temperature)

    def wrap(d):
        return Distilled(d, teacher, output=output, where=where, keep_targets=mixed, checked=loss_fn is None)

    return wrap, {"loss_fn": loss, "output": output}, contextlib.nullcontext()
