"""``ConvertConfig``: every knob of :func:`fxsnn.convert`, validated when built (DESIGN convention 4)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

from .calibrate.stage1 import BN_MODES
from .calibrate.stage2 import PARAMETERIZATIONS, STAGE2_MODES
from .validation import check_positive_int

__all__ = ["ConvertConfig", "METHODS", "RECIPES", "OUTPUT_MODES", "auto_percentile"]

#: The ablation rows of the paper's Table 3 (plus FS-PC†), in pipeline order.
METHODS = ("fspc", "fspc_da", "spatial", "temporal", "full")
RECIPES = ("fxsnn", "paper")
OUTPUT_MODES = ("spike", "rate", "auto")


def _int_or_none(v, name, lo=1):
    if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo):
        raise ValueError(f"ConvertConfig: {name} must be None or an integer >= {lo}; got {v!r}")


def _pos(v, name, *, zero=False):
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and (v >= 0 if zero else v > 0)
    if not ok:
        raise ValueError(f"ConvertConfig: {name} must be a finite number {'>= 0' if zero else '> 0'}; got {v!r}")


@dataclass(frozen=True)
class ConvertConfig:
    """Every knob of :func:`fxsnn.convert`. Defaults are fxsnn's recipe, chosen by validation on a held-out
    part of the calibration data (``docs/results.md``); ``ConvertConfig.recipe("paper")`` is the paper's
    recipe as written (Appendix C).

    Front end (Algorithm 1, stages I-II):

    - ``theta_percentile``: θ per channel is this percentile of the ReLU output over the calibration data;
      ``"auto"``: ``100 − 4/T`` (96 at T = 1, 98 at T = 2, 99 at T = 4, 99.5 at T = 8: fewer levels want a
      tighter clip; see :func:`auto_percentile`); ``None``: the running max. Applies to ``spatial``,
      ``temporal`` and ``full``; ``fspc`` and ``fspc_da`` stay faithful to FS-PC (always the running max).
    - ``calibration_batches``: at most this many batches (from the start of the data) for θ recording and the
      DA error calibration (``None``: all). The stages always use all the data.
    - ``da_momentum``: α of the DA error calibration (Alg. 1 l. 11, 13).

    Stage 1, :func:`fxsnn.recalibrate_bn` (``spatial``, ``full``): ``s1_epochs`` (or exactly ``s1_steps``),
    ``s1_lr → s1_lr_min`` with ``s1_warmup``, ``s1_bn_mode`` (``"eval"`` or ``"train"``), ``s1_train_theta``,
    ``s1_theta_lr`` (``None``: ``s1_lr``), ``s1_restat_after``.

    Stage 2, :func:`fxsnn.tune_delta_b` (``temporal``, ``full``): ``s2_epochs`` (or exactly ``s2_steps``),
    ``s2_lr → s2_lr_min`` with ``s2_warmup``, ``s2_width`` (triangle half-width / θ_pre),
    ``s2_parameterization`` (``"relative"``: Δb = θ_pre·z, or ``"absolute"``), ``s2_clip_grad``,
    ``s2_holdout``, ``s2_patience``, ``s2_mode`` (``"auto"``, ``"rate"``, ``"spike"``).

    ``output_mode``: the execution mode of the returned network (``"auto"``: rate where exact, else spike).
    """

    theta_percentile: float | str | None = "auto"
    calibration_batches: int | None = 40
    da_momentum: float = 0.99
    s1_epochs: int = 3
    s1_steps: int | None = None
    s1_lr: float = 2e-2
    s1_lr_min: float = 1e-3
    s1_warmup: float = 0.1
    s1_bn_mode: str = "eval"
    s1_train_theta: bool = True
    s1_theta_lr: float | None = None
    s1_restat_after: bool = False
    s2_epochs: int = 1
    s2_steps: int | None = None
    s2_lr: float = 3e-2
    s2_lr_min: float = 0.0
    s2_warmup: float = 0.1
    s2_width: float = 0.5
    s2_parameterization: str = "relative"
    s2_clip_grad: float | None = 1.0
    s2_holdout: float | int | None = 0.1
    s2_patience: int | None = 3
    s2_mode: str = "auto"
    output_mode: str = "spike"

    def __post_init__(self):
        p = self.theta_percentile
        if not (p is None or p == "auto" or (isinstance(p, numbers.Real) and not isinstance(p, bool) and 0 < p <= 100)):
            raise ValueError(
                f"ConvertConfig: theta_percentile must be 'auto', None (running max) or in (0, 100]; got {p!r}"
            )
        _int_or_none(self.calibration_batches, "calibration_batches")
        if not (isinstance(self.da_momentum, numbers.Real) and 0 <= self.da_momentum < 1):
            raise ValueError(f"ConvertConfig: da_momentum must be in [0, 1); got {self.da_momentum!r}")
        for name in ("s1_epochs", "s2_epochs"):
            check_positive_int(getattr(self, name), name, where="ConvertConfig")
        for name in ("s1_steps", "s2_steps", "s2_patience"):
            _int_or_none(getattr(self, name), name)
        for name in ("s1_lr", "s2_lr", "s2_width"):
            _pos(getattr(self, name), name)
        for name in ("s1_lr_min", "s2_lr_min", "s1_warmup", "s2_warmup"):
            _pos(getattr(self, name), name, zero=True)
        if self.s1_lr_min > self.s1_lr or self.s2_lr_min > self.s2_lr:
            raise ValueError("ConvertConfig: s1_lr_min / s2_lr_min must not exceed s1_lr / s2_lr")
        if self.s1_theta_lr is not None:
            _pos(self.s1_theta_lr, "s1_theta_lr")
        if self.s2_clip_grad is not None:
            _pos(self.s2_clip_grad, "s2_clip_grad")
        h = self.s2_holdout
        if h is not None and not (
            isinstance(h, numbers.Real)
            and not isinstance(h, bool)
            and (0 < h < 1 or (h >= 1 and float(h).is_integer()))
        ):
            raise ValueError(
                f"ConvertConfig: s2_holdout must be None, a fraction in (0, 1) or a number of batches; got {h!r}"
            )
        for name, allowed in (
            ("s1_bn_mode", BN_MODES),
            ("s2_parameterization", PARAMETERIZATIONS),
            ("s2_mode", STAGE2_MODES),
            ("output_mode", OUTPUT_MODES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ConvertConfig: {name} must be one of {allowed}; got {getattr(self, name)!r}")
        if not isinstance(self.s1_train_theta, bool) or not isinstance(self.s1_restat_after, bool):
            raise ValueError("ConvertConfig: s1_train_theta and s1_restat_after must be True or False")

    @classmethod
    def recipe(cls, name: str = "fxsnn") -> ConvertConfig:
        """``"fxsnn"``: the defaults. ``"paper"``: the recipe as the paper writes it (Sec. 4.2-4.3, Alg. 2-3,
        Appendix C, CIFAR): running-max θ, BN in train mode while its affine terms are tuned, no θ training,
        one epoch per stage, Stage 1 at 1e-3 → 1e-4, Stage 2 at 2e-3 on Δb itself."""
        if name not in RECIPES:
            raise ValueError(f"ConvertConfig.recipe: unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
        if name == "paper":
            return cls(
                theta_percentile=None,
                s1_epochs=1,
                s1_lr=1e-3,
                s1_lr_min=1e-4,
                s1_bn_mode="train",
                s1_train_theta=False,
                s2_epochs=1,
                s2_lr=2e-3,
                s2_parameterization="absolute",
            )
        return cls()

    def replace(self, **changes) -> ConvertConfig:
        """A copy with ``changes``; an unknown name raises a TypeError listing the valid ones."""
        valid = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise TypeError(f"unknown convert option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}")
        return dataclasses.replace(self, **changes)


def auto_percentile(T: int) -> float:
    """``100 − 4/T``: the percentile of ``theta_percentile="auto"``.

    With ``T`` levels the quantisation step is ``θ/T``; clipping more of the tail buys a finer step, and
    the fewer the levels the more that pays. Chosen by validation on a held-out part of CIFAR-10's
    train_10k with ResNet-20 (front end and Stage 1 at T = 2, 4, 8; front end at T = 1, 16): 98 beat 99
    and 99.9 at T = 2, 99 beat 98, 98.5, 99.5 and 99.9 at T = 4, 99.5 beat 99.9 at T = 8.
    """
    return 100.0 - 4.0 / T
