"""Stage 2, temporal correction (Section 4.3, Eq. 17-18, Algorithm 3): train each neuron's Δb with a surrogate gradient."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, fx, nn
from torch.nn.utils import parametrize

from ..errors import ConversionError, ModeError
from ..graph.edit import copy_graph_module, describe_node, require_graph_module
from ..graph.rate import is_max_pool, rate_mode_blockers
from ..modes import get_mode, neurons, set_mode, time_steps
from ..nn import ParallelIF
from ..report.stages import STAGE2, StageReport
from ..validation import check_positive_int
from .config import PARAMETERIZATIONS, STAGE2_MODES, SURROGATES, Stage2Config
from .finetune import TrainReport, check_reiterable, fine_tune
from .objectives import objective_heads
from .state import preserved_state

__all__ = ["tune_delta_b", "training_mode", "RelativeTo", "SURROGATES", "PARAMETERIZATIONS", "STAGE2_MODES"]


def _max_pool_on_neuron(gm: fx.GraphModule) -> fx.Node | None:
    """The first MaxPool node that reads a ParallelIF output directly, or ``None``."""
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if is_max_pool(node, modules) and node.args:
            src = node.args[0]
            if isinstance(src, fx.Node) and src.op == "call_module" and isinstance(modules.get(src.target), ParallelIF):
                return node
    return None


def training_mode(gm: fx.GraphModule, mode: str = "auto") -> tuple[str, str]:
    """``(mode, reason)``: the execution mode Stage 2 trains in.

    Rate mode gives the spike-mode gradient at 1/T of the cost when every op between neurons is affine: each
    neuron's upstream gradient is then the same in every time slot (the time-mean's), so the per-slot
    surrogate sum of :class:`fxsnn.nn.functional._ParallelFire` collapses to the rate form. Two cases break
    that: an op that does not commute with the time-mean (:func:`fxsnn.graph.rate_mode_blockers`), and a MaxPool
    reading a neuron — its forward commutes, but per slot it routes the gradient to the first of the tied
    spiking inputs, in rate mode to the input with the largest count. ``mode="auto"`` picks rate where
    allowed, else spike; ``"rate"`` raises :class:`fxsnn.ModeError` naming the node where not allowed.
    """
    where = "fxsnn.tune_delta_b"
    if mode not in STAGE2_MODES:
        raise ValueError(f"{where}: mode must be one of {STAGE2_MODES}; got {mode!r}")
    if mode == "spike":
        return "spike", "requested"
    blockers = rate_mode_blockers(gm)
    pool = _max_pool_on_neuron(gm)
    if blockers:
        node, why = blockers[0]
        reason = f"{describe_node(node)}: {why}"
    elif pool is not None:
        reason = (
            f"{describe_node(pool)} reads a neuron: max pooling commutes with the time-mean in the forward "
            "but routes surrogate gradients differently per time slot"
        )
    else:
        return "rate", "every op between neurons is affine"
    if mode == "rate":
        raise ModeError(
            f"{where}: rate-mode training would not give the spike-mode gradient at {reason}. Use mode='spike' or 'auto'"
        )
    return "spike", reason


class RelativeTo(nn.Module):
    """Parametrization ``p = c ⊙ z`` (:func:`torch.nn.utils.parametrize.register_parametrization`): the optimizer
    holds ``z``, so Adam's step (about ``lr`` per element) moves ``p`` by about ``lr·c``. ``right_inverse`` gives
    ``z = p / c``; ``p = 0`` stays exactly 0."""

    def __init__(self, scale: Tensor):
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())

    def forward(self, z: Tensor) -> Tensor:
        return z * self.scale

    def right_inverse(self, p: Tensor) -> Tensor:
        return p / self.scale


@contextlib.contextmanager
def _trainable_delta_b(cells: list[ParallelIF], parameterization: str) -> Iterator[list[Tensor]]:
    """Inside: each neuron's Δb trainable — relative to θ_pre (``Δb = θ_pre ⊙ z``) or as is; yields the tensors
    the optimizer holds. On exit Δb is a plain parameter again, holding its trained value."""
    relative = parameterization == "relative"
    try:
        for n in cells:
            if relative:
                parametrize.register_parametrization(n, "delta_b", RelativeTo(n.theta_pre))
        params = [n.parametrizations.delta_b.original if relative else n.delta_b for n in cells]
        for p in params:
            p.requires_grad_(True)
        yield params
    finally:
        for n in cells:
            if parametrize.is_parametrized(n, "delta_b"):
                parametrize.remove_parametrizations(n, "delta_b", leave_parametrized=True)


def _check_stage2_input(gm, T: int | None, *, where: str) -> fx.GraphModule:
    gm = require_graph_module(gm, where=where)
    if not neurons(gm):
        raise ConversionError(
            f"{where}: the model has no ParallelIF neuron; Stage 2 runs on the lowered network: "
            "fxsnn.passes.lower_to_paraif(gm, T=...) first"
        )
    net_T = time_steps(gm)
    if T is not None and check_positive_int(T, "T", where=where) != net_T:
        raise ConversionError(
            f"{where}: T={T} was requested but the network was lowered with T={net_T}; lower it again with "
            f"fxsnn.passes.lower_to_paraif(gm, T={T}) or pass T={net_T}"
        )
    return gm


def _train(
    gm: fx.GraphModule, data: Iterable, config: Stage2Config, *, where: str, progress: bool, heads
) -> TrainReport:
    """Δb of every neuron trained with ``config.surrogate`` (the triangle of half-width ``config.width``·θ_pre, or the
    straight-through estimator), everything else frozen."""
    cells = list(neurons(gm).values())
    widths = [(n.surrogate_width.clone(), getattr(n, "surrogate", "triangle")) for n in cells]
    with preserved_state(gm):
        try:
            for p in gm.parameters():
                p.requires_grad_(False)
            for n in cells:
                n.surrogate_width.fill_(float(config.width))
                n.surrogate = config.surrogate
            gm.eval()
            with _trainable_delta_b(cells, config.parameterization) as params:
                return fine_tune(gm, params, data, config.train, where=where, progress=progress, **heads)
        finally:
            with torch.no_grad():
                for n, (w, kind) in zip(cells, widths):  # training choices, not part of the network
                    n.surrogate_width.copy_(w)
                    n.surrogate = kind


def tune_delta_b(
    gm: fx.GraphModule,
    data: Iterable,
    config: Stage2Config | None = None,
    *,
    T: int | None = None,
    progress: bool = True,
    loss_fn: Callable | None = None,
    output: Callable | None = None,
    teacher: Callable | None = None,
    **overrides,
) -> fx.GraphModule:
    """Stage 2 (Algorithm 3): train every ParallelIF's per-channel bias Δb ``[C]``; returns a **new** GraphModule.

    A neuron with Δb fires in slot ``t`` iff ``Λ_PC(t)·(x̄ + ψ_DA) + b(t) + Δb ≥ θ_pre`` (Eq. 17-18), i.e. its
    count is ``k = clip(⌊((x̄ + ψ_DA)·T + ψ)/(θ_pre − Δb)⌋, 0, T)``. Everything else is frozen, BatchNorm
    included (the network runs in eval mode); the loss is the cross-entropy of the time-averaged logits
    (Alg. 3 l. 8-9), optimised with AdamW (no weight decay), linear warm-up (``train.warmup``) and cosine decay
    ``train.lr → train.lr_min`` over ``train.epochs`` (or exactly ``train.steps``), gradient-norm clipping at
    ``train.clip_grad``, and early stopping: ``train.holdout`` (a fraction or number of leading batches of each
    pass, or your own iterable of batches) is evaluated before the first step and every ``train.eval_every``
    steps, training stops after ``train.patience`` evaluations without improvement, and the best state is kept
    (so the held-out loss never ends above its starting value). With a reshuffling DataLoader and ``epochs > 1``
    the leading batches of later passes are other images; pass ``holdout=`` an iterable for a strict split.

    ``config``: a :class:`~fxsnn.calibration.config.Stage2Config` (default: fxsnn's recipe, the one
    :func:`fxsnn.convert` uses); ``overrides`` replace its fields by key, as :meth:`Stage2Config.replace` does
    (``tune_delta_b(snn, loader, epochs=2, holdout=None)``; ``epochs`` is ``train.epochs``).

    Surrogate: the Heaviside's derivative is the triangle ``max(0, 1 − |u|/w)/w`` with half-width
    ``w = width·θ_pre`` (Appendix C), used while training (each neuron's ``surrogate_width`` is restored after);
    ``surrogate="ste"`` uses the straight-through estimator ``∂k/∂Δb = q/θ'`` inside the count's range instead
    (:class:`fxsnn.nn.functional._ParallelFire`; ``width`` is then unused).
    ``parameterization="relative"`` trains ``Δb = θ_pre ⊙ z`` (a :class:`RelativeTo` parametrization: Adam moves
    Δb in units of each channel's threshold, ``lr`` is a fraction of θ per step); ``"absolute"`` trains Δb
    itself, as the paper writes it. Δb starts at 0, where the count equals the QCFS target bit for bit.

    ``mode``: ``"auto"`` (rate where :func:`training_mode` allows — the same gradient at 1/T of the cost —
    spike otherwise), ``"rate"`` or ``"spike"``. The result keeps the input's execution mode. ``T``, when
    given, must equal the network's. ``loss_fn(logits, target)`` and ``output`` (picks the logits from the
    network's output) replace the cross-entropy of the logits (:func:`fxsnn.calibration.measure.measure`;
    defaults cover ``{"out": ...}`` dicts, tuples and dense ``[B, classes, H, W]`` logits). ``data``: a
    re-iterable of ``(input, target)`` batches (targets needed), or, with ``objective="distill"`` (label-free:
    the KL divergence to ``teacher``'s logits, :mod:`fxsnn.calibration.distill`; ``teacher`` required then),
    input-only batches.
    What the stage did — epochs, steps, training and held-out loss, whether early stopping kept step 0 (Δb = 0),
    the mode it trained in, seconds — is in ``result.meta["fxsnn.stage2"]``, a :class:`fxsnn.report.StageReport`.

    Example::

        >>> snn = fxsnn.passes.lower_to_paraif(da, T=4)
        >>> snn = fxsnn.tune_delta_b(snn, loader, T=4)
    """
    where = "fxsnn.tune_delta_b"
    t0 = time.perf_counter()
    config = (config if config is not None else Stage2Config()).replace(**overrides)
    gm = _check_stage2_input(gm, T, where=where)
    check_reiterable(data, where=where)
    gm = copy_graph_module(gm)
    data, heads, hooks, config = objective_heads(
        config, data, teacher=teacher, loss_fn=loss_fn, output=output, where=where, student=gm
    )
    original_mode = get_mode(gm)
    run_mode, reason = training_mode(gm, config.mode)
    set_mode(gm, run_mode)
    try:
        with hooks:
            report = _train(gm, data, config, where=where, progress=progress, heads=heads)
    finally:
        set_mode(gm, original_mode)
    report.mode, report.mode_reason = run_mode, reason
    gm.meta["fxsnn.stage2"] = StageReport.from_training(STAGE2, report, seconds=time.perf_counter() - t0)
    return gm
