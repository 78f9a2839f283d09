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
size — moves ``p`` by about ``η·c``. The stages set that up before calling :func:`fine_tune`, which trains
whatever tensors it is given: Stage 2 uses ``c = θ_pre`` for ``Δb`` (``Δb = 0`` stays exactly 0) through
:mod:`torch.nn.utils.parametrize`, Stage 1 uses ``c = θ`` for the thresholds (``z = 1`` gives ``θ`` back
exactly; see :mod:`fxsnn.calibration.stage1`).
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
from torch.optim.lr_scheduler import LRScheduler

from ..errors import CalibrationError, DataError
from . import distributed
from .batches import batches, check_targets, run_batch
from .config import TrainSpec
from .measure import head, measure
from .state import preserved_state

__all__ = [
    "NonFiniteLossError",
    "TrainReport",
    "TrainSpec",
    "WarmupCosine",
    "fine_tune",
    "lr_at",
    "count_batches",
    "check_reiterable",
    "check_trainable_dtype",
]


class NonFiniteLossError(CalibrationError):
    """The loss, a gradient, a trained tensor after an optimizer step, or the held-out loss became NaN/Inf.

    Attributes: ``step`` (1-based optimizer step that failed; for a held-out evaluation, the step it followed),
    ``epoch``, ``batch`` (index within the pass; ``None`` for a held-out evaluation), and ``model``: the model
    being tuned, restored to its last finite state (before that step; the best evaluated state for a
    held-out failure) — it never holds a NaN/±Inf trained tensor.
    """

    def __init__(self, message: str, *, step: int, epoch: int | None, batch: int | None, model: nn.Module):
        super().__init__(message)
        self.step, self.epoch, self.batch, self.model = step, epoch, batch, model


@dataclass
class TrainReport:
    """What a fine-tuning run did: ``steps`` taken of ``planned_steps``, per-step training ``losses``,
    ``holdout`` as ``(step, loss)`` pairs, the ``best_step`` restored (``None`` without holdout), ``stopped_early``;
    for Stage 2, the execution ``mode`` it trained in and ``mode_reason`` (see
    :func:`fxsnn.calibration.stage2.training_mode`; ``None`` for Stage 1); ``epochs`` passes over the data begun
    of ``planned_epochs`` (``ceil(planned_steps / training batches per pass)``). The stages keep it, frozen, as a
    :class:`fxsnn.report.StageReport`."""

    steps: int = 0
    planned_steps: int = 0
    losses: list = field(default_factory=list)
    holdout: list = field(default_factory=list)
    best_step: int | None = None
    stopped_early: bool = False
    mode: str | None = None
    mode_reason: str | None = None
    epochs: int = 0
    planned_epochs: int = 0

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


def lr_at(step: int, total: int, *, lr: float, lr_min: float, warmup_steps: int) -> float:
    """η(step) of the linear warm-up + cosine schedule (module docstring), ``0 <= step < total``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(total - warmup_steps, 1)
    return lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / span))


class WarmupCosine(LRScheduler):
    """The warm-up + cosine schedule as a torch scheduler: at optimizer step ``s`` every group's rate is
    exactly :func:`lr_at` ``(s, total, ...)`` (the module docstring's η(s); ``LambdaLR`` would multiply a base
    rate by a factor, which can round differently). Call :meth:`step` after each ``optimizer.step()``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, total: int, lr: float, lr_min: float, warmup_steps: int):
        self.total, self.peak, self.floor, self.warmup_steps = total, lr, lr_min, warmup_steps
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        rate = lr_at(self.last_epoch, self.total, lr=self.peak, lr_min=self.floor, warmup_steps=self.warmup_steps)
        return [rate for _ in self.optimizer.param_groups]


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


def check_trainable_dtype(model: nn.Module, *, where: str) -> None:
    """Refuse float16 models up front: AdamW's ``eps`` (1e-8) underflows to 0 in float16, its state overflows, and
    the loss turns NaN after a few steps although the data is fine."""
    dtypes = {p.dtype for p in model.parameters()} | {b.dtype for b in model.buffers() if b.is_floating_point()}
    if torch.float16 in dtypes:
        raise DataError(
            f"{where} fine-tunes with AdamW, which does not work in float16 (its eps = 1e-8 underflows to 0 and its "
            "moment estimates overflow, so the loss becomes NaN whatever the data). Train in float32 "
            "(model.float() and float32 batches) or bfloat16, then cast the result with .half() if needed"
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


@dataclass(frozen=True)
class _Plan:
    """How a run uses the data: ``k_hold`` leading batches of each pass held out (or an ``explicit`` held-out
    iterable), ``total`` optimizer steps, ``warm`` of them warm-up, a held-out evaluation every ``eval_every``."""

    n_batches: int
    k_hold: int
    explicit: Iterable | None
    total: int
    warm: int
    eval_every: int

    @property
    def has_holdout(self) -> bool:
        return self.k_hold > 0 or self.explicit is not None

    @property
    def epochs(self) -> int:
        """Passes over the data the ``total`` steps take (the last one maybe partial)."""
        return -(-self.total // (self.n_batches - self.k_hold))


def _plan(spec: TrainSpec, data: Iterable, *, where: str) -> _Plan:
    n_batches = distributed.same_count(count_batches(data, where=where), what="batches per pass", where=where)
    explicit, k_hold = None, 0
    if spec.holdout is not None and not isinstance(spec.holdout, numbers.Real):
        explicit = spec.holdout
        check_reiterable(explicit, where=where + " (holdout)")
    elif spec.holdout is not None:
        h = spec.holdout
        k_hold = int(h) if h >= 1 else max(1, round(h * n_batches))
        if k_hold >= n_batches:
            raise DataError(f"{where}: holdout={h!r} leaves no training batch out of {n_batches}; lower holdout")
    per_epoch = n_batches - k_hold
    total = spec.steps if spec.steps is not None else spec.epochs * per_epoch
    warm = int(spec.warmup) if spec.warmup >= 1 else int(round(spec.warmup * total))
    eval_every = spec.eval_every or max(1, per_epoch // 4)
    return _Plan(n_batches, k_hold, explicit, total, min(warm, total), eval_every)


def _agreed(exc: NonFiniteLossError) -> NonFiniteLossError:
    """Mark ``exc`` as raised on every rank together (under a process group the loss, the gradients and the
    held-out loss it is decided from are global), so :func:`fxsnn.calibration.distributed.guard` does not report it
    to the other ranks as a failure of this one."""
    exc.agreed = distributed.active()
    return exc


class _Checkpoints:
    """Snapshots of the tuned tensors (``state()``) and the held-out early stop: best state kept, patience."""

    def __init__(self, model: nn.Module, state: Callable[[], dict], spec: TrainSpec, *, where: str, heads: dict):
        self.model, self.state, self.patience, self.where, self.heads = model, state, spec.patience, where, heads
        self.best = (math.inf, None, None)  # (loss, step, snapshot)
        self.bad_evals = 0

    def snapshot(self) -> dict:
        return {k: v.detach().clone() for k, v in self.state().items()}

    def restore(self, snap: dict) -> None:
        with torch.no_grad():
            for k, v in self.state().items():
                v.copy_(snap[k])

    def evaluate(self, held: list, step: int, report: TrainReport) -> bool:
        """Record the held-out loss at ``step`` (in eval mode); True when patience is exhausted."""
        with preserved_state(self.model):
            self.model.eval()
            loss = measure(
                self.model, held, where=self.where + " (holdout)", progress=False, distributed=True, **self.heads
            ).loss
        report.holdout.append((step, loss))
        if not math.isfinite(loss):
            self.restore_best(report)
            raise _agreed(
                NonFiniteLossError(
                    f"{self.where}: the held-out loss is {loss} at step {step}; training stopped and the tuned tensors "
                    "were restored to the best evaluated state (the error's .model; the starting state if none). Check the "
                    "held-out batches for inputs the network cannot handle, or lower lr / set clip_grad",
                    step=step,
                    epoch=None,
                    batch=None,
                    model=self.model,
                )
            )
        if loss < self.best[0]:
            self.best, self.bad_evals = (loss, step, self.snapshot()), 0
        else:
            self.bad_evals += 1
        return self.patience is not None and self.bad_evals >= self.patience

    def restore_best(self, report: TrainReport) -> None:
        if self.best[2] is not None:
            self.restore(self.best[2])
            report.best_step = self.best[1]


def _gradient_problem(params: list[Tensor], clip_grad: float | None) -> str | None:
    """Clip the gradients of ``params`` to ``clip_grad`` (2-norm) if given; a message if their norm is not finite."""
    grads = [v.grad for v in params if v.grad is not None]
    if clip_grad is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, clip_grad)
    else:
        norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])) if grads else torch.zeros(())
    return None if torch.isfinite(norm) else f"the gradient norm is {float(norm)}"


def _non_finite_tensor(state: dict) -> str | None:
    """The key and shape of the first tensor of ``state`` holding NaN/±Inf, or ``None``."""
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            return f"{k}, shape {tuple(v.shape)}"
    return None


class _Loop:
    """One fine-tuning run over ``data`` (see :func:`fine_tune`)."""

    def __init__(self, model, params, data, spec, *, where, state, after_backward, after_step, progress, heads):
        self.model, self.params, self.data, self.spec, self.where = model, params, data, spec, where
        self.pick, self.loss_of = head(heads["output"], heads["loss_fn"])
        self.default_loss = heads["loss_fn"] is None
        self.after_backward, self.after_step, self.progress = after_backward, after_step, progress
        self.plan = _plan(spec, data, where=where)
        self.optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
        self.schedule = WarmupCosine(
            self.optimizer, total=self.plan.total, lr=spec.lr, lr_min=spec.lr_min, warmup_steps=self.plan.warm
        )
        self.checkpoints = _Checkpoints(
            model, state or (lambda: dict(enumerate(params))), spec, where=where, heads=heads
        )
        self.report = TrainReport(planned_steps=self.plan.total, planned_epochs=self.plan.epochs)
        self.held: list = list(self.plan.explicit) if self.plan.explicit is not None else []
        self.step = 0

    def run(self) -> TrainReport:
        plan, epoch, stop = self.plan, 0, False
        if plan.explicit is not None:
            stop = self.checkpoints.evaluate(self.held, 0, self.report)
        while self.step < plan.total and not stop:
            epoch += 1
            stop = self._epoch(epoch)
        self.report.steps, self.report.epochs = self.step, epoch
        if plan.has_holdout:
            self.checkpoints.restore_best(self.report)
        distributed.broadcast_(self.checkpoints.state().values(), where=self.where)  # the same state on every rank
        return self.report

    def _epoch(self, epoch: int) -> bool:
        """One pass over the data; True when early stopping ends the run."""
        plan, stop = self.plan, False
        bar = batches(
            self.data,
            where=self.where,
            need_targets=True,
            model=self.model,
            progress=self.progress,
            total=plan.n_batches,
            desc=f"{self.where.rpartition('.')[2]} epoch {epoch} of {plan.epochs}",
        )
        for i, (x, y) in enumerate(bar):
            if i < plan.k_hold:
                if epoch == 1:
                    self.held.append((x.detach().clone(), y.detach().clone()))
                    stop = self.checkpoints.evaluate(self.held, 0, self.report) if i == plan.k_hold - 1 else stop
                continue
            if stop or self.step >= plan.total:
                break
            self.report.losses.append(self._train_step(x, y, epoch, i))
            self.step += 1
            if plan.has_holdout and (self.step % plan.eval_every == 0 or self.step == plan.total):
                stop = self.checkpoints.evaluate(self.held, self.step, self.report)
                self.report.stopped_early = stop and self.step < plan.total
        return stop

    def _train_step(self, x: Tensor, y: Tensor, epoch: int, i: int) -> float:
        """One optimizer step on ``(x, y)``; the training loss. Raises :class:`NonFiniteLossError`."""
        lr = self.optimizer.param_groups[0]["lr"]
        before = self.checkpoints.snapshot()
        logits = self.pick(run_batch(self.model, x, where=self.where, index=i))
        if self.default_loss:  # cross-entropy of class indices: checked, then the loss default_loss computes
            loss = F.cross_entropy(logits.float(), check_targets(logits, y, where=self.where, index=i))
        else:
            loss = self.loss_of(logits, y)
        bad = None if torch.isfinite(loss) else f"the loss is {float(loss.detach())}"
        if bad is None:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.after_backward is not None:
                self.after_backward()
        value = float(loss.detach())
        bad, value = distributed.reduce_step_(self.params, y.numel(), bad, value, where=self.where)
        if bad is None:
            bad = _gradient_problem(self.params, self.spec.clip_grad)
        if bad is not None:
            self._fail(before, bad, epoch, i, lr)
        self.optimizer.step()
        self.schedule.step()
        if self.after_step is not None:
            self.after_step()
        bad = _non_finite_tensor(self.checkpoints.state())
        if bad is not None:
            self._fail(before, f"the optimizer step made a trained tensor ({bad}) non-finite", epoch, i, lr)
        return value

    def _fail(self, before: dict, bad: str, epoch: int, i: int, lr: float) -> None:
        self.checkpoints.restore(before)
        raise _agreed(
            NonFiniteLossError(
                f"{self.where}: {bad} at step {self.step + 1} (epoch {epoch}, batch {i}, lr {lr:.3g}); training "
                "stopped and the tuned tensors were restored to their state before that step (the error's .model). "
                "Check that batch for NaN/Inf inputs, or lower lr / set clip_grad",
                step=self.step + 1,
                epoch=epoch,
                batch=i,
                model=self.model,
            )
        )


def fine_tune(
    model: nn.Module,
    params: Sequence[Tensor],
    data: Iterable,
    spec: TrainSpec,
    *,
    where: str,
    state: Callable[[], dict] | None = None,
    after_backward: Callable[[], None] | None = None,
    after_step: Callable[[], None] | None = None,
    progress: bool = True,
    loss_fn: Callable | None = None,
    output: Callable | None = None,
) -> TrainReport:
    """Minimise ``loss_fn`` (default: the cross-entropy) of ``model`` over ``data`` w.r.t. the leaf tensors ``params``.

    ``output`` picks the logits from the model's output and ``loss_fn(logits, target)`` gives a batch's mean loss
    (defaults and the held-out measure: :func:`fxsnn.calibration.measure.measure`). Trains in place.

    Returns a :class:`TrainReport`. The caller sets train/eval modes and ``requires_grad`` (and any
    reparameterisation: ``params`` are the tensors the optimizer holds). ``state()`` returns the tensors to
    snapshot for restoring (default: ``params``); ``after_backward()`` runs after each backward pass, before
    clipping (e.g. to map gradients onto the optimizer's variables); ``after_step()`` after each optimizer step
    (e.g. to write them back and clamp θ > 0).

    Under a ``torch.distributed`` process group ``data`` is this rank's shard (a DataLoader without a
    DistributedSampler gets a warning) and a step is one global step: the ranks' batches ``i`` form the global
    batch, the gradients and the loss are averaged over it (one all-reduce per step,
    :func:`fxsnn.calibration.distributed.reduce_step_`), every rank takes the same optimizer step, the schedule
    counts global steps, early stopping uses the global held-out loss, a non-finite loss on any rank raises
    :class:`NonFiniteLossError` on every rank, and the final state is broadcast from rank 0.
    """
    params = list(params)
    if not params:
        raise ValueError(f"{where}: nothing to train")
    distributed.check_sharded(data, where=where)
    check_trainable_dtype(model, where=where)
    with distributed.guard(where):
        return _Loop(
            model,
            params,
            data,
            spec,
            where=where,
            state=state,
            after_backward=after_backward,
            after_step=after_step,
            progress=progress,
            heads={"loss_fn": loss_fn, "output": output},
        ).run()
