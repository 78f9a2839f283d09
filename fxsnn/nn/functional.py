"""The arithmetic shared by every fxsnn activation: one integer spike count.

Convention 6 of the design: a parallel neuron's spike count is an integer
function of its (time-averaged) input, computed once, in one expression, and
both the spike train and the rate are derived from it. The QCFS activation
(Eq. 2-4) and the parallel IF neuron (Eq. 5-8, 15-18) call the same
:func:`spike_count`, so the count of a ``ParallelIF`` spike train equals the
QCFS integer target bit for bit, in float32 and float64 alike.

Shapes: ``x`` is ``[B, C, *spatial]`` (or ``[B, C]``); every per-channel
quantity (``theta``, ``psi``, ``psi_da``, ``theta_post``, ``delta_b``) is
``[C]`` and is broadcast along dim 1 by :func:`per_channel`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "per_channel",
    "along_channel_axis",
    "spike_count",
    "potential",
    "potential_from_sum",
    "count_from_potential",
    "count_to_rate",
    "count_to_spikes",
    "count_to_weighted_spikes",
    "has_nonpositive",
    "fused_rate",
    "firing_ladder",
    "triangle_surrogate",
    "qcfs",
    "parallel_fire",
]


def _float_vector(t) -> Tensor:
    """A detached 1-D copy of ``t``, keeping a floating dtype (float64 stays float64)."""
    t = torch.as_tensor(t).detach()
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t.clone().reshape(-1)


def per_channel(p: Tensor, x: Tensor) -> Tensor:
    """View a ``[C]`` tensor so that it broadcasts over ``x`` of shape ``[B, C, ...]``."""
    if x.dim() < 2:
        raise ValueError(
            f"fxsnn activations need inputs shaped [batch, channels, ...]; got a tensor of shape {tuple(x.shape)}"
        )
    return p.view((-1,) + (1,) * (x.dim() - 2))


def along_channel_axis(forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Decorate a site module's ``forward(self, x)`` to run with ``x``'s channel axis moved to dim 1.

    A site's channels sit on ``self.channel_axis`` (default 1; ``-1`` for a Linear producer, set from the
    site record by :func:`fxsnn.passes.base.swap_sites_`). For a ``[B, N, C]`` input with axis ``-1`` the
    module computes on the view ``[B, C, N]`` and returns its output moved back to ``[B, N, C]``: the same
    elementwise arithmetic per channel. With the channels already at dim 1 (every ``[B, C, ...]`` conv output,
    every 2-D ``[B, C]``) nothing moves.
    """

    @functools.wraps(forward)
    def wrapped(self, x: Tensor, *args, **kwargs):
        axis = getattr(self, "channel_axis", 1)
        if x.dim() <= 2 or axis % x.dim() == 1:
            return forward(self, x, *args, **kwargs)
        return forward(self, x.movedim(axis, 1), *args, **kwargs).movedim(1, axis)

    return wrapped


def _inplace_ok(a: Tensor, b) -> bool:
    """``a op= b`` gives the same result as ``a op b`` (same dtype after promotion, ``b`` broadcasts into ``a``)."""
    if torch.result_type(a, b) != a.dtype:
        return False
    return not isinstance(b, Tensor) or torch.broadcast_shapes(a.shape, b.shape) == a.shape


def _iop(a: Tensor, b, op: str) -> Tensor:
    """``a + b`` / ``a * b`` / ``a / b``, written into ``a`` (a fresh temporary) when that is bit-identical."""
    if _inplace_ok(a, b):
        return getattr(a, op + "_")(b)
    return getattr(torch, op)(a, b)


def has_nonpositive(theta: Tensor) -> bool:
    """Whether any effective threshold ``θ' = θ − Δb`` is ``≤ 0`` (one tiny reduction over ``[C]``)."""
    return bool((theta <= 0).any())


def spike_count(
    x: Tensor, T: int, theta: Tensor, psi: Tensor, psi_da: Tensor | None = None, *, nonpositive: bool | None = None
) -> Tensor:
    """Integer spike count ``k`` (a float tensor holding integers in ``[0, T]``).

    With ``y = (x + ψ_DA)·T + ψ`` and the effective threshold ``θ' = θ − Δb``
    (pass ``theta = θ − Δb``), the parallel firing rule (Eq. 8 with the bias of
    Eq. 17) fires in the slot whose ladder value is ``n = T − t + 1`` iff
    ``n·θ' ≤ y``. The count of such slots is

    - ``θ' > 0``:  ``k = clip(⌊y / θ'⌋, 0, T)``   (Eq. 3 / Eq. 9; the QCFS target),
    - ``θ' = 0``:  ``k = T`` if ``y ≥ 0`` else ``0``,
    - ``θ' < 0``:  ``k = clip(T + 1 − ⌈y / θ'⌉, 0, T)``  (every slot with ``n ≥ y/θ'``).

    The ``θ' ≤ 0`` branches are only evaluated when such a channel exists
    (``nonpositive``: pass :func:`has_nonpositive` of ``theta`` when already
    known, to skip the check). Cost: one fresh buffer of ``x``'s shape, then
    in-place passes: ``y = (x + ψ_DA)·T + ψ`` (``x·T`` is the cumulative current
    ``U`` of Eq. 15, ``ψ`` the initial potential ``v⁰``), then ``⌊y / θ'⌋``.
    """
    return count_from_potential(potential(x, T, psi, psi_da), T, theta, nonpositive=nonpositive)


def potential(x: Tensor, T: int, psi: Tensor, psi_da: Tensor | None = None) -> Tensor:
    """``y = (x + ψ_DA)·T + ψ`` ``[B, C, ...]``, written into one fresh temporary.

    ``x·T`` is the cumulative current ``U`` of Eq. 15 and ``ψ`` the initial potential ``v⁰``.
    """
    y = x * T if psi_da is None else _iop(x + per_channel(psi_da, x), T, "mul")
    return _iop(y, per_channel(psi, x), "add")


def potential_from_sum(u: Tensor, T: int, psi: Tensor, psi_da: Tensor | None = None) -> Tensor:
    """``y = U + T·ψ_DA + ψ`` from the cumulative current ``U = Σ_t x_t`` (Eq. 15), written into ``u``.

    ``u`` must be a temporary the caller owns (it is overwritten). With ``x̄ = U/T`` this is
    :func:`potential` of ``x̄`` bit for bit when ``T`` is a power of two and ``U/T`` is a normal number
    (or zero): scaling by ``2^m`` is exact, so ``round(U/T + ψ_DA)·T = round(U + T·ψ_DA)``, and ``T·ψ_DA`` is
    exact too. One pass fewer than :func:`potential` after a mean, and no division by ``T``.
    """
    if psi_da is not None:
        u = _iop(u, per_channel(psi_da * T, u), "add")
    return _iop(u, per_channel(psi, u), "add")


def count_from_potential(y: Tensor, T: int, theta: Tensor, *, nonpositive: bool | None = None) -> Tensor:
    """The count ``k`` of :func:`spike_count` from its potential ``y`` (a temporary, overwritten when ``θ' > 0``)."""
    th = per_channel(theta, y)
    if nonpositive is None:
        nonpositive = has_nonpositive(theta)
    if not nonpositive:
        return _iop(y, th, "div").floor_().clamp_(0, T)
    q = y / th
    k = torch.floor(q).clamp_(0, T)
    # Literal firing rule for a non-positive effective threshold (see spike_count).
    k_neg = (T + 1 - torch.ceil(q)).clamp_(0, T)
    k_zero = (y >= 0).to(k.dtype) * T
    return torch.where(th > 0, k, torch.where(th < 0, k_neg, k_zero))


def count_to_rate(k: Tensor, T: int, theta_post: Tensor, *, inplace: bool = False) -> Tensor:
    """Rate ``r = k · θ_post / T`` (Eq. 2 / Eq. 4 output; the time-mean of weighted spikes).

    ``inplace=True`` writes the rate into ``k`` (a temporary nobody else holds) when that is bit-identical.
    """
    scale = per_channel(theta_post / T, k)
    return _iop(k, scale, "mul") if inplace else k * scale


def _rate_expression(x: Tensor, psi_da: Tensor | None, psi: Tensor, theta: Tensor, scale: Tensor, T: int) -> Tensor:
    """:func:`spike_count` (θ' > 0 branch) then :func:`count_to_rate`, as one expression for ``torch.compile``.

    The same operations in the same order, so a compiler that keeps IEEE
    semantics (inductor's CPU and GPU code do: no FMA contraction, true
    division) returns the eager result bit for bit, in one pass over memory.
    """
    v = x if psi_da is None else x + psi_da
    return torch.clamp(torch.floor((v * T + psi) / theta), 0, T) * scale


_COMPILED_RATE = None
_FUSED_BROKEN: str | None = None


def fused_rate(
    x: Tensor, T: int, theta: Tensor, psi: Tensor, psi_da: Tensor | None, theta_post: Tensor
) -> Tensor | None:
    """Rate ``k·θ_post/T`` through ``torch.compile`` (inference only, every ``θ' > 0``); ``None`` if unavailable.

    Opt-in (:attr:`fxsnn.nn.ParallelIF.fused`): the first call per shape compiles
    (seconds). Where compilation fails (no C++ compiler, an unsupported
    platform) it warns once and returns ``None``, and the caller runs the
    eager expression.
    """
    global _COMPILED_RATE, _FUSED_BROKEN
    if _FUSED_BROKEN is not None:
        return None
    try:
        if _COMPILED_RATE is None:
            _COMPILED_RATE = torch.compile(_rate_expression, dynamic=True)  # one kernel for every shape and T
        return _COMPILED_RATE(
            x,
            None if psi_da is None else per_channel(psi_da, x),
            per_channel(psi, x),
            per_channel(theta, x),
            per_channel(theta_post / T, x),
            T,
        )
    except Exception as exc:  # compiler missing or failing: stay correct, say so once
        import warnings

        _FUSED_BROKEN = f"{type(exc).__name__}: {exc}"
        warnings.warn(
            f"fxsnn: the fused (torch.compile) rate neuron is unavailable here ({_FUSED_BROKEN[:200]}); "
            "running the eager neuron instead",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def firing_ladder(T: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """``n_t = T − t + 1`` for ``t = 1..T``: slot ``t`` needs ``n_t`` spikes' worth of potential (Eq. 8)."""
    return torch.arange(T, 0, -1, device=device, dtype=dtype)


def count_to_spikes(k: Tensor, ladder: Tensor, theta: Tensor, *, nonpositive: bool | None = None) -> Tensor:
    """Binary spike train ``[T, B, C, ...]`` with ``k`` spikes per neuron, in the slots of Eq. 8.

    For ``θ' > 0`` the slot with ladder value ``n`` fires iff ``n ≤ k`` (the
    last ``k`` slots: spikes are delayed, Sec. 4.3); for ``θ' ≤ 0`` the rule
    ``n·θ' ≤ y`` selects the first ``k`` slots instead.
    """
    return _spike_train(k, ladder, theta, nonpositive, k.dtype)


def count_to_weighted_spikes(
    k: Tensor, ladder: Tensor, theta: Tensor, theta_post: Tensor, *, nonpositive: bool | None = None
) -> Tensor:
    """``θ_post · count_to_spikes(k, ...)`` ``[T, B, C, ...]``: one ``[T, B, ...]`` buffer, two passes over it.

    The comparison writes 0/1 straight into the float output, which is then
    scaled in place: bit-identical to ``count_to_spikes(...) * θ_post`` without
    its second ``[T, B, ...]`` buffer (on CPU every fresh buffer of that size
    costs page faults, more than the arithmetic).
    """
    dtype = torch.promote_types(k.dtype, theta_post.dtype)  # the dtype of float-train · θ_post
    train = _spike_train(k, ladder, theta, nonpositive, dtype)
    return train.mul_(per_channel(theta_post, k).unsqueeze(0).to(dtype))


def _spike_train(k: Tensor, ladder: Tensor, theta: Tensor, nonpositive: bool | None, dtype) -> Tensor:
    T = ladder.numel()
    lad = ladder.view((T,) + (1,) * k.dim())
    if nonpositive is None:
        nonpositive = has_nonpositive(theta)
    if nonpositive:
        late = lad <= k.unsqueeze(0)
        early = lad > (T - k).unsqueeze(0)
        return torch.where(per_channel(theta, k).unsqueeze(0) > 0, late, early).to(dtype)
    out = torch.empty((T,) + tuple(k.shape), dtype=dtype, device=k.device)
    return torch.le(lad, k.unsqueeze(0), out=out)


def triangle_surrogate(u: Tensor, width: Tensor, *, inplace: bool = False) -> Tensor:
    """Triangle surrogate derivative of the Heaviside step (Appendix C).

    ``σ'(u) = max(0, 1 − |u|/w) / w``: a triangle of half-width ``w`` around the
    threshold with unit area, so integrating it gives back a unit step.
    ``u`` is any shape and ``width`` broadcasts against it (``[C]`` viewed by
    :func:`per_channel`, or a scalar). ``inplace=True`` overwrites ``u`` (a
    temporary nobody else holds) wherever that is bit-identical; the result
    is the same either way (``−a + 1`` and ``1 − a`` round identically).
    """
    a = u.abs_() if inplace else u.abs()
    return _iop(_iop(a, width, "div").neg_().add_(1).clamp_(min=0), width, "div")


def _channel_sum(g: Tensor) -> Tensor:
    dims = [d for d in range(g.dim()) if d != 1]
    return g.sum(dim=dims) if dims else g


class _QCFSFunction(torch.autograd.Function):
    """QCFS / DA-QCFS (Eq. 2 and Eq. 4) with a straight-through floor.

    Forward: ``a = (θ + φ_DA)/L · clip(⌊((x + ψ_DA)·L + θ/2)/θ⌋, 0, L)`` exactly
    as :func:`spike_count` / :func:`count_to_rate` compute it. Backward treats
    the floor as the identity (Bu et al., 2022): inside the clip range
    ``∂a/∂x = (θ+φ)/θ``, ``∂a/∂θ = φ-free slope of the STE surrogate``; above it
    ``a = θ + φ``.

    When only ``x`` needs a gradient (θ, ψ_DA, φ_DA frozen, as in Stage 1's defaults) and every θ > 0, the
    forward keeps just the ``[B, C, ...]`` boolean mask of ``0 < q < L`` (``q`` the un-floored count) instead of
    ``x`` and ``k``, and the backward is one scaled copy of ``g`` with the mask applied: the same gradient, two
    passes over memory instead of about eight, a quarter of the saved bytes.
    """

    @staticmethod
    def forward(ctx, x, theta, psi_da, phi_da, levels):
        psi = theta * 0.5
        theta_post = theta if phi_da is None else theta + phi_da
        ctx.levels = levels
        frozen = not any(ctx.needs_input_grad[1:4])
        nonpositive = has_nonpositive(theta) if frozen else None  # spike_count's own check, done once
        ctx.mask_only = frozen and not nonpositive
        if ctx.mask_only:
            q = _iop(potential(x, levels, psi, psi_da), per_channel(theta, x), "div")  # spike_count's q
            inside = (q > 0).logical_and_(q < levels) if ctx.needs_input_grad[0] else None
            ctx.save_for_backward(inside, theta, theta_post)
            return count_to_rate(q.floor_().clamp_(0, levels), levels, theta_post, inplace=True)
        k = spike_count(x, levels, theta, psi, psi_da, nonpositive=nonpositive)
        ctx.save_for_backward(x, theta, psi_da, phi_da, k)
        return count_to_rate(k, levels, theta_post)

    @staticmethod
    def backward(ctx, g):
        if ctx.mask_only:
            inside, theta, theta_post = ctx.saved_tensors
            if inside is None:
                return None, None, None, None, None
            # ~inside, not logical_not_(): the saved mask must survive for a second backward (retain_graph)
            grad_x = (g * per_channel(theta_post / theta, g)).masked_fill_(~inside, 0.0)
            return grad_x, None, None, None, None
        x, theta, psi_da, phi_da, k = ctx.saved_tensors
        L = ctx.levels
        th = per_channel(theta, x)
        theta_post = theta if phi_da is None else theta + phi_da
        tp = per_channel(theta_post, x)
        # q = ((x + ψ_DA)·L + θ/2)/θ, the un-floored count, in one temporary
        q = x * L if psi_da is None else (x + per_channel(psi_da, x)).mul_(L)
        q.add_(th * 0.5).div_(th)
        inside = (q > 0).logical_and_(q < L)
        # STE: a ≈ tp/L · q inside, tp above, 0 below, so ∂a/∂x = tp/θ inside
        grad_x = (g * (tp / th)).mul_(inside)
        grad_theta = grad_psi = grad_phi = None
        if ctx.needs_input_grad[1]:
            # d/dθ of tp/L·(vL + θ/2)/θ with tp = θ + φ: (1/L)·[q + tp·(1/(2θ) − q/θ)] inside, 1 above, 0 below
            above = q >= L
            dth = q.mul_(1 - tp / th).add_(tp * 0.5 / th).div_(L).mul_(inside).add_(above)
            grad_theta = _channel_sum(dth.mul_(g))
        if psi_da is not None and ctx.needs_input_grad[2]:
            grad_psi = _channel_sum(grad_x)  # ∂a/∂ψ_DA = ∂a/∂x
        if phi_da is not None and ctx.needs_input_grad[3]:
            grad_phi = _channel_sum(g * k / L)
        return (grad_x if ctx.needs_input_grad[0] else None), grad_theta, grad_psi, grad_phi, None


def qcfs(x: Tensor, theta: Tensor, levels: int, psi_da: Tensor | None = None, phi_da: Tensor | None = None) -> Tensor:
    """QCFS (Eq. 2, ψ = θ/2) or, with ``psi_da``/``phi_da``, DA-QCFS (Eq. 4); trainable by STE."""
    return _QCFSFunction.apply(x, theta, psi_da, phi_da, levels)


class _ParallelFire(torch.autograd.Function):
    """The parallel IF neuron (Eq. 5-8, 15-18) with a surrogate gradient (Sec. 4.3).

    Forward computes the count ``k`` once (:func:`spike_count` with
    ``θ' = θ_pre − Δb``) and returns either the rate ``k·θ_post/T``
    (``spike=False``, ``[B, C, ...]``) or the weighted spike train
    ``θ_post · s`` (``spike=True``, ``[T, B, C, ...]``).

    Backward replaces each slot's Heaviside ``s_t = H(u_t)`` with the triangle
    surrogate, where ``u_t = Λ_PC(t)·(x + ψ_DA) + b(t) + Δb − θ_pre`` with
    ``Λ_PC(t) = T/n_t`` and ``b(t) = ψ/n_t`` (Eq. 16-17). In rate mode the
    incoming gradient is the same for every slot (the time-mean's), so the
    rate-mode gradient is the spike-mode gradient summed in a different order.

    ``surrogate="ste"`` instead differentiates the count through the straight-through (learned-step-size
    style) relaxation ``k ≈ clip(q, 0, T)`` with ``q = y/θ'``, ``y = (x + ψ_DA)·T + ψ``, ``θ' = θ_pre − Δb``:
    inside ``0 < q < T``, ``∂k/∂x = T/θ'`` and ``∂k/∂Δb = q/θ'`` (0 outside); each of the ``k`` spikes is
    spread evenly over the ``T`` slots (``∂s_t/∂k = 1/T``), so the rate's gradient is ``θ_post/T·∂k``.
    """

    @staticmethod
    def forward(ctx, x, delta_b, theta_pre, theta_post, psi, psi_da, ladder, lambda_pc, bias, width, spike, surrogate):
        T = ladder.numel()
        theta_eff = theta_pre - delta_b
        nonpositive = has_nonpositive(theta_eff)  # one check per call, shared by count and train
        k = spike_count(x, T, theta_eff, psi, psi_da, nonpositive=nonpositive)
        ctx.save_for_backward(x, delta_b, theta_pre, theta_post, lambda_pc, bias, width)
        ctx.spike, ctx.surrogate = spike, surrogate
        if spike:
            return count_to_weighted_spikes(k, ladder, theta_eff, theta_post, nonpositive=nonpositive)
        return count_to_rate(k, T, theta_post, inplace=True)  # k is ours: no second [B, ...] buffer

    @staticmethod
    def backward(ctx, g):
        if ctx.surrogate == "ste":
            return _ste_backward(ctx, g)
        x, delta_b, theta_pre, theta_post, lambda_pc, bias, width = ctx.saved_tensors
        T = lambda_pc.numel()
        base = per_channel(delta_b - theta_pre, x)  # Δb − θ_pre
        tp = per_channel(theta_post, x)
        w = per_channel(width * theta_pre.abs().clamp(min=torch.finfo(x.dtype).tiny), x)
        sum_sig = torch.zeros_like(x)  # Σ_t σ'(u_t) [· g_t in spike mode]
        sum_sig_lam = torch.zeros_like(x)  # Σ_t σ'(u_t) · Λ_PC(t) [· g_t]
        lams = lambda_pc.tolist()  # one host copy, not one per step
        for t in range(T):
            lam = lams[t]
            # u_t = Λ_PC(t)·x + b(t) + Δb − θ_pre, with ψ_DA folded into b(t) (Alg. 1 l. 20);
            # then σ'(u_t), in place on the one temporary
            u = _iop(_iop(x * lam, per_channel(bias[t], x), "add"), base, "add")
            sig = triangle_surrogate(u, w, inplace=True)
            if ctx.spike:
                sig = _iop(sig, g[t], "mul")
            sum_sig += sig
            sum_sig_lam += _iop(sig, lam, "mul")
        scale = tp if ctx.spike else g * tp / T
        grad_x = sum_sig_lam * scale if ctx.needs_input_grad[0] else None
        grad_db = _channel_sum(sum_sig * scale) if ctx.needs_input_grad[1] else None
        return grad_x, grad_db, None, None, None, None, None, None, None, None, None, None


def _ste_backward(ctx, g: Tensor) -> tuple:
    """The ``surrogate="ste"`` backward of :class:`_ParallelFire` (its docstring)."""
    x, delta_b, theta_pre, theta_post, lambda_pc, bias, _ = ctx.saved_tensors
    T = lambda_pc.numel()
    th = per_channel(theta_pre - delta_b, x)
    th = torch.where(th.abs() > 0, th, torch.full_like(th, torch.finfo(x.dtype).tiny))
    # bias[T-1] = ψ + T·ψ_DA (the slot with n_t = 1), so y = x·T + bias[T-1]
    q = (x * T + per_channel(bias[-1], x)) / th
    inside = ((q > 0) & (q < T)).to(x.dtype)
    g_k = (g.sum(dim=0) if ctx.spike else g) * per_channel(theta_post, x) / T * inside  # ∂L/∂k, inside only
    grad_x = g_k * (T / th) if ctx.needs_input_grad[0] else None
    grad_db = _channel_sum(g_k * q / th) if ctx.needs_input_grad[1] else None
    return grad_x, grad_db, None, None, None, None, None, None, None, None, None, None


def parallel_fire(
    x: Tensor,
    *,
    delta_b: Tensor,
    theta_pre: Tensor,
    theta_post: Tensor,
    psi: Tensor,
    psi_da: Tensor | None,
    ladder: Tensor,
    lambda_pc: Tensor,
    bias: Tensor,
    width: Tensor,
    spike: bool,
    surrogate: str = "triangle",
) -> Tensor:
    """Functional form of :class:`fxsnn.nn.ParallelIF`; see :class:`_ParallelFire`.

    ``ladder``, ``lambda_pc`` ``[T]`` and ``bias`` ``[T, C]`` are the neuron's
    precomputed ``n_t``, ``Λ_PC(t)`` and ``b(t)`` (with ``T·ψ_DA`` folded in).
    ``surrogate``: the backward's estimator, ``"triangle"`` (Appendix C) or ``"ste"``.
    """
    args = (x, delta_b, theta_pre, theta_post, psi, psi_da, ladder, lambda_pc, bias, width, spike, surrogate)
    return _ParallelFire.apply(*args)
