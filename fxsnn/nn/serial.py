"""The serial integrate-and-fire neuron: the classic T-step reference (Eq. 1, λ = 1)."""

from __future__ import annotations

import torch
from torch import Tensor, fx, nn
from torch.utils._pytree import tree_map

from . import functional as Fx

__all__ = ["SerialIF", "SerialSimulator"]


class SerialIF(nn.Module):
    """IF neuron stepped one time step per call (Eq. 1 with λ = 1, reset by subtraction).

    Per step ``t``, for an input current ``I^t: [B, C, ...]``::

        v_pre = v^{t-1} + I^t + ψ_DA          (Eq. 1a; ψ_DA is the DA pre-shift)
        s^t   = H(v_pre − θ')                  (Eq. 1b, θ' = θ_pre − Δb)
        v^t   = v_pre − s^t · θ'               (reset by subtraction)
        out   = s^t · θ_post

    with ``v⁰ = ψ = θ_pre/2``. Driven by a constant current for T steps, it emits
    ``clip(⌊(T·(I + ψ_DA) + ψ)/θ'⌋, 0, T)`` spikes whenever ``0 ≤ ψ < θ'`` —
    the count of :class:`ParallelIF` (Eq. 9, 12-13). Call :meth:`reset` before
    each new input.
    """

    kind = "SerialIF"

    def __init__(
        self,
        theta_pre: Tensor,
        *,
        theta_post: Tensor | None = None,
        psi_da: Tensor | None = None,
        delta_b: Tensor | None = None,
    ):
        super().__init__()
        theta_pre = torch.as_tensor(theta_pre).detach().clone().reshape(-1)
        self.register_buffer("theta_pre", theta_pre)
        self.register_buffer(
            "theta_post",
            theta_pre.clone() if theta_post is None else torch.as_tensor(theta_post).detach().clone().reshape(-1),
        )
        self.register_buffer(
            "psi_da",
            torch.zeros_like(theta_pre) if psi_da is None else torch.as_tensor(psi_da).detach().clone().reshape(-1),
        )
        self.register_buffer(
            "delta_b",
            torch.zeros_like(theta_pre) if delta_b is None else torch.as_tensor(delta_b).detach().clone().reshape(-1),
        )
        self.v: Tensor | None = None
        self.spike_count: Tensor | None = None

    @classmethod
    def from_parallel(cls, neuron: nn.Module) -> SerialIF:
        """The serial neuron with the same θ_pre, θ_post, ψ_DA and Δb as a :class:`ParallelIF`."""
        return cls(
            neuron.theta_pre, theta_post=neuron.theta_post, psi_da=neuron.psi_da, delta_b=neuron.delta_b.detach()
        )

    def reset(self) -> None:
        self.v = None
        self.spike_count = None

    def forward(self, current: Tensor) -> Tensor:
        th = Fx.per_channel(self.theta_pre - self.delta_b, current)
        if self.v is None:
            self.v = Fx.per_channel(self.theta_pre * 0.5, current).expand_as(current).clone()
            self.spike_count = torch.zeros_like(current)
        # The state is ours, so update it in place (same ops, same rounding as v + I + ψ_DA, v − s·θ').
        v = Fx._iop(Fx._iop(self.v, current, "add"), Fx.per_channel(self.psi_da, current), "add")
        fired = v >= th
        s = fired.to(current.dtype)
        self.v = Fx._iop(v, s * th, "sub")
        self.spike_count = Fx._iop(self.spike_count, s, "add")
        return s * Fx.per_channel(self.theta_post, current)

    def extra_repr(self) -> str:
        return f"channels={self.theta_pre.numel()}"


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

        >>> ref = fxsnn.passes.to_serial(snn)
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

    def forward(self, *args: object, **kwargs: object) -> object:
        self.reset()
        total = None
        for _ in range(self.T):
            out = self.net(*args, **kwargs)
            total = (
                out if total is None else tree_map(lambda a, b: a + b if isinstance(a, torch.Tensor) else a, total, out)
            )
        return tree_map(lambda a: a / self.T if isinstance(a, torch.Tensor) else a, total)
