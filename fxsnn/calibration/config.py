"""One frozen config per stage: :class:`TrainSpec` (the fine-tuning loop), :class:`Stage1Config`, :class:`Stage2Config`.

Each knob is declared once, here; :func:`fxsnn.recalibrate_bn`, :func:`fxsnn.tune_delta_b` and
:class:`fxsnn.ConvertConfig` (``stage1=``, ``stage2=``) take these objects. The defaults are fxsnn's validated
recipe, the ones :func:`fxsnn.convert` uses. Override nested fields with dotted keys
(``Stage1Config().replace(**{"train.lr": 0.01})``, or ``"epochs"`` for ``"train.epochs"``; see
:class:`fxsnn.validation.Config`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

from ..validation import (
    Config,
    ConfigError,
    a_bool,
    fraction_or_count,
    instance_of,
    one_of,
    positive_float,
    positive_int,
)

__all__ = [
    "TrainSpec",
    "Stage1Config",
    "Stage2Config",
    "BN_MODES",
    "SURROGATES",
    "PARAMETERIZATIONS",
    "STAGE2_MODES",
    "OBJECTIVES",
    "distill_share",
    "mixes_labels",
]

BN_MODES = ("eval", "train")
SURROGATES = ("triangle", "ste")
#: What a stage minimises: ``"labels"`` (cross-entropy against the targets) or ``"distill"`` (KL divergence
#: to the ANN's own logits, :mod:`fxsnn.calibration.distill`; no targets needed).
OBJECTIVES = ("labels", "distill")
PARAMETERIZATIONS = ("relative", "absolute")
STAGE2_MODES = ("auto", "rate", "spike")


def _check_holdout(cfg) -> None:
    h = cfg.holdout
    if h is None or (not isinstance(h, (bool, numbers.Real, str, bytes)) and hasattr(h, "__iter__")):
        return  # None, or an iterable of batches
    try:
        fraction_or_count(cfg, "holdout", what="a number of batches >= 1")
    except ConfigError as exc:
        raise ConfigError(
            exc.owner,
            "holdout",
            "must be None, a fraction in (0, 1), a number of batches >= 1, or an iterable of (input, target) batches",
            h,
        ) from None


def distill_share(cfg: Stage1Config | Stage2Config) -> float:
    """The share of a stage config's loss that is distillation from the ANN: 1 for ``objective="distill"``,
    ``distill_weight`` for ``objective="labels"`` (0: no teacher needed)."""
    return 1.0 if cfg.objective == "distill" else float(cfg.distill_weight)


def mixes_labels(cfg: Stage1Config | Stage2Config) -> bool:
    """Whether a stage config mixes distillation into its labelled loss (``objective="labels"``, α > 0)."""
    return cfg.objective == "labels" and cfg.distill_weight > 0


def _check_objective(cfg) -> None:
    """``objective``, ``temperature``, ``feature_weight`` (which needs the ANN, so ``objective="distill"``) and
    ``distill_weight`` (a fraction in [0, 1]: the ANN's share of ``objective="labels"``)."""
    one_of(cfg, "objective", OBJECTIVES)
    positive_float(cfg, "temperature")
    positive_float(cfg, "feature_weight", zero=True)
    if cfg.feature_weight > 0 and cfg.objective != "distill":
        raise ConfigError(
            type(cfg).__name__,
            "feature_weight",
            "must be 0 unless objective='distill' (feature matching compares each site with the ANN's activation; "
            "set objective='distill' too)",
            cfg.feature_weight,
        )
    positive_float(cfg, "distill_weight", zero=True, at_most=1.0)


@dataclass(frozen=True)
class TrainSpec(Config):
    """Hyper-parameters of one fine-tuning run (:func:`fxsnn.calibration.finetune.fine_tune`; math there).

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
        positive_int(self, "epochs")
        positive_int(self, "steps", optional=True)
        positive_float(self, "lr")
        positive_float(self, "lr_min", zero=True, at_most=self.lr if isinstance(self.lr, (int, float)) else None)
        fraction_or_count(self, "warmup", zero=True, what="a whole number of steps")
        positive_float(self, "clip_grad", optional=True)
        _check_holdout(self)
        positive_int(self, "patience", optional=True)
        positive_int(self, "eval_every", optional=True)


def _stage1_train() -> TrainSpec:
    return TrainSpec(epochs=2, lr=2e-2, lr_min=1e-3, warmup=0.1)


@dataclass(frozen=True)
class Stage1Config(Config):
    """Stage 1, :func:`fxsnn.recalibrate_bn` (Algorithm 2). Defaults: fxsnn's recipe (``docs/results.md``), but
    for ``distill_weight``, 0 here (a direct call has no teacher unless given one) and 0.5 in
    :class:`fxsnn.ConvertConfig`'s default ``stage1`` (:data:`fxsnn.config.DISTILL_WEIGHT`; convert builds the
    teacher).

    - ``train``: the fine-tuning run (two epochs, AdamW ``2e-2 → 1e-3``, 10 % warm-up; no clipping, no hold-out);
    - ``bn_mode``: ``"eval"`` keeps BN on the Eq. 10 statistics while tuning (the network tuned is the network
      deployed), ``"train"`` is Algorithm 2 as written (batch statistics, running statistics updated);
    - ``train_theta``: also tune each site's θ (relative to its start, kept ≥ 1 % of it); off by default: the
      threshold direction is Stage 2's (its Δb shifts the effective threshold θ − Δb), and training it here left
      Stage 2 nothing to improve at no gain in validation accuracy (``docs/results.md``);
      ``theta_lr``: θ's learning rate (``None``: ``train.lr``);
    - ``train_da``: also tune each DA-QCFS site's ψ_DA, φ_DA (Eq. 4), in units of θ;
    - ``train_weights``: also tune every other parameter (the convolution and linear weights and biases) with
      Adam steps of ``weight_lr`` (default ``1e-3``, times the schedule's factor) — beyond Algorithm 2, which
      tunes only γ, β (the paper's recipe keeps it off);
    - ``stat_batches``: Eq. 10's statistics are accumulated over at most this many batches from the start of the
      data (``None``: all of them); the fine-tuning always uses all the data;
    - ``restat_after``: re-estimate the BN statistics (Eq. 10) once more after tuning;
    - ``objective``: ``"labels"`` minimises the cross-entropy against the batches' targets; ``"distill"`` the
      KL divergence ``τ²·KL(softmax(z_ANN/τ) ‖ softmax(z/τ))`` to the ANN's logits ``z_ANN`` at
      ``temperature`` τ (:mod:`fxsnn.calibration.distill`): input-only batches suffice; τ = 4 by default
      (on validation it beat τ = 1 at T = 2, 4 and 8, ``docs/results.md``);
    - ``feature_weight``: λ ≥ 0; with ``objective="distill"`` and λ > 0 the loss adds λ times the mean over the
      sites of each site's squared error to the ANN's activation there, relative to its energy
      (:mod:`fxsnn.calibration.features`); 0 (the default) is the KL alone;
    - ``distill_weight``: α in [0, 1]; with ``objective="labels"`` and α > 0 the loss is
      ``(1 − α)·CE(z, y) + α·τ²·KL(softmax(z_ANN/τ) ‖ softmax(z/τ))`` (:func:`fxsnn.calibration.distill.mixed_loss`),
      the teacher being :attr:`fxsnn.ConvertConfig.teacher`; 0 is the cross-entropy alone. ``objective="distill"``
      is the distillation alone and ignores it.
    """

    _shorthand = "train"

    train: TrainSpec = field(default_factory=_stage1_train)
    bn_mode: str = "eval"
    train_theta: bool = False
    theta_lr: float | None = None
    train_da: bool = False
    train_weights: bool = True
    weight_lr: float = 1e-3
    stat_batches: int | None = None
    restat_after: bool = False
    objective: str = "labels"
    temperature: float = 4.0
    feature_weight: float = 0.0
    distill_weight: float = 0.0

    def __post_init__(self):
        instance_of(self, "train", TrainSpec)
        one_of(self, "bn_mode", BN_MODES)
        positive_int(self, "stat_batches", optional=True)
        a_bool(self, "train_theta")
        positive_float(self, "theta_lr", optional=True)
        a_bool(self, "train_da")
        a_bool(self, "train_weights")
        positive_float(self, "weight_lr")
        a_bool(self, "restat_after")
        _check_objective(self)


def _stage2_train() -> TrainSpec:
    return TrainSpec(epochs=1, lr=3e-3, lr_min=0.0, warmup=0.1, clip_grad=1.0, holdout=0.1, patience=3)


@dataclass(frozen=True)
class Stage2Config(Config):
    """Stage 2, :func:`fxsnn.tune_delta_b` (Algorithm 3). Defaults: fxsnn's recipe (``docs/results.md``).

    - ``train``: the fine-tuning run of Δb (one epoch, AdamW ``3e-3 → 0``, 10 % warm-up, gradient norm clipped
      at 1, early stopping on 10 % of the batches held out with patience 3);
    - ``surrogate``: ``"ste"``, the straight-through estimator of the count (the default), or ``"triangle"``,
      the surrogate of Appendix C with half-width ``width`` as a fraction of θ_pre (the paper's recipe);
    - ``parameterization``: ``"relative"`` trains ``Δb = θ_pre ⊙ z``, ``"absolute"`` Δb itself (the paper);
    - ``mode``: the execution mode trained in: ``"auto"`` (rate where exact), ``"rate"`` or ``"spike"``;
    - ``objective``, ``temperature``, ``feature_weight``, ``distill_weight``: as in :class:`Stage1Config`
      (``"labels"`` or ``"distill"``, τ, the feature-matching weight λ, the distillation share α of a labelled
      loss).
    """

    _shorthand = "train"

    train: TrainSpec = field(default_factory=_stage2_train)
    width: float = 0.5
    surrogate: str = "ste"
    parameterization: str = "relative"
    mode: str = "auto"
    objective: str = "labels"
    temperature: float = 4.0
    feature_weight: float = 0.0
    distill_weight: float = 0.0

    def __post_init__(self):
        instance_of(self, "train", TrainSpec)
        positive_float(self, "width")
        one_of(self, "surrogate", SURROGATES)
        one_of(self, "parameterization", PARAMETERIZATIONS)
        one_of(self, "mode", STAGE2_MODES)
        _check_objective(self)
