"""Run a lowered network step by step with serial IF neurons (the same weights and thresholds, Eq. 1)."""

from __future__ import annotations

from torch import fx

from ..graph.edit import copy_graph_module, set_submodule
from ..modes import neurons, time_steps
from ..nn import SerialIF, SerialSimulator, TimeExpand, TimeMean

__all__ = ["to_serial"]


def to_serial(gm: fx.GraphModule) -> SerialSimulator:
    """The serial IF network of a lowered network: same weights, θ, ψ_DA and Δb, T steps (a copy; ``gm`` untouched).

    Not an equivalent network: a serial neuron driven by a time-varying input can fire early and then fall
    back, while the parallel neuron sees only the total (Eq. 15); they agree where every input is constant.
    """
    T = time_steps(gm)
    net = copy_graph_module(gm)
    for name, neuron in neurons(net).items():
        set_submodule(net, name, SerialIF.from_parallel(neuron))
    for m in net.modules():
        if isinstance(m, (TimeExpand, TimeMean)):
            m.mode = "rate"  # one step at a time: no time axis
    return SerialSimulator(net, T)
