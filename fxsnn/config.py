"""``ConvertConfig``: every knob of :func:`fxsnn.convert`, validated when built (DESIGN convention 4).

The front end's knobs are fields here; each stage's are its own config (:class:`~fxsnn.calibration.config.Stage1Config`,
:class:`~fxsnn.calibration.config.Stage2Config`, each holding one :class:`~fxsnn.calibration.config.TrainSpec`).
The recipes are named constants: :data:`FXSNN` (the defaults) and :data:`PAPER`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

from .calibration.config import Stage1Config, Stage2Config, TrainSpec, distill_share, mixes_labels
from .validation import Config, ConfigError, instance_of, one_of, positive_int

__all__ = [
    "ConvertConfig",
    "METHODS",
    "RECIPES",
    "FXSNN",
    "PAPER",
    "OUTPUT_MODES",
    "TEACHERS",
    "DISTILL_WEIGHT",
    "auto_percentile",
]

#: The ablation rows of the paper's Table 3 (plus FS-PC†), in pipeline order.
METHODS = ("fspc", "fspc_da", "spatial", "temporal", "full")
#: The methods that run each fine-tuning stage: Stage 1 (:func:`fxsnn.recalibrate_bn`), Stage 2
#: (:func:`fxsnn.tune_delta_b`); ``fspc`` and ``fspc_da`` train nothing.
STAGE1_METHODS, STAGE2_METHODS = ("spatial", "full"), ("temporal", "full")
OUTPUT_MODES = ("spike", "rate", "auto")
#: The ANN a distilling stage distils from: ``"auto"`` (``"labels"`` when a stage mixes distillation into a
#: labelled loss, else ``"im"``), the model as given, a copy with its BN statistics re-estimated on the
#: calibration data (Eq. 10), a copy with its BN affine terms adapted to the calibration images by information
#: maximisation (:func:`fxsnn.calibration.distill.im_adapted_teacher`), or with the labels (Stage 1 on the ANN).
TEACHERS = ("auto", "model", "adapted", "im", "labels")
#: ``stage1.distill_weight`` of convert's defaults: half of Stage 1's labelled loss is the distillation from the
#: ``"labels"`` teacher (``docs/results.md``). :class:`~fxsnn.calibration.config.Stage1Config` alone defaults to 0:
#: :func:`fxsnn.recalibrate_bn` called directly has no teacher unless given one.
DISTILL_WEIGHT = 0.5


def _check_percentile(cfg) -> None:
    p = cfg.theta_percentile
    if not (p is None or p == "auto" or (isinstance(p, numbers.Real) and not isinstance(p, bool) and 0 < p <= 100)):
        raise ConfigError(
            type(cfg).__name__, "theta_percentile", "must be 'auto', None (running max) or in (0, 100]", p
        )


def _check_momentum(cfg) -> None:
    m = cfg.da_momentum
    if not (isinstance(m, numbers.Real) and not isinstance(m, bool) and 0 <= m < 1):
        raise ConfigError(type(cfg).__name__, "da_momentum", "must be in [0, 1)", m)


@dataclass(frozen=True)
class ConvertConfig(Config):
    """Every knob of :func:`fxsnn.convert`. Defaults are fxsnn's recipe, chosen by validation on a held-out
    part of the calibration data (``docs/results.md``); ``ConvertConfig.recipe("paper")`` is the paper's
    recipe as written (Appendix C).

    Front end (Algorithm 1, stages I-II; :func:`fxsnn.front_end`):

    - ``theta_percentile``: θ per channel is this percentile of the ReLU output over the calibration data;
      ``"auto"``: ``100 − 2/T`` (98 at T = 1, 99 at T = 2, 99.5 at T = 4, 99.75 at T = 8: fewer levels want a
      tighter clip; see :func:`auto_percentile`); ``None``: the running max. Applies to ``spatial``,
      ``temporal`` and ``full``; ``fspc`` and ``fspc_da`` stay faithful to FS-PC (always the running max).
    - ``calibration_batches``: at most this many batches (from the start of the data) for θ recording and the
      DA error calibration (``None``: all). The stages always use all the data.
    - ``da_momentum``: α of the DA error calibration (Alg. 1 l. 11, 13).

    ``stage1``: :class:`~fxsnn.calibration.config.Stage1Config` of :func:`fxsnn.recalibrate_bn` (``spatial``,
    ``full``), by default its own defaults with ``distill_weight`` = :data:`DISTILL_WEIGHT` (0.5: half the loss
    is the distillation from the ``teacher``; a ``Stage1Config`` of your own carries its own ``distill_weight``, 0
    unless you set it, whereas ``override("stage1.<key>=...")`` keeps the default's 0.5); ``stage2``:
    :class:`~fxsnn.calibration.config.Stage2Config` of :func:`fxsnn.tune_delta_b` (``temporal``, ``full``). ``output_mode``: the execution mode of the returned network (``"auto"``: rate
    where exact, else spike).

    ``teacher``: the ANN a stage with ``objective="distill"`` or ``distill_weight > 0`` distils from
    (:mod:`fxsnn.calibration.distill`). ``"auto"`` (the default) is ``"labels"`` when a stage that runs mixes
    distillation into the labelled loss (``objective="labels"``, ``distill_weight > 0``), else ``"im"``.
    ``"labels"``: a copy adapted with the labels, Stage 1 run on the ANN with the BatchNorm affine terms only
    (:func:`fxsnn.recalibrate_bn` with ``train_weights=False``: statistics re-estimated, then γ, β tuned for one
    epoch of ``stage1.train``'s schedule, 2e-2 → 1e-3 by default); ``"im"``, a copy whose BatchNorm affine terms are adapted to
    the calibration images without labels (one epoch of information maximisation, SHOT's loss:
    :func:`fxsnn.calibration.distill.im_adapted_teacher`); ``"adapted"``, a copy whose BatchNorm statistics are
    re-estimated on the calibration data (Eq. 10, one pass; :func:`fxsnn.calibration.reestimate_bn_stats`), as
    the converted network's are in Stage 1; or ``"model"``, the model being converted (a frozen eval-mode copy).
    A model without BatchNorm is its own teacher under every choice; ``"im"`` on BatchNorm layers without
    affine terms falls back to ``"adapted"``, with a warning. On validation at T = 4 (ResNet-20, τ = 1, the
    previous θ percentile; ``docs/results.md``) the label-free conversion came within 0.2 points of the labelled
    one with the ``"im"`` teacher, 0.6 with ``"adapted"`` and 2.65 with ``"model"``; with ``"im"`` and the default
    τ = 4 it scored 71.30 / 84.40 / 87.10 % at T = 2 / 4 / 8 against 69.45 / 84.15 / 88.10 % with labels and
    the cross-entropy alone; the labelled default since, Stage 1 distilling from ``"labels"`` with α = 0.5, scored
    73.30 / 84.20 / 89.05 % (another session: 69.50 / 83.90 / 88.55 % without it).
    ``teacher_train``: the ``"im"`` teacher's fine-tuning run (:class:`~fxsnn.calibration.config.TrainSpec`; one
    epoch at 1e-3).

    Override any field, nested ones by dotted key (:class:`fxsnn.validation.Config`)::

        >>> cfg = ConvertConfig.recipe("paper").override("stage1.epochs=1", "stage2.train.lr=0.01")
        >>> cfg = ConvertConfig().replace(**{"stage1.train_theta": False})
    """

    theta_percentile: float | str | None = "auto"
    calibration_batches: int | None = 20
    da_momentum: float = 0.99
    output_mode: str = "spike"
    teacher: str = "auto"
    teacher_train: TrainSpec = field(default_factory=lambda: TrainSpec(epochs=1, lr=1e-3))
    stage1: Stage1Config = field(default_factory=lambda: Stage1Config(distill_weight=DISTILL_WEIGHT))
    stage2: Stage2Config = field(default_factory=Stage2Config)

    def __post_init__(self):
        _check_percentile(self)
        positive_int(self, "calibration_batches", optional=True)
        _check_momentum(self)
        one_of(self, "output_mode", OUTPUT_MODES)
        one_of(self, "teacher", TEACHERS)
        instance_of(self, "teacher_train", TrainSpec)
        instance_of(self, "stage1", Stage1Config)
        instance_of(self, "stage2", Stage2Config)

    def tuning_stages(self, method: str) -> list[Stage1Config | Stage2Config]:
        """The config of each fine-tuning stage ``method`` runs: :attr:`stage1` for ``spatial`` / ``full``,
        :attr:`stage2` for ``temporal`` / ``full`` (none for ``fspc`` / ``fspc_da``, which train nothing)."""
        return [c for c, runs in ((self.stage1, STAGE1_METHODS), (self.stage2, STAGE2_METHODS)) if method in runs]

    def objectives(self, method: str) -> set[str]:
        """The ``objective`` of each fine-tuning stage ``method`` runs (:meth:`tuning_stages`)."""
        return {c.objective for c in self.tuning_stages(method)}

    def distils(self, method: str) -> bool:
        """Whether a fine-tuning stage of ``method`` needs a teacher (``objective="distill"`` or
        ``distill_weight > 0``)."""
        return any(distill_share(c) > 0 for c in self.tuning_stages(method))

    def teacher_choice(self, method: str) -> str:
        """:attr:`teacher` with ``"auto"`` resolved for ``method``: ``"labels"`` when one of its stages mixes
        distillation into a labelled loss, else ``"im"``."""
        if self.teacher != "auto":
            return self.teacher
        return "labels" if any(mixes_labels(c) for c in self.tuning_stages(method)) else "im"

    def teacher_spec(self, choice: str) -> TrainSpec:
        """The fine-tuning run that builds teacher ``choice``: one epoch of :attr:`stage1`'s schedule for
        ``"labels"``, :attr:`teacher_train` otherwise (the ``"im"`` teacher's; the other choices train nothing)."""
        return self.stage1.train.replace(epochs=1, steps=None) if choice == "labels" else self.teacher_train

    @classmethod
    def recipe(cls, name: str = "fxsnn") -> ConvertConfig:
        """The named recipe (:data:`RECIPES`): ``"fxsnn"`` (:data:`FXSNN`) or ``"paper"`` (:data:`PAPER`)."""
        if name not in RECIPES:
            raise ValueError(f"ConvertConfig.recipe: unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
        return RECIPES[name]


#: fxsnn's recipe: the defaults.
FXSNN = ConvertConfig()

#: The recipe as the paper writes it (Sec. 4.2-4.3, Alg. 2-3, Appendix C, CIFAR): running-max θ, BN in train
#: mode while only its affine terms are tuned (no θ, no weights), one epoch per stage, Stage 1 at 1e-3 → 1e-4,
#: Stage 2 at 2e-3 on Δb itself with the triangle surrogate; 40 calibration batches for the front end.
PAPER = ConvertConfig(
    theta_percentile=None,
    calibration_batches=40,
    stage1=Stage1Config(
        train=TrainSpec(epochs=1, lr=1e-3, lr_min=1e-4, warmup=0.1),
        bn_mode="train",
        train_theta=False,
        train_weights=False,
    ),
    stage2=Stage2Config(
        train=TrainSpec(epochs=1, lr=2e-3, lr_min=0.0, warmup=0.1, clip_grad=1.0, holdout=0.1, patience=3),
        parameterization="absolute",
        surrogate="triangle",
    ),
)

#: The recipes by name (``ConvertConfig.recipe(name)``, the CLI's ``--recipe``).
RECIPES = {"fxsnn": FXSNN, "paper": PAPER}


def auto_percentile(T: int) -> float:
    """``100 − 2/T``: the percentile of ``theta_percentile="auto"``.

    With ``T`` levels the quantisation step is ``θ/T``; clipping more of the tail buys a finer step, and
    the fewer the levels the more that pays. Chosen by validation on a held-out part of CIFAR-10's train_10k
    with ResNet-20 and method ``full`` at fxsnn's defaults (``docs/results.md``, "θ's percentile"; two seeds at
    T = 2 and 4): at T = 4, 99.5 beat 99 with both seeds and 99.75, 99.9 with one; at T = 2, 98, 99 and 99.5
    were within the noise and 99.75, 99.9 fell by 2 and 6 points; at T = 8, 99, 99.5, 99.75 and 99.875 were
    within the noise. The previous rule, ``100 − 4/T``, was chosen when Stage 1 tuned only BatchNorm.
    """
    return 100.0 - 2.0 / T
