"""What each stage of a conversion did: :class:`StageReport` (one stage) and :class:`StageReports` (a conversion).

:func:`fxsnn.convert` keeps a :class:`StageReports` in ``result.meta["fxsnn.convert"]["stages"]``: the front end,
Stage 1 and Stage 2 in order, each either run (with its numbers) or skipped (with the reason).
:func:`fxsnn.recalibrate_bn` and :func:`fxsnn.tune_delta_b` keep their own row in ``result.meta["fxsnn.stage1"]`` /
``["fxsnn.stage2"]``. Both print as a table (:class:`fxsnn.report.Rows`), are saved by :func:`fxsnn.save` as JSON
data and come back from :func:`fxsnn.load` / ``fxsnn inspect`` through :meth:`StageReports.from_json`, which checks
every value and builds nothing but these dataclasses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from .table import Rows

__all__ = ["StageReport", "StageReports", "FRONT_END", "STAGE1", "STAGE2", "train_window"]

FRONT_END, STAGE1, STAGE2 = "front end", "Stage 1", "Stage 2"

Pair = tuple[float, float]


def train_window(steps: int) -> int:
    """How many steps :attr:`StageReport.train_loss` averages at each end: a tenth of them, at least one."""
    return max(1, steps // 10)


def _mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


@dataclass(frozen=True)
class StageReport:
    """What one stage did. Fields that do not apply to the stage (or to a skipped stage) are ``None``.

    Attributes:
        stage: ``"front end"``, ``"Stage 1"`` or ``"Stage 2"``.
        ran: whether it ran; ``reason``: why not (``"the model has no BatchNorm layer"``, ...).
        seconds: wall time of the whole stage.
        batches: front end: batches θ was calibrated on; Stage 1: batches of the BatchNorm re-estimation (Eq. 10).
        theta_percentile: front end: the percentile θ is taken at (``None``: the running max).
        da_batches: front end: batches of the DA error calibration (Algorithm 1, stage II); ``None`` without DA.
        epochs, planned_epochs: passes over the data begun, of those planned (``ceil(planned_steps / per pass)``).
        steps, planned_steps: optimizer steps taken, of those planned.
        losses: the training loss of every step (the loss of the batch it was computed on, before the step).
        holdout: held-out ``(step, loss)`` pairs, step 0 measured before the first optimizer step.
        best_step: the evaluated step whose state was restored (``None`` without hold-out).
        stopped_early: whether patience ran out before ``planned_steps``.
        mode, mode_reason: Stage 2: the execution mode it trained in and why
            (:func:`fxsnn.calibration.stage2.training_mode`).
        note: anything else worth saying (e.g. that Stage 1 had no tensor to tune).
    """

    stage: str
    ran: bool = True
    reason: str | None = None
    seconds: float | None = None
    batches: int | None = None
    theta_percentile: float | None = None
    da_batches: int | None = None
    epochs: int | None = None
    planned_epochs: int | None = None
    steps: int | None = None
    planned_steps: int | None = None
    losses: tuple[float, ...] = field(default=(), repr=False)
    holdout: tuple[tuple[int, float], ...] = ()
    best_step: int | None = None
    stopped_early: bool | None = None
    mode: str | None = None
    mode_reason: str | None = None
    note: str | None = None

    # -- derived numbers ------------------------------------------------------------------------------------
    @property
    def train_loss(self) -> Pair | None:
        """``(start, end)``: the mean training loss of the first and of the last :func:`train_window` steps."""
        if not self.losses:
            return None
        k = train_window(len(self.losses))
        return _mean(self.losses[:k]), _mean(self.losses[-k:])

    @property
    def holdout_loss(self) -> Pair | None:
        """``(start, kept)``: the held-out loss at step 0 and that of the state kept (restored) at the end."""
        if not self.holdout:
            return None
        kept = next((loss for step, loss in self.holdout if step == self.best_step), min(h for _, h in self.holdout))
        return self.holdout[0][1], kept

    @property
    def kept_start(self) -> bool | None:
        """Whether early stopping threw the training away: the state of step 0 (before any step) was kept."""
        return None if self.best_step is None else self.best_step == 0

    # -- printed cells --------------------------------------------------------------------------------------
    @property
    def status(self) -> str:
        return "ran" if self.ran else "skipped"

    @property
    def data(self) -> str | None:
        """The front end's and Stage 1's data passes, in words."""
        if self.stage == FRONT_END and self.ran:
            theta = "running max" if self.theta_percentile is None else f"{self.theta_percentile:g}th percentile"
            da = f"; DA: {self.da_batches} batches" if self.da_batches is not None else "; no DA"
            return f"θ ({theta}): {self.batches} batches{da}"
        if self.batches is not None:
            return f"BN statistics: {self.batches} batches"
        return None

    @property
    def epochs_cell(self) -> str | None:
        return None if self.epochs is None else f"{self.epochs} of {self.planned_epochs}"

    @property
    def steps_cell(self) -> str | None:
        return None if self.steps is None else f"{self.steps} of {self.planned_steps}"

    @property
    def train_cell(self) -> str | None:
        pair = self.train_loss
        return None if pair is None else f"{pair[0]:.4f} → {pair[1]:.4f}"

    @property
    def holdout_cell(self) -> str | None:
        pair = self.holdout_loss
        return None if pair is None else f"{pair[0]:.4f} → {pair[1]:.4f}"

    @property
    def early_stop(self) -> str | None:
        """``kept step 0`` (training discarded), ``restored step k`` (a better earlier state), ``kept the last step``."""
        if self.best_step is None:
            return None
        stopped = f"stopped at step {self.steps}, " if self.stopped_early else ""
        if self.best_step == 0:
            return stopped + "kept step 0 (training discarded)"
        if self.best_step == self.steps:
            return stopped + f"kept the last step ({self.steps})"
        return stopped + f"restored step {self.best_step}"

    @property
    def remark(self) -> str | None:
        if not self.ran:
            return self.reason
        if self.mode is not None:  # the reason is in mode_reason
            return f"trained in {self.mode} mode" if self.note is None else f"trained in {self.mode} mode; {self.note}"
        return self.note

    def __str__(self) -> str:
        return str(StageReports([self]))

    # -- building -------------------------------------------------------------------------------------------
    @classmethod
    def skipped(cls, stage: str, reason: str) -> StageReport:
        """The row of a stage that did not run."""
        return cls(stage, ran=False, reason=reason)

    @classmethod
    def from_training(cls, stage: str, train: Any, *, seconds: float, **extra: Any) -> StageReport:
        """The row of a stage from its fine-tuning run (a :class:`fxsnn.calibration.finetune.TrainReport`)."""
        return cls(
            stage,
            seconds=float(seconds),
            epochs=train.epochs,
            planned_epochs=train.planned_epochs,
            steps=train.steps,
            planned_steps=train.planned_steps,
            losses=tuple(float(x) for x in train.losses),
            holdout=tuple((int(s), float(h)) for s, h in train.holdout),
            best_step=train.best_step,
            stopped_early=bool(train.stopped_early),
            mode=train.mode,
            mode_reason=train.mode_reason,
            **extra,
        )


_HEADERS = {
    "stage": "stage",
    "status": "ran",
    "data": "data",
    "epochs_cell": "epochs",
    "steps_cell": "steps",
    "train_cell": "train loss (start → end)",
    "holdout_cell": "held-out loss (start → kept)",
    "early_stop": "early stopping",
    "seconds": "seconds",
    "remark": "note",
}


class StageReports(Rows):
    """The :class:`StageReport` of every stage of a conversion, in order; prints as one table.

    Columns that are empty in every row are not printed. ``report["Stage 2"]`` (or ``report[2]``) picks a row.
    """

    headers = _HEADERS

    def __new__(cls, rows: Iterable[StageReport] = ()) -> StageReports:
        return super().__new__(cls, rows)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            for r in self:
                if r.stage == key:
                    return r
            raise KeyError(f"no stage {key!r}; the stages are {[r.stage for r in self]}")
        return super().__getitem__(key)

    def table(self, tablefmt: str = "simple") -> str:
        cols = {c: h for c, h in self.headers.items() if c == "stage" or any(getattr(r, c) is not None for r in self)}
        return Rows(self, cols).table(tablefmt)

    def __str__(self) -> str:
        return self.table()

    @classmethod
    def from_json(cls, rows: Any) -> StageReports:
        """Rows read back from JSON data (:func:`fxsnn.save`'s record), every value checked; ``ValueError`` if bad."""
        if not isinstance(rows, list) or len(rows) > 16:
            raise ValueError("the stage report must be a list of at most 16 rows")
        return cls(row_from_json(r) for r in rows)


# -- reading JSON data back (nothing but checked values) -----------------------------------------------------
_MAX_TEXT = 2000
_MAX_STEPS = 10**9


def _text(v: Any, key: str, optional: bool = True) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str) or len(v) > _MAX_TEXT:
        raise ValueError(f"{key} must be a string of at most {_MAX_TEXT} characters; got {v!r:.60}")
    return v


def _count(v: Any, key: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= _MAX_STEPS:
        raise ValueError(f"{key} must be an integer in [0, {_MAX_STEPS}]; got {v!r:.60}")
    return v


def _real(v: Any, key: str, optional: bool = True) -> float | None:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{key} must be a finite number; got {v!r:.60}")
    return float(v)


def _flag(v: Any, key: str, optional: bool = True) -> bool | None:
    if (v is None and optional) or isinstance(v, bool):
        return v
    raise ValueError(f"{key} must be true, false or null; got {v!r:.60}")


def _losses(v: Any, key: str) -> tuple[float, ...]:
    if not isinstance(v, list) or len(v) > 10**6:
        raise ValueError(f"{key} must be a list of numbers")
    return tuple(_real(x, key, optional=False) for x in v)


def _pairs(v: Any, key: str) -> tuple[tuple[int, float], ...]:
    if not isinstance(v, list) or len(v) > 10**6:
        raise ValueError(f"{key} must be a list of [step, loss] pairs")
    out = []
    for p in v:
        if not isinstance(p, list) or len(p) != 2 or p[0] is None:
            raise ValueError(f"{key} must be a list of [step, loss] pairs; got {p!r:.60}")
        out.append((_count(p[0], key), _real(p[1], key, optional=False)))
    return tuple(out)


_READERS = {
    "stage": lambda v, k: _text(v, k, optional=False),
    "ran": lambda v, k: _flag(v, k, optional=False),
    "reason": _text,
    "seconds": _real,
    "batches": _count,
    "theta_percentile": _real,
    "da_batches": _count,
    "epochs": _count,
    "planned_epochs": _count,
    "steps": _count,
    "planned_steps": _count,
    "losses": _losses,
    "holdout": _pairs,
    "best_step": _count,
    "stopped_early": _flag,
    "mode": _text,
    "mode_reason": _text,
    "note": _text,
}


def row_from_json(row: Any) -> StageReport:
    """One :class:`StageReport` from its JSON dict (every field present, every value checked); ``ValueError`` if bad."""
    names = [f.name for f in fields(StageReport)]
    if not isinstance(row, dict) or set(row) != set(names):
        raise ValueError(f"a stage report row must be an object with exactly the fields {names}")
    return StageReport(**{k: _READERS[k](row[k], f"stage report {k}") for k in names})
