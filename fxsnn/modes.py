"""Execution modes of a lowered network: ``spike`` (real spike trains) and ``rate`` (time-collapsed)."""

from __future__ import annotations

from torch import fx, nn

from .errors import ConversionError, ModeError
from .graph.edit import describe_node
from .graph.rate import rate_mode_blockers
from .nn import ParallelIF, TimeExpand, TimeMean
from .validation import check_mode

__all__ = ["set_mode", "get_mode", "time_steps", "neurons", "set_fused"]

_TIMED = (ParallelIF, TimeExpand, TimeMean)


def neurons(gm: nn.Module) -> dict[str, ParallelIF]:
    """``{qualified name: ParallelIF}`` of a lowered network, in module order."""
    return {name: m for name, m in gm.named_modules() if isinstance(m, ParallelIF)}


def time_steps(gm: nn.Module) -> int:
    """T of a lowered network (all its neurons share it)."""
    ts = {m.T for m in neurons(gm).values()}
    if not ts:
        raise ConversionError(
            "this model has no ParallelIF neuron; lower it first with fxsnn.passes.lower_to_paraif(gm, T=...)"
        )
    if len(ts) > 1:
        raise ConversionError(f"the neurons of this model disagree on T: {sorted(ts)}")
    return ts.pop()


def get_mode(gm: nn.Module) -> str:
    modes = {m.mode for m in gm.modules() if isinstance(m, _TIMED)}
    if len(modes) != 1:
        raise ConversionError("this model is not a lowered fxsnn network (or its modules disagree on the mode)")
    return modes.pop()


def set_mode(gm: nn.Module, mode: str) -> nn.Module:
    """Switch a lowered network between ``"spike"`` and ``"rate"`` execution, **in place** (returns ``gm``).

    A mode is a runtime switch on the network's modules, not a rewrite, so
    this one helper mutates its argument (and says so).

    Both modes derive every neuron's spikes from one count expression; rate mode skips the time axis
    (DESIGN convention 7). The inputs of that expression are mathematically equal but rounded differently:
    spike mode computes ``mean_t(layer(s_t))``, rate mode ``layer(mean_t(s_t))``, and ``floor`` turns one ulp
    into one spike, so in float32 a small fraction of counts differs (measured in docs/correctness.md) and the
    flips can cascade in deep networks (up to 1.8 % of counts on random-weight torchvision models); in float64
    the two modes agreed at every neuron of fxsnn's property tests and of every network measured there
    (:func:`fxsnn.testing.check_rate_equals_spike_float64`). Raises :class:`fxsnn.ModeError` naming the
    node when rate mode cannot be the same network (an op between neurons that is not affine).
    """
    if not isinstance(gm, nn.Module):
        raise TypeError(f"fxsnn.set_mode expects the lowered GraphModule; got {type(gm).__name__}")
    mode = check_mode(mode, where="fxsnn.set_mode")
    timed = [m for m in gm.modules() if isinstance(m, _TIMED)]
    if not any(isinstance(m, ParallelIF) for m in timed):
        raise ConversionError(
            "fxsnn.set_mode: this model has no ParallelIF neuron; lower it first with fxsnn.passes.lower_to_paraif"
        )
    if mode == "rate" and isinstance(gm, fx.GraphModule):
        blockers = rate_mode_blockers(gm)
        if blockers:
            node, why = blockers[0]
            more = f" (and {len(blockers) - 1} more)" if len(blockers) > 1 else ""
            raise ModeError(
                f"rate mode cannot run {describe_node(node)}{more}: {why}. Use mode='spike' for this network."
            )
    for m in timed:
        m.mode = mode
    return gm


def set_fused(gm: nn.Module, fused: bool = True) -> nn.Module:
    """Opt every ParallelIF of ``gm`` in (or out) of the compiled rate-mode neuron, **in place** (returns ``gm``).

    A deployment switch for inference in rate mode: ``torch.compile`` turns the
    neuron's seven elementwise passes into one, with the same operations in
    the same order (bit-identical output). The first forward per input shape
    compiles (seconds); training, spike mode and ``θ_pre − Δb ≤ 0`` keep the
    eager neuron. Without a working compiler it warns once and stays eager.

    Example::

        >>> fxsnn.modes.set_fused(fxsnn.set_mode(snn, "rate"))
        >>> with torch.inference_mode():
        ...     logits = snn(images)
    """
    cells = neurons(gm)
    if not cells:
        raise ConversionError(
            "fxsnn.modes.set_fused: this model has no ParallelIF neuron; lower it first with fxsnn.passes.lower_to_paraif"
        )
    for m in cells.values():
        m.fused = bool(fused)
    return gm
