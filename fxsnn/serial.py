"""Run a lowered network step by step with serial IF neurons: the classic T-step reference."""
from __future__ import annotations

import torch
from torch import fx, nn
from torch.utils._pytree import tree_map

from .graph import copy_graph_module, set_submodule
from .modes import neurons, time_steps
from .nn import SerialIF, TimeExpand, TimeMean

__all__ = ["SerialSimulator", "to_serial"]


class SerialSimulator(nn.Module):
    """A lowered network simulated serially: T forward passes, one per time step.

    Every :class:`~fxsnn.nn.ParallelIF` is replaced by a :class:`~fxsnn.nn.SerialIF`
    with the same θ_pre, θ_post, ψ_DA and Δb; the input current of the first
    layer is the (constant) analog input at every step; the output is the mean
    of the T per-step outputs. This is the serial SNN of Eq. 1 that parallel
    conversion replaces: it agrees with the parallel network where every
    neuron's input is constant over time and differs where a varying input
    makes a serial neuron fire early and then fall back (the parallel neuron
    only sees the total, Eq. 15).

    Example::

        >>> ref = fxsnn.to_serial(snn)
        >>> ref(images).shape == snn(images).shape
        True
    """

    def __init__(self, net: fx.GraphModule, T: int):
        super().__init__()
        self.net = net
        self.T = T

    def spike_counts(self) -> dict[str, torch.Tensor]:
        """``{neuron name: spike counts [B, C, ...]}`` of the last run."""
        return {n: m.spike_count for n, m in self.net.named_modules() if isinstance(m, SerialIF)}

    def reset(self) -> None:
        for m in self.net.modules():
            if isinstance(m, SerialIF):
                m.reset()

    def forward(self, *args, **kwargs):
        self.reset()
        total = None
        for _ in range(self.T):
            out = self.net(*args, **kwargs)
            total = out if total is None else tree_map(
                lambda a, b: a + b if isinstance(a, torch.Tensor) else a, total, out)
        return tree_map(lambda a: a / self.T if isinstance(a, torch.Tensor) else a, total)



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
