"""The one loss/accuracy loop: top-1 and mean cross-entropy over ``(input, target)`` batches.

Used by :func:`fxsnn.evaluate` and by the fine-tuning loop's held-out evaluation (it sits here, with the data
steps, so that the fine-tuning loop does not depend on the report package).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DataError
from . import distributed as _dist
from .batches import batches, check_targets, run_batch

__all__ = ["measure", "EvalResult", "pick_output", "default_loss", "head"]


def pick_output(out: object) -> Tensor:
    """The default output adaptor: the logits tensor of a model's output.

    A tensor is itself; a dict gives its ``"out"`` entry (torchvision segmentation: ``{"out": ..., "aux": ...}``),
    or its only entry; a tuple or list its first element (``InceptionOutputs``, ``(logits, features)``), recursively.
    Logits are ``[B, classes]`` or dense ``[B, classes, H, W]`` (per-pixel classes).
    """
    while not isinstance(out, Tensor):
        if isinstance(out, dict) and ("out" in out or len(out) == 1):
            out = out["out"] if "out" in out else next(iter(out.values()))
        elif isinstance(out, (tuple, list)) and out:
            out = out[0]
        else:
            what = f"a dict with keys {sorted(map(str, out))}" if isinstance(out, dict) else type(out).__name__
            raise DataError(
                f"the model returned {what}, not a logits tensor; pass output=<callable picking the logits> "
                "(e.g. output=lambda o: o['logits'])"
            )
    return out


def default_loss(logits: Tensor, target: Tensor) -> Tensor:
    """The default ``loss_fn``: mean cross-entropy; per pixel for dense ``[B, classes, H, W]`` logits."""
    return F.cross_entropy(logits.float(), target.to(logits.device))


def head(output: Callable | None, loss_fn: Callable | None) -> tuple[Callable, Callable]:
    """``(output adaptor, loss_fn)`` with the defaults filled in (:func:`pick_output`, :func:`default_loss`)."""
    for name, f in (("output", output), ("loss_fn", loss_fn)):
        if f is not None and not callable(f):
            raise TypeError(f"{name} must be a callable or None; got {type(f).__name__}")
    return output or pick_output, loss_fn or default_loss


@dataclass(frozen=True)
class EvalResult:
    """``top1`` in [0, 1], ``loss`` the mean cross-entropy, ``samples`` the number of inputs."""

    top1: float
    loss: float
    samples: int

    def __str__(self) -> str:
        return f"top-1 {100 * self.top1:.2f} %  loss {self.loss:.4f}  ({self.samples} samples)"


def _top1(logits: Tensor, y: Tensor) -> int | None:
    """Correct top-1 predictions (per sample, or per pixel for dense logits); ``None`` when ``y`` is no class map."""
    if y.is_floating_point() or logits.dim() != y.dim() + 1 or logits.shape[2:] != y.shape[1:]:
        return None
    return int((logits.argmax(dim=1) == y).sum())


@torch.no_grad()
def measure(
    model: nn.Module,
    data: Iterable,
    *,
    where: str = "fxsnn.evaluate",
    progress: bool = True,
    loss_fn: Callable | None = None,
    output: Callable | None = None,
    distributed: bool = False,
) -> EvalResult:
    """The one loss/accuracy loop: top-1 and mean loss of ``model`` as it is (no mode switch), no grad.

    ``output(model(x))`` picks the logits (default :func:`pick_output`: a tensor, a dict's ``"out"``, a tuple's
    first element); ``loss_fn(logits, target)`` is a batch's mean loss (default: cross-entropy, per pixel for
    dense ``[B, classes, H, W]`` logits with ``[B, H, W]`` targets). The loss is averaged over targets
    (``target.numel()`` per batch), top-1 over samples or pixels (``nan`` when the targets are not class
    indices shaped like the logits). Used by :func:`evaluate` and by the fine-tuning loop's held-out
    evaluation. ``where`` names the caller in data errors (batches without targets, on another device or dtype,
    non-finite inputs, with the default loss targets that are not class indices in ``[0, classes)``, inputs
    the model cannot run). ``distributed=True`` under a ``torch.distributed`` process group (the fine-tuning
    loop's held-out loss): ``data`` is this rank's shard and the sums are all-reduced, so every rank gets the
    global result (the default, ``False``, measures this rank's data alone, as :func:`fxsnn.evaluate` does).
    """
    pick, loss_of = head(output, loss_fn)
    correct: int | None = 0
    total = 0
    loss_sum = 0.0
    for i, (x, y) in enumerate(batches(data, where=where, need_targets=True, model=model, progress=progress)):
        logits = pick(run_batch(model, x, where=where, index=i))
        if loss_fn is None:
            y = check_targets(logits, y, where=where, index=i)
            loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        else:
            y = y.to(logits.device)
            loss_sum += float(loss_of(logits, y)) * y.numel()
        hits = _top1(logits, y)
        correct = None if hits is None or correct is None else correct + hits
        total += y.numel()
    if distributed and _dist.active():
        correct, total, loss_sum = _global_sums(correct, total, loss_sum, where=where)
    return EvalResult(float("nan") if correct is None else correct / total, loss_sum / total, total)


def _global_sums(correct: int | None, total: int, loss_sum: float, *, where: str) -> tuple[int | None, int, float]:
    """``(correct, total, loss_sum)`` summed over ranks (one float64 all-reduce); ``correct`` is ``None`` when it
    is on any rank."""
    sums = torch.tensor([float(total), loss_sum, float(correct or 0), float(correct is None)], dtype=torch.float64)
    _dist.all_sum_(sums, where=where)
    return (None if sums[3] > 0 else int(sums[2])), int(sums[0]), float(sums[1])
