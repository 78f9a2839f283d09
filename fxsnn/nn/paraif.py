"""The parallel integrate-and-fire neuron (ParaIF): a whole T-step spike train in one shot."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ModeError
from ..validation import check_mode, check_positive_int
from . import functional as Fx
from .functional import _float_vector

__all__ = ["ParallelIF"]


class ParallelIF(nn.Module):
    """Parallel IF neuron with a trainable per-channel bias Δb (Eq. 5-8, 15-18; Alg. 1 l. 20-25).

    For each channel, with ``n_t = T − t + 1`` (``t = 1..T``), the neuron fires in
    slot ``t`` iff ``Λ_PC(t)·(x̄ + ψ_DA) + b(t) + Δb ≥ θ_pre`` where ``x̄`` is the
    time-averaged input current, ``Λ_PC(t) = T/n_t`` (Eq. 16) and
    ``b(t) = ψ/n_t`` with ``ψ = θ_pre/2`` (Eq. 7, Alg. 1 l. 20). Equivalently
    (Eq. 8) the spike count is ``k = clip(⌊((x̄ + ψ_DA)·T + ψ)/(θ_pre − Δb)⌋, 0, T)``
    and the spikes take the last ``k`` slots; each spike carries ``θ_post``
    (Alg. 1 l. 25, 31). See :func:`fxsnn.nn.functional.spike_count` for
    ``θ_pre − Δb ≤ 0``.

    Buffers (``[C]`` unless noted): ``theta_pre``, ``theta_post``, ``psi``,
    ``psi_da`` (zeros for plain QCFS), ``ladder`` ``[T]`` = ``n_t``,
    ``lambda_pc`` ``[T]`` = ``Λ_PC(t)``, ``bias`` ``[T, C]`` = ``b(t)`` with the DA
    shift folded in (``(ψ + T·ψ_DA)/n_t``, Alg. 1 l. 20). Parameter: ``delta_b``
    ``[C]``, zero-initialised (Eq. 17-18). Buffer ``surrogate_width`` (scalar):
    the triangle surrogate's half-width as a fraction of ``θ_pre``. Attribute
    ``surrogate`` (default ``"triangle"``; ``"ste"``: the straight-through
    estimator of :class:`fxsnn.nn.functional._ParallelFire`): the backward's
    gradient estimator, a training choice Stage 2 sets while it trains.

    Modes (DESIGN convention 7):

    - ``"spike"``: input ``[T·B, C, ...]`` (time-major), output the weighted
      spike train ``θ_post·s`` ``[T·B, C, ...]``. Without autograd
      (``torch.no_grad`` / ``inference_mode``) it skips the autograd function
      and, for ``T`` a power of two, takes the potential from the time sum
      ``U = Σ_t x_t`` instead of ``T·x̄`` (bit for bit the same as from
      ``x̄ = U/T``, which is how ``mean`` computes on CPU; tested there; see
      :func:`fxsnn.nn.functional.potential_from_sum`);
    - ``"rate"``: input the time-mean ``[B, C, ...]``, output ``k·θ_post/T``.

    ``direct`` (attribute, default ``False``; set by
    :func:`fxsnn.passes.lower_to_paraif` on a first neuron): the input is
    constant over time, so in spike mode too it takes the ``[B, C, ...]``
    current itself (direct encoding), which is its exact time-mean, and
    writes the ``[T·B, C, ...]`` train. Without it, a time-major input whose
    T slices are bit-identical also has its first slice taken as the mean
    (exact, where a float mean of T copies need not be).

    Both derive from the same count, so they cannot drift apart.

    ``fused`` (attribute, default ``False``; :func:`fxsnn.modes.set_fused`):
    opt in to a rate-mode forward compiled by ``torch.compile`` into one pass
    (same operations, same result bit for bit), used only without autograd
    (``torch.no_grad`` / ``inference_mode``) and while every ``θ_pre − Δb > 0``.
    The eager neuron makes about seven elementwise passes where a ReLU makes one.

    Example::

        >>> n = ParallelIF(torch.tensor([1.0]), T=4, mode="rate")
        >>> n(torch.tensor([[0.3]]))  # k = ⌊(4·0.3 + 0.5)/1⌋ = 1
        tensor([[0.2500]], grad_fn=<_ParallelFireBackward>)
    """

    kind = "ParallelIF"

    def __init__(
        self,
        theta_pre: Tensor,
        *,
        T: int,
        theta_post: Tensor | None = None,
        psi_da: Tensor | None = None,
        mode: str = "spike",
        surrogate_width: float = 0.5,
        fused: bool = False,
    ):
        super().__init__()
        self.T = check_positive_int(T, "T", where="ParallelIF")
        self.mode = check_mode(mode, where="ParallelIF")
        self.fused = bool(fused)
        self.direct = False
        self.surrogate = "triangle"
        theta_pre = _float_vector(theta_pre)
        if not bool((theta_pre > 0).all()):
            raise ValueError(f"ParallelIF: every theta_pre must be > 0; got min {float(theta_pre.min())}")
        theta_post = (
            theta_pre.clone() if theta_post is None else torch.as_tensor(theta_post).detach().clone().reshape(-1)
        )
        self.has_da = psi_da is not None
        psi_da = torch.zeros_like(theta_pre) if psi_da is None else torch.as_tensor(psi_da).detach().clone().reshape(-1)
        self.register_buffer("theta_pre", theta_pre)
        self.register_buffer("theta_post", theta_post.to(theta_pre.dtype))
        self.register_buffer("psi", theta_pre * 0.5)
        self.register_buffer("psi_da", psi_da.to(theta_pre.dtype))
        ladder = Fx.firing_ladder(self.T, dtype=theta_pre.dtype)
        self.register_buffer("ladder", ladder)
        self.register_buffer("lambda_pc", self.T / ladder)
        self.register_buffer("bias", (self.psi + self.T * self.psi_da).unsqueeze(0) / ladder.unsqueeze(1))
        self.register_buffer("surrogate_width", torch.tensor(float(surrogate_width), dtype=theta_pre.dtype))
        self.delta_b = nn.Parameter(torch.zeros_like(theta_pre))

    @property
    def channels(self) -> int:
        return self.theta_pre.numel()

    # -- the neuron ----------------------------------------------------------
    def time_mean(self, x: Tensor) -> Tensor:
        """``[T·B, ...] -> [B, ...]``: the time-averaged input current ``x̄`` (spike mode).

        Exact when the input is constant over time: a ``direct`` neuron's input
        is returned as it is, and when the T slices are bit-identical (checked
        with an early-exit comparison) the first slice is the mean.
        """
        return self._time_reduced(x, sum_ok=False)[0]

    def _time_reduced(self, x: Tensor, *, sum_ok: bool) -> tuple[Tensor, bool]:
        """``(x̄, False)`` for a spike-mode input ``[T·B, ...]``, or ``(U, True)`` with ``U = Σ_t x_t``.

        The sum is returned instead of the mean only where ``sum_ok``, ``T`` is a power of two and the input
        varies over time (a ``direct`` or time-constant input has its exact mean at hand).
        """
        if getattr(self, "direct", False):
            return x, False
        xt = self._time_major(x)
        if self._constant_over_time(xt):
            return xt[0], False
        if sum_ok and self.T & (self.T - 1) == 0:
            return xt.sum(dim=0), True
        return xt.mean(dim=0), False

    def _time_major(self, x: Tensor) -> Tensor:
        """The ``[T, B, ...]`` view of a time-major ``[T·B, ...]`` spike-mode input."""
        if x.shape[0] % self.T:
            raise ModeError(
                f"ParallelIF(T={self.T}) in spike mode expects a time-major [T*B, ...] input; got batch "
                f"{x.shape[0]}, not a multiple of T. Run the lowered GraphModule (it expands the input), "
                "or use fxsnn.set_mode(gm, 'rate')"
            )
        return x.reshape((self.T, -1) + tuple(x.shape[1:]))

    def _constant_over_time(self, xt: Tensor) -> bool:
        """Whether every slice of ``xt`` ``[T, B, ...]`` equals the next, bit for bit.

        First one sample of the first and last slice (a tiny compare, so a time-varying input costs next to
        nothing on any device), then all (stops at the first difference on CPU); not under autograd, where
        the mean's gradient goes to every slice.
        """
        return (
            self.T > 1 and not xt.requires_grad and torch.equal(xt[0, :1], xt[-1, :1]) and torch.equal(xt[1:], xt[:-1])
        )

    def _potential_no_grad(self, x: Tensor, psi_da: Tensor | None) -> Tensor:
        """Spike mode without autograd: the potential ``y = (x̄ + ψ_DA)·T + ψ`` ``[B, C, ...]`` of the input.

        For a time-varying input and ``T`` a power of two, ``y`` comes from the cumulative current
        ``U = Σ_t x_t`` (:func:`fxsnn.nn.functional.potential_from_sum`): the same value bit for bit as from
        ``x̄ = U/T`` (what ``mean`` computes on CPU), two passes over ``[B, ...]`` fewer.
        """
        u, is_sum = self._time_reduced(x, sum_ok=True)
        return (Fx.potential_from_sum if is_sum else Fx.potential)(u, self.T, self.psi, psi_da)

    def _fire_no_grad(self, x: Tensor) -> Tensor:
        """Spike-mode forward without autograd (``torch.no_grad`` / ``inference_mode``), ``[T·B, C, ...]``.

        The output of :class:`fxsnn.nn.functional._ParallelFire`'s forward, bit for bit, without the
        autograd node and with the potential taken from the time sum where that is exact.
        """
        theta = self.theta_pre - self.delta_b.detach()
        nonpositive = Fx.has_nonpositive(theta)
        y = self._potential_no_grad(x, self.psi_da if self.has_da else None)
        k = Fx.count_from_potential(y, self.T, theta, nonpositive=nonpositive)
        return Fx.count_to_weighted_spikes(k, self.ladder, theta, self.theta_post, nonpositive=nonpositive).flatten(
            0, 1
        )

    def spike_count(self, x_mean: Tensor) -> Tensor:
        """Integer spike count ``k`` for a time-averaged input ``[B, C, ...]``."""
        psi_da = self.psi_da if self.has_da else None
        return Fx.spike_count(x_mean, self.T, self.theta_pre - self.delta_b.detach(), self.psi, psi_da)

    def spike_train(self, x_mean: Tensor) -> Tensor:
        """Binary spike train ``[T, B, C, ...]`` (Eq. 5) for a time-averaged input."""
        return Fx.count_to_spikes(self.spike_count(x_mean), self.ladder, self.theta_pre - self.delta_b.detach())

    @Fx.along_channel_axis
    def forward(self, x: Tensor) -> Tensor:
        spike = self.mode == "spike"
        if not spike and getattr(self, "fused", False) and not torch.is_grad_enabled():
            theta_eff = self.theta_pre - self.delta_b
            if not Fx.has_nonpositive(theta_eff):
                out = Fx.fused_rate(
                    x, self.T, theta_eff, self.psi, self.psi_da if self.has_da else None, self.theta_post
                )
                if out is not None:
                    return out
        if spike and not torch.is_grad_enabled():
            return self._fire_no_grad(x)
        x_mean = self.time_mean(x) if spike else x
        out = Fx.parallel_fire(
            x_mean,
            delta_b=self.delta_b,
            theta_pre=self.theta_pre,
            theta_post=self.theta_post,
            psi=self.psi,
            psi_da=self.psi_da if self.has_da else None,
            ladder=self.ladder,
            lambda_pc=self.lambda_pc,
            bias=self.bias,
            width=self.surrogate_width,
            spike=spike,
            surrogate=getattr(self, "surrogate", "triangle"),
        )
        return out.flatten(0, 1) if spike else out

    def extra_repr(self) -> str:
        db = self.delta_b.detach()
        parts = [
            f"channels={self.channels}",
            f"T={self.T}",
            f"mode={self.mode}",
            f"theta_pre=[{float(self.theta_pre.min()):.3g}, {float(self.theta_pre.max()):.3g}]",
        ]
        if self.has_da:
            parts.append(f"psi_da=[{float(self.psi_da.min()):.3g}, {float(self.psi_da.max()):.3g}]")
            parts.append(f"theta_post=[{float(self.theta_post.min()):.3g}, {float(self.theta_post.max()):.3g}]")
        parts.append(f"|delta_b|max={float(db.abs().max()):.3g}")
        if getattr(self, "fused", False):
            parts.append("fused=True")
        if getattr(self, "direct", False):
            parts.append("direct=True")
        return ", ".join(parts)
