"""The fine-tuning loop shared by Stage 1 and Stage 2 (Algorithms 2-3): AdamW, warm-up + cosine, clipping, early stop.

One loop, used by :func:`fxsnn.recalibrate_bn` and :func:`fxsnn.tune_delta_b`:

- cross-entropy on the model's logits (a lowered network returns time-averaged logits, Alg. 3 l. 8-9);
- AdamW without weight decay (Appendix C), learning rate ``η(s)`` at optimizer step ``s = 0..S-1``::

      η(s) = η_max·(s + 1)/W                                     for s < W   (linear warm-up)
      η(s) = η_min + (η_max − η_min)·(1 + cos(π·(s − W)/(S − W)))/2   after    (cosine decay)

- optional gradient-norm clipping;
- optional early stopping on held-out batches (Alg. 3 l. 12): the held-out loss is measured before the first
  step and every ``eval_every`` steps; after ``patience`` evaluations without improvement training stops, and the
  best evaluated state is restored at the end;
- a non-finite loss or gradient stops training at once with :class:`NonFiniteLossError`, which names the step
  and carries the model restored to its state before that step.

**Scaled variables.** A tensor ``p`` may be trained *relative to a scale* ``c`` (same shape): the optimizer holds
``z = p / c`` and the model sees ``p = c ⊙ z``, so Adam's step — about ``η`` per element whatever the gradient's
size — moves ``p`` by about ``η·c``. Stage 2 uses ``c = θ_pre`` for ``Δb`` (``Δb = 0`` stays exactly 0), Stage 1
uses ``c = θ`` for the thresholds (``z = 1`` gives ``θ`` back exactly).
"""

from __future__ import annotations

import collections.abc
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CalibrationError, DataError
from .batches import batches

__all__ = ["NonFiniteLossError", "TrainReport", "TrainSpec", "fine_tune", "lr_at", "count_batches", "check_reiterable"]


class NonFiniteLossError(CalibrationError):
    """The loss (or a gradient) became NaN/Inf during fine-tuning.

    Attributes: ``step`` (1-based optimizer step that failed), ``epoch``, ``batch`` (index within the pass),
    and ``model``: the model being tuned, restored to its state before that step.
    """

    def __init__(self, message: str, *, step: int, epoch: int, batch: int, model: nn.Module):
        super().__init__(message)
        self.step, self.epoch, self.batch, self.model = step, epoch, batch, model


@dataclass
class TrainReport:
    """What a fine-tuning run did: ``steps`` taken of ``planned_steps``, per-step training ``losses``,
    ``holdout`` as ``(step, loss)`` pairs, the ``best_step`` restored (``None`` without holdout), ``stopped_early``."""

    steps: int = 0
    planned_steps: int = 0
    losses: list = field(default_factory=list)
    holdout: list = field(default_factory=list)
    best_step: int | None = None
    stopped_early: bool = False

    def __str__(self) -> str:
        s = f"{self.steps}/{self.planned_steps} steps"
        if self.losses:
            s += f", train loss {self.losses[0]:.4f} -> {self.losses[-1]:.4f}"
        if self.holdout:
            best = min(h for _, h in self.holdout)
            s += f", held-out loss {self.holdout[0][1]:.4f} -> best {best:.4f} (step {self.best_step})"
        if self.stopped_early:
            s += ", stopped early"
        return s


@dataclass(frozen=True)
class TrainSpec:
    """Hyper-parameters of one fine-tuning run (validated here; see the module docstring for the math).

    ``epochs`` passes over the data, or exactly ``steps`` optimizer steps when given (the data is cycled);
    ``lr`` = η_max, ``lr_min`` = η_min; ``warmup``: a fraction of the steps in [0, 1) or a number of steps;
    ``clip_grad``: max gradient 2-norm or ``None``; ``holdout``: ``None``, a number of batches or a fraction
    of the batches in (0, 1) set aside from the start of every pass over the data, or an iterable of
    ``(input, target)`` batches; ``patience``: evaluations without improvement before stopping (``None``:
    never stop early, still restore the best); ``eval_every``: steps between held-out evaluations
    (``None``: four per epoch).
    """

    epochs: int = 1
    steps: int | None = None
    lr: float = 1e-3
    lr_min: float = 0.0
    warmup: float = 0.1
    clip_grad: float | None = None
    holdout: object = None
    patience: int | None = None
    eval_every: int | None = None

    def __post_init__(self):
        w = "fxsnn fine-tuning"
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, numbers.Integral) or self.epochs < 1:
            raise ValueError(f"{w}: epochs must be an integer >= 1; got {self.epochs!r}")
        if self.steps is not None and (
            isinstance(self.steps, bool) or not isinstance(self.steps, numbers.Integral) or self.steps < 1
        ):
            raise ValueError(f"{w}: steps must be None or an integer >= 1; got {self.steps!r}")
        if not (isinstance(self.lr, numbers.Real) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"{w}: lr must be a finite number > 0; got {self.lr!r}")
        if not (isinstance(self.lr_min, numbers.Real) and 0 <= self.lr_min <= self.lr):
            raise ValueError(f"{w}: lr_min must be in [0, lr={self.lr}]; got {self.lr_min!r}")
        if not (
            isinstance(self.warmup, numbers.Real)
            and self.warmup >= 0
            and (self.warmup < 1 or float(self.warmup).is_integer())
        ):
            raise ValueError(
                f"{w}: warmup must be a fraction in [0, 1) or a whole number of steps; got {self.warmup!r}"
            )
        if self.clip_grad is not None and not (isinstance(self.clip_grad, numbers.Real) and self.clip_grad > 0):
            raise ValueError(f"{w}: clip_grad must be None or a number > 0; got {self.clip_grad!r}")
        h = self.holdout
        if isinstance(h, bool) or (
            isinstance(h, numbers.Real) and not (0 < h < 1 or (float(h).is_integer() and h >= 1))
        ):
            raise ValueError(
                f"{w}: holdout must be None, a fraction in (0, 1), a number of batches >= 1, or an iterable of batches; got {h!r}"
            )
        if self.patience is not None and (
            isinstance(self.patience, bool) or not isinstance(self.patience, numbers.Integral) or self.patience < 1
        ):
            raise ValueError(f"{w}: patience must be None or an integer >= 1; got {self.patience!r}")
        if self.eval_every is not None and (
            isinstance(self.eval_every, bool)
            or not isinstance(self.eval_every, numbers.Integral)
            or self.eval_every < 1
        ):
            raise ValueError(f"{w}: eval_every must be None or an integer >= 1; got {self.eval_every!r}")


def lr_at(step: int, total: int, *, lr: float, lr_min: float, warmup_steps: int) -> float:
    """η(step) of the linear warm-up + cosine schedule (module docstring), ``0 <= step < total``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(total - warmup_steps, 1)
    return lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / span))


def check_reiterable(data: Iterable, *, where: str) -> None:
    """Raise :class:`fxsnn.DataError` for a one-shot iterator (a generator): stages pass over the data several times.

    Does not call ``iter(data)`` (a DataLoader draws a seed from torch's generator when iterated).
    """
    if isinstance(data, collections.abc.Iterator):
        raise DataError(
            f"{where} passes over the data more than once, but it is a one-shot iterator (e.g. a generator); "
            "pass a list of (input, target) batches or a torch.utils.data.DataLoader"
        )
    if isinstance(data, Tensor) or not isinstance(data, collections.abc.Iterable):
        what = "a single tensor" if isinstance(data, Tensor) else type(data).__name__
        raise DataError(
            f"{where}: data must be an iterable of batches (a list of (x, y) tuples or a DataLoader); got {what}"
        )


def count_batches(data: Iterable, *, where: str) -> int:
    """Number of batches per pass: ``len(data)``, or one dry pass (no model run) when it has no length."""
    check_reiterable(data, where=where)
    try:
        n = len(data)
    except TypeError:
        n = sum(1 for _ in data)
    if n == 0:
        raise DataError(f"{where}: the data yielded no batches; pass at least one (input, target) batch")
    return n


def _holdout_batches(holdout, n_batches: int, *, where: str) -> int:
    """How many leading batches of each pass are held out (0 for an explicit held-out iterable)."""
    if holdout is None or not isinstance(holdout, numbers.Real):
        return 0
    k = int(holdout) if holdout >= 1 else max(1, round(holdout * n_batches))
    if k >= n_batches:
        raise DataError(f"{where}: holdout={holdout!r} leaves no training batch out of {n_batches}; lower holdout")
    return k


@torch.no_grad()
def _mean_loss(model: nn.Module, data: Iterable, *, where: str) -> float:
    total, n = 0.0, 0
    for x, y in batches(data, where=where, need_targets=True, model=model, progress=False):
        logits = model(x)
        total += float(F.cross_entropy(logits.float(), y.to(logits.device), reduction="sum"))
        n += y.numel()
    return total / n


def fine_tune(
    model: nn.Module,
    params: Sequence[Tensor],
    data: Iterable,
    spec: TrainSpec,
    *,
    where: str,
    scales: Sequence[Tensor | None] | None = None,
    state: Callable[[], dict] | None = None,
    after_step: Callable[[], None] | None = None,
    progress: bool = True,
) -> TrainReport:
    """Minimise the cross-entropy of ``model`` over ``data`` w.r.t. ``params`` (in place); returns a :class:`TrainReport`.

    The caller sets train/eval modes and ``requires_grad``. ``scales[i]`` (or ``None``) trains ``params[i]``
    relative to that scale (module docstring). ``state()`` returns the tensors to snapshot for restoring
    (default: ``params``); ``after_step()`` runs after each optimizer step (e.g. to clamp θ > 0).
    """
    params = list(params)
    if not params:
        raise ValueError(f"{where}: nothing to train")
    scales = list(scales) if scales is not None else [None] * len(params)
    shadow = [p.detach() / c if c is not None else p for p, c in zip(params, scales)]
    opt_vars = []
    for v, c in zip(shadow, scales):
        if c is not None:
            v = v.clone().requires_grad_(True)
        opt_vars.append(v)
    optimizer = torch.optim.AdamW(opt_vars, lr=spec.lr, weight_decay=0.0)
    state = state or (lambda: {i: p for i, p in enumerate(params)})

    def snapshot() -> dict:
        return {k: v.detach().clone() for k, v in state().items()} | {
            ("z", i): v.detach().clone() for i, v in enumerate(opt_vars)
        }

    def restore(snap: dict) -> None:
        with torch.no_grad():
            for k, v in state().items():
                v.copy_(snap[k])
            for i, v in enumerate(opt_vars):
                v.copy_(snap[("z", i)])

    n_batches = count_batches(data, where=where)
    k_hold = _holdout_batches(spec.holdout, n_batches, where=where)
    explicit_hold = spec.holdout if (spec.holdout is not None and not isinstance(spec.holdout, numbers.Real)) else None
    if explicit_hold is not None:
        check_reiterable(explicit_hold, where=where + " (holdout)")
    per_epoch = n_batches - k_hold
    total = spec.steps if spec.steps is not None else spec.epochs * per_epoch
    warm = int(spec.warmup) if spec.warmup >= 1 else int(round(spec.warmup * total))
    warm = min(warm, total)
    has_hold = k_hold > 0 or explicit_hold is not None
    eval_every = spec.eval_every or max(1, per_epoch // 4)
    report = TrainReport(planned_steps=total)
    held: list = list(explicit_hold) if explicit_hold is not None else []
    best = (math.inf, None, None)  # (loss, step, snapshot)
    bad_evals = 0

    def evaluate_holdout(step: int) -> bool:
        """Record the held-out loss at ``step``; True when patience is exhausted."""
        nonlocal best, bad_evals
        flags = [m.training for m in model.modules()]
        model.eval()
        loss = _mean_loss(model, held, where=where + " (holdout)")
        for m, f in zip(model.modules(), flags):
            m.training = f
        report.holdout.append((step, loss))
        if loss < best[0]:
            best, bad_evals = (loss, step, snapshot()), 0
        else:
            bad_evals += 1
        return spec.patience is not None and bad_evals >= spec.patience

    step, epoch, stop = 0, 0, False
    if explicit_hold is not None:
        stop = evaluate_holdout(0)
    while step < total and not stop:
        epoch += 1
        for i, (x, y) in enumerate(
            batches(data, where=where, need_targets=True, model=model, progress=progress, total=n_batches)
        ):
            if i < k_hold:
                if epoch == 1:
                    held.append((x.detach().clone(), y.detach().clone()))
                    if i == k_hold - 1:
                        stop = evaluate_holdout(0)
                continue
            if stop or step >= total:
                break
            lr = lr_at(step, total, lr=spec.lr, lr_min=spec.lr_min, warmup_steps=warm)
            for g in optimizer.param_groups:
                g["lr"] = lr
            before = snapshot()
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y.to(logits.device))
            bad = None if torch.isfinite(loss) else f"the loss is {float(loss.detach())}"
            if bad is None:
                optimizer.zero_grad(set_to_none=True)
                for p in params:
                    p.grad = None
                loss.backward()
                for v, p, c in zip(opt_vars, params, scales):
                    if c is not None:
                        v.grad = None if p.grad is None else p.grad * c
                grads = [v.grad for v in opt_vars if v.grad is not None]
                if spec.clip_grad is not None:
                    norm = torch.nn.utils.clip_grad_norm_(opt_vars, spec.clip_grad)
                else:
                    norm = (
                        torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])) if grads else torch.zeros(())
                    )
                if not torch.isfinite(norm):
                    bad = f"the gradient norm is {float(norm)}"
            if bad is not None:
                restore(before)
                raise NonFiniteLossError(
                    f"{where}: {bad} at step {step + 1} (epoch {epoch}, batch {i}, lr {lr:.3g}); training stopped and "
                    "the tuned tensors were restored to their state before that step (the error's .model). "
                    "Check that batch for NaN/Inf inputs, or lower lr / set clip_grad",
                    step=step + 1,
                    epoch=epoch,
                    batch=i,
                    model=model,
                )
            optimizer.step()
            with torch.no_grad():
                for v, p, c in zip(opt_vars, params, scales):
                    if c is not None:
                        p.copy_(v * c)
            if after_step is not None:
                after_step()
                with torch.no_grad():
                    for v, p, c in zip(opt_vars, params, scales):
                        if c is not None:
                            v.copy_(p / c)
            step += 1
            report.losses.append(float(loss.detach()))
            if has_hold and (step % eval_every == 0 or step == total):
                stop = evaluate_holdout(step)
                report.stopped_early = stop and step < total
    report.steps = step
    if has_hold and best[2] is not None:
        restore(best[2])
        report.best_step = best[1]
    return report
