"""Read what a lowered network's neurons do: their integer spike counts per site."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..modes import neurons
from ..nn import ParallelIF

__all__ = ["spike_counts"]


@torch.no_grad()
def spike_counts(snn: nn.Module, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
    """Run ``snn`` once and return ``{site name: integer spike counts [B, C, ...]}``.

    Works in either mode: a forward hook takes each :class:`~fxsnn.nn.ParallelIF`'s
    input, time-averages it in spike mode, and evaluates the neuron's own count
    expression (the one its forward uses).

    Example::

        >>> counts = fxsnn.probes.spike_counts(snn, images)
        >>> counts["layer1.0.relu"].shape
        torch.Size([8, 16, 32, 32])
    """
    found: dict[str, torch.Tensor] = {}
    handles = []
    for name, neuron in neurons(snn).items():

        def hook(module: ParallelIF, inputs: tuple, output: torch.Tensor, name: str = name) -> None:
            x = inputs[0]
            x_mean = module.time_mean(x) if module.mode == "spike" else x
            found[name] = module.spike_count(x_mean)

        handles.append(neuron.register_forward_hook(hook))
    try:
        snn(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return found
