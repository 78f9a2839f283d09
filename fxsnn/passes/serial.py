"""Run a lowered network step by step with serial IF neurons: the classic T-step reference."""

from __future__ import annotations

from torch import fx

from ..graph.edit import copy_graph_module, set_submodule
from ..modes import neurons, time_steps
from ..nn import SerialIF, SerialSimulator, TimeExpand, TimeMean

__all__ = ["to_serial"]


def to_serial(gm: fx.GraphModule) -> SerialSimulator:
    """The serial step-by-step reference of a lowered network (a copy; ``gm`` is untouched)."""
    T = time_steps(gm)
    net = copy_graph_module(gm)
    for name, neuron in neurons(net).items():
        set_submodule(net, name, SerialIF.from_parallel(neuron))
    for m in net.modules():
        if isinstance(m, (TimeExpand, TimeMean)):
            m.mode = "rate"  # one step at a time: no time axis
    return SerialSimulator(net, T)
