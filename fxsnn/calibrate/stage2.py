"""Stage 2, temporal correction (Section 4.3, Eq. 17-18, Algorithm 3): train each neuron's Δb with a surrogate gradient."""

from __future__ import annotations

from collections.abc import Iterable

from torch import fx

from ..errors import ConversionError, ModeError
from ..graph.edit import copy_graph_module, describe_node, require_graph_module
from ..graph.rate import is_max_pool, rate_mode_blockers
from ..modes import get_mode, neurons, set_mode, time_steps
from ..nn import ParallelIF
from ..validation import check_positive_int
from .finetune import TrainSpec, check_reiterable, fine_tune

__all__ = ["tune_delta_b", "training_mode", "SURROGATES", "PARAMETERIZATIONS", "STAGE2_MODES"]

SURROGATES = ("triangle",)
PARAMETERIZATIONS = ("relative", "absolute")
STAGE2_MODES = ("auto", "rate", "spike")


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
    that: an op that does not commute with the time-mean (:func:`fxsnn.rate_mode_blockers`), and a MaxPool
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


def tune_delta_b(
    gm: fx.GraphModule,
    data: Iterable,
    *,
    T: int | None = None,
    epochs: int = 1,
    steps: int | None = None,
    lr: float = 3e-2,
    lr_min: float = 0.0,
    warmup: float = 0.1,
    surrogate: str = "triangle",
    width: float = 0.5,
    parameterization: str = "relative",
    clip_grad: float | None = 1.0,
    holdout=0.1,
    patience: int | None = 3,
    eval_every: int | None = None,
    mode: str = "auto",
    progress: bool = True,
) -> fx.GraphModule:
    """Stage 2 (Algorithm 3): train every ParallelIF's per-channel bias Δb ``[C]``; returns a **new** GraphModule.

    A neuron with Δb fires in slot ``t`` iff ``Λ_PC(t)·(x̄ + ψ_DA) + b(t) + Δb ≥ θ_pre`` (Eq. 17-18), i.e. its
    count is ``k = clip(⌊((x̄ + ψ_DA)·T + ψ)/(θ_pre − Δb)⌋, 0, T)``. Everything else is frozen, BatchNorm
    included (the network runs in eval mode); the loss is the cross-entropy of the time-averaged logits
    (Alg. 3 l. 8-9), optimised with AdamW (no weight decay), linear warm-up (``warmup``) and cosine decay
    ``lr → lr_min`` over ``epochs`` (or exactly ``steps``), gradient-norm clipping at ``clip_grad``, and early
    stopping: ``holdout`` (a fraction or number of leading batches of each pass, or your own iterable of
    batches) is evaluated before the first step and every ``eval_every`` steps, training stops after
    ``patience`` evaluations without improvement, and the best state is kept (so the held-out loss never
    ends above its starting value). With a reshuffling DataLoader and ``epochs > 1`` the leading batches of
    later passes are other images; pass ``holdout=`` an iterable for a strict split.

    Surrogate: the Heaviside's derivative is the triangle ``max(0, 1 − |u|/w)/w`` with half-width
    ``w = width·θ_pre`` (Appendix C), used while training (each neuron's ``surrogate_width`` is restored after). ``parameterization="relative"`` trains ``Δb = θ_pre ⊙ z`` (Adam moves Δb
    in units of each channel's threshold: ``lr`` is a fraction of θ per step); ``"absolute"`` trains Δb itself,
    as the paper writes it. Δb starts at 0, where the count equals the QCFS target bit for bit.

    ``mode``: ``"auto"`` (rate where :func:`training_mode` allows — the same gradient at 1/T of the cost —
    spike otherwise), ``"rate"`` or ``"spike"``. The result keeps the input's execution mode. ``T``, when
    given, must equal the network's. ``data``: a re-iterable of ``(input, target)`` batches (targets needed).
    The :class:`~fxsnn.finetune.TrainReport` is in ``result.meta["fxsnn.stage2"]``.

    Example::

        >>> snn = fxsnn.passes.lower_to_paraif(da, T=4)
        >>> snn = fxsnn.tune_delta_b(snn, loader, T=4)
    """
    where = "fxsnn.tune_delta_b"
    if surrogate not in SURROGATES:
        raise ValueError(f"{where}: surrogate must be one of {SURROGATES}; got {surrogate!r}")
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"{where}: parameterization must be one of {PARAMETERIZATIONS}; got {parameterization!r}")
    if not (isinstance(width, (int, float)) and not isinstance(width, bool) and 0 < width < float("inf")):
        raise ValueError(
            f"{where}: width (the surrogate's half-width as a fraction of θ_pre) must be > 0; got {width!r}"
        )
    if mode not in STAGE2_MODES:
        raise ValueError(f"{where}: mode must be one of {STAGE2_MODES}; got {mode!r}")
    spec = TrainSpec(
        epochs=epochs,
        steps=steps,
        lr=lr,
        lr_min=lr_min,
        warmup=warmup,
        clip_grad=clip_grad,
        holdout=holdout,
        patience=patience,
        eval_every=eval_every,
    )
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
    check_reiterable(data, where=where)
    gm = copy_graph_module(gm)
    original_mode = get_mode(gm)
    run_mode, reason = training_mode(gm, mode)
    set_mode(gm, run_mode)
    cells = list(neurons(gm).values())
    grad_flags = [p.requires_grad for p in gm.parameters()]
    flags = [m.training for m in gm.modules()]
    for p in gm.parameters():
        p.requires_grad_(False)
    params = [n.delta_b for n in cells]
    scales = [n.theta_pre.detach().clone() for n in cells] if parameterization == "relative" else None
    widths = [n.surrogate_width.clone() for n in cells]
    for n in cells:
        n.surrogate_width.fill_(float(width))
        n.delta_b.requires_grad_(True)
    gm.eval()
    try:
        report = fine_tune(gm, params, data, spec, where=where, scales=scales, progress=progress)
    finally:
        for p, f in zip(gm.parameters(), grad_flags):
            p.requires_grad_(f)
        for m, f in zip(gm.modules(), flags):
            m.training = f
        for n, w in zip(cells, widths):  # the width is a training choice, not part of the network
            n.surrogate_width.copy_(w)
        set_mode(gm, original_mode)
    report.mode = run_mode
    report.mode_reason = reason
    gm.meta["fxsnn.stage2"] = report
    return gm
