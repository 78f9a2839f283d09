"""Restore what a data step, an evaluation or an analysis switches: per-module training flags and ``requires_grad``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["preserved_state"]


@contextlib.contextmanager
def preserved_state(*models: nn.Module) -> Iterator[None]:
    """Inside, change train/eval modes and ``requires_grad`` freely; on exit each is put back, module by module.

    Restores ``m.training`` for **every** submodule (not just the root's flag: ``model.train(flag)`` would
    turn a BatchNorm the user froze in eval mode inside a train-mode model back into train mode) and
    ``p.requires_grad`` for every parameter, also when the body raises.

    Example::

        >>> with preserved_state(model):
        ...     model.eval()
        ...     logits = model(x)
    """
    flags = [(m, m.training) for model in models for m in model.modules()]
    grads = [(p, p.requires_grad) for model in models for p in model.parameters()]
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag
        for p, flag in grads:
            p.requires_grad_(flag)
