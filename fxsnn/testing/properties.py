"""Property checks: each raises ``AssertionError`` with a readable message when the property fails.

Use them inside Hypothesis tests (with :mod:`fxsnn.testing.strategies`) or on
your own models and passes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

import torch
from torch import fx, nn

from ..modes import get_mode, set_mode
from ..nn import DAQCFS, QCFS, ParallelIF, SerialIF
from ..report.probes import spike_counts

__all__ = [
    "exact_spike_count",
    "check_spike_count_matches_qcfs",
    "check_spike_count_formula",
    "check_spike_slots",
    "check_serial_matches_parallel",
    "check_rewrite_preserves_output",
    "check_input_untouched",
    "RateSpikeComparison",
    "check_rate_matches_spike",
    "check_rate_equals_spike_float64",
]


# -- exact arithmetic -----------------------------------------------------------------
def _frac(t: torch.Tensor) -> list:
    return [Fraction(float(v)) for v in t.reshape(-1).tolist()]


def exact_spike_count(
    x: torch.Tensor,
    theta: torch.Tensor,
    T: int,
    *,
    psi_da: torch.Tensor | None = None,
    delta_b: torch.Tensor | None = None,
    slack: float = 8.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rational reference of the firing rule for ``x: [B, C]``: ``(counts, near_edge)``.

    With exact ``y = (x + ψ_DA)·T + θ/2`` and ``θ' = θ − Δb`` (the float values
    taken as exact binary fractions), the count is ``#{n ∈ 1..T : n·θ' ≤ y}``
    (Eq. 8 / Eq. 17). ``near_edge`` marks elements where ``y`` lies within
    ``slack`` times the float rounding bound of a boundary ``n·θ'``, i.e. where
    a float computation may legitimately decide the other way.
    """
    if x.dim() != 2:
        raise ValueError("exact_spike_count takes x of shape [B, C]")
    B, C = x.shape
    eps = torch.finfo(x.dtype).eps
    th = _frac(theta)
    pda = _frac(psi_da) if psi_da is not None else [Fraction(0)] * C
    db = _frac(delta_b) if delta_b is not None else [Fraction(0)] * C
    xs = _frac(x)
    counts = torch.zeros(B, C, dtype=torch.long)
    near = torch.zeros(B, C, dtype=torch.bool)
    for i in range(B):
        for c in range(C):
            xv = xs[i * C + c]
            psi = th[c] / 2
            y = (xv + pda[c]) * T + psi
            eff = th[c] - db[c]
            counts[i, c] = sum(1 for n in range(1, T + 1) if n * eff <= y)
            bound = (
                slack
                * eps
                * float((abs(xv) + abs(pda[c])) * T + abs(psi) + abs(y) + (T + 1) * (abs(th[c]) + abs(db[c])))
            )
            near[i, c] = any(abs(float(y - n * eff)) <= bound for n in range(0, T + 2))
    return counts, near


def _neuron(theta, T, psi_da=None, phi_da=None, delta_b=None, mode="rate") -> ParallelIF:
    theta_post = None if phi_da is None else theta + phi_da
    n = ParallelIF(theta, T=T, theta_post=theta_post, psi_da=psi_da, mode=mode).to(theta.dtype)
    if delta_b is not None:
        with torch.no_grad():
            n.delta_b.copy_(delta_b)
    return n


# -- single neuron ----------------------------------------------------------------------
@torch.no_grad()
def check_spike_count_matches_qcfs(
    x: torch.Tensor,
    theta: torch.Tensor,
    T: int,
    *,
    psi_da: torch.Tensor | None = None,
    phi_da: torch.Tensor | None = None,
) -> torch.Tensor:
    """A ``ParallelIF`` spike train's count equals the QCFS (``levels = T``) integer target, bit for bit (Eq. 9).

    Also checks that the spikes are 0/1 and that the rate-mode output equals
    the QCFS output exactly. ``x: [B, C, ...]``, ``theta: [C]`` (> 0). Returns
    the counts.
    """
    if psi_da is None and phi_da is None:
        q = QCFS(theta, levels=T).to(theta.dtype)
    else:
        q = DAQCFS(theta, levels=T).to(theta.dtype)
        q.psi_da.copy_(psi_da if psi_da is not None else torch.zeros_like(theta))
        q.phi_da.copy_(phi_da if phi_da is not None else torch.zeros_like(theta))
        psi_da, phi_da = q.psi_da, q.phi_da
    neuron = _neuron(theta, T, psi_da=psi_da, phi_da=phi_da)
    target = q.integer_target(x)
    train = neuron.spike_train(x)
    assert bool(((train == 0) | (train == 1)).all()), "spikes must be 0 or 1"
    count = train.sum(dim=0)
    bad = count != target
    assert not bool(bad.any()), (
        f"spike count != QCFS target at {int(bad.sum())} element(s), e.g. x={x[bad][0].item()!r}: "
        f"count {count[bad][0].item()} vs target {target[bad][0].item()} (T={T})"
    )
    out_rate, out_qcfs = neuron(x), q(x)
    assert torch.equal(out_rate, out_qcfs), "rate-mode ParallelIF output != QCFS output"
    return count


@torch.no_grad()
def check_spike_count_formula(
    x: torch.Tensor, theta: torch.Tensor, T: int, *, delta_b: torch.Tensor, psi_da: torch.Tensor | None = None
) -> int:
    """With Δb, the count equals ``clip(⌊((x+ψ_DA)·T + ψ)/(θ − Δb)⌋, 0, T)`` where ``θ − Δb > 0`` (bit for bit),
    and equals the exact rational firing rule everywhere (any sign of ``θ − Δb``) away from bin edges.

    ``x: [B, C]``. Returns the number of elements compared with the rational reference.
    """
    neuron = _neuron(theta, T, psi_da=psi_da, delta_b=delta_b)
    count = neuron.spike_train(x).sum(dim=0)
    _check_forward_matches_count(neuron, x, count)
    eff = theta - delta_b
    v = x if psi_da is None else x + psi_da
    formula = torch.floor((v * T + theta * 0.5) / eff).clamp(0, T)
    pos = (eff > 0).expand_as(x)
    mism = (count != formula) & pos
    assert not bool(mism.any()), (
        f"count != clip(floor((T·x + ψ)/(θ − Δb)), 0, T) at x={x[mism][0].item()!r}: {count[mism][0].item()} vs "
        f"{formula[mism][0].item()}"
    )
    exact, near = exact_spike_count(x, theta, T, psi_da=psi_da, delta_b=delta_b)
    ok = ~near
    wrong = (count.long() != exact) & ok
    assert not bool(wrong.any()), (
        f"count disagrees with the exact firing rule at x={x[wrong][0].item()!r}, θ−Δb="
        f"{eff.expand_as(x)[wrong][0].item()!r}: {count[wrong][0].item()} vs {exact[wrong][0].item()}"
    )
    return int(ok.sum())


def _check_forward_matches_count(neuron: ParallelIF, x: torch.Tensor, count: torch.Tensor) -> None:
    """Both forward modes emit what the count says: rate ``k·θ_post/T``, spike ``θ_post·s`` per slot."""
    T = neuron.T
    neuron.mode = "rate"
    rate = neuron(x)
    want = count * (neuron.theta_post / T)
    assert torch.equal(rate, want), "rate-mode forward != k·θ_post/T of the neuron's own spike count"
    neuron.mode = "spike"
    train_in = x.repeat((T,) + (1,) * (x.dim() - 1))
    spikes = neuron(train_in).view((T,) + tuple(x.shape))
    expect = neuron.spike_train(neuron.time_mean(train_in)) * neuron.theta_post
    assert torch.equal(spikes, expect), "spike-mode forward != θ_post · spike_train of its time-mean input"
    neuron.mode = "rate"


@torch.no_grad()
def check_spike_slots(
    x: torch.Tensor,
    theta: torch.Tensor,
    T: int,
    *,
    delta_b: torch.Tensor | None = None,
    psi_da: torch.Tensor | None = None,
) -> None:
    """Spikes are 0/1 and sit in the slots the firing rule (Eq. 8 with Eq. 17) assigns.

    Slot ``t`` (ladder value ``n = T − t + 1``) fires iff ``n·(θ − Δb) ≤ (x + ψ_DA)·T + ψ``,
    checked in exact rational arithmetic away from bin edges; for ``θ − Δb > 0``
    the spikes always fill the last ``k`` slots (the delayed firing of Sec. 4.3).
    ``x: [B, C]``.
    """
    db = torch.zeros_like(theta) if delta_b is None else delta_b
    neuron = _neuron(theta, T, psi_da=psi_da, delta_b=db)
    train = neuron.spike_train(x)  # [T, B, C]
    assert bool(((train == 0) | (train == 1)).all()), "spikes must be 0 or 1"
    eff = theta - db
    k = train.sum(dim=0)
    ladder = torch.arange(T, 0, -1, dtype=x.dtype).view(T, 1, 1)
    suffix = (ladder <= k.unsqueeze(0)).to(x.dtype)
    pos = (eff > 0).view(1, 1, -1).expand_as(train)
    assert torch.equal(train[pos], suffix[pos]), "with θ − Δb > 0 the spikes must fill the last k slots"
    _, near = exact_spike_count(x, theta, T, psi_da=psi_da, delta_b=db)
    th, pda, dbs = _frac(theta), (_frac(psi_da) if psi_da is not None else None), _frac(db)
    xs = _frac(x)
    B, C = x.shape
    for i in range(B):
        for c in range(C):
            if near[i, c]:
                continue
            y = (xs[i * C + c] + (pda[c] if pda else 0)) * T + th[c] / 2
            for t in range(1, T + 1):
                fires = (T - t + 1) * (th[c] - dbs[c]) <= y
                assert int(train[t - 1, i, c]) == int(fires), (
                    f"slot t={t} of x={float(xs[i * C + c])!r} (θ={float(th[c])}, Δb={float(dbs[c])}, T={T}) "
                    f"should {'fire' if fires else 'stay silent'} by Eq. 8"
                )


@torch.no_grad()
def check_serial_matches_parallel(
    x: torch.Tensor, theta: torch.Tensor, T: int, *, psi_da: torch.Tensor | None = None
) -> int:
    """A serial IF neuron (Eq. 1, λ = 1, reset by subtraction, v⁰ = θ/2) driven by the constant current ``x``
    for ``T`` steps emits the parallel neuron's count (Eq. 12-13).

    Compared wherever no partial sum ``(t·(x + ψ_DA) + θ/2)/θ``, ``t ≤ T``, is
    within float rounding of an integer (there the serial accumulation may
    round the other way). ``x: [B, C]``. Returns the number of elements compared.
    """
    parallel = _neuron(theta, T, psi_da=psi_da)
    expected = parallel.spike_count(x)
    serial = SerialIF(theta, psi_da=psi_da).to(x.dtype)
    for _ in range(T):
        serial(x)
    got = serial.spike_count
    eps = torch.finfo(x.dtype).eps
    v = x if psi_da is None else x + psi_da
    safe = torch.ones_like(x, dtype=torch.bool)
    for t in range(1, T + 1):
        q = (t * v + theta * 0.5) / theta
        tol = 16 * eps * (t * (x.abs() + (psi_da.abs() if psi_da is not None else 0)) / theta + q.abs() + 1) * T
        safe &= (q - torch.round(q)).abs() > tol
    wrong = (got != expected) & safe
    assert not bool(wrong.any()), (
        f"serial IF count {got[wrong][0].item()} != parallel count {expected[wrong][0].item()} "
        f"for constant input {x[wrong][0].item()!r} (T={T})"
    )
    return int(safe.sum())


# -- networks and passes ---------------------------------------------------------------
def _snapshot(gm: nn.Module):
    state = {k: v.detach().clone() for k, v in gm.state_dict().items()}
    kinds = {name: (type(m).__name__, repr(m)) for name, m in gm.named_modules()}
    code = gm.code if isinstance(gm, fx.GraphModule) else None
    return state, kinds, code


def check_input_untouched(rewrite: Callable[..., nn.Module], gm: nn.Module, *args, **kwargs) -> nn.Module:
    """``rewrite(gm, *args, **kwargs)`` leaves ``gm`` exactly as it was and returns a GraphModule that passes ``lint()``.

    Compares the state dict (bit for bit), every submodule's type and repr, and
    the generated code before and after. Returns the rewrite's result.
    """
    before = _snapshot(gm)
    out = rewrite(gm, *args, **kwargs)
    after = _snapshot(gm)
    assert before[2] == after[2], "the rewrite changed its input's graph"
    assert before[1] == after[1], "the rewrite changed its input's modules"
    assert before[0].keys() == after[0].keys(), "the rewrite changed its input's state_dict keys"
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k]), f"the rewrite changed its input's tensor {k!r}"
    assert isinstance(out, fx.GraphModule), f"a rewrite must return a GraphModule; got {type(out).__name__}"
    assert out is not gm, "a rewrite must return a new GraphModule, not its input"
    out.graph.lint()
    return out


@torch.no_grad()
def check_rewrite_preserves_output(
    rewrite: Callable[[nn.Module], nn.Module], gm: nn.Module, *inputs, exact: bool = True, atol: float = 0.0
) -> nn.Module:
    """``rewrite(gm)(*inputs)`` equals ``gm(*inputs)`` — bit for bit when ``exact``, else within ``atol``.

    Inputs are cloned for each call, so in-place ops in the model cannot leak
    from one run into the other. Returns the rewritten module.
    """
    expected = gm(*[copy.deepcopy(i) for i in inputs])
    out = rewrite(gm)
    got = out(*[copy.deepcopy(i) for i in inputs])
    if exact:
        assert torch.equal(got, expected), (
            f"rewrite changed the output (max |diff| {float((got - expected).abs().max())})"
        )
    else:
        assert torch.allclose(got, expected, atol=atol, rtol=0), (
            f"rewrite changed the output beyond atol={atol} (max |diff| {float((got - expected).abs().max())})"
        )
    return out


@dataclass(frozen=True)
class RateSpikeComparison:
    """How far rate mode is from spike mode on one input.

    ``max_abs_diff``: largest logit difference; ``mismatched``/``total``: neurons whose integer spike count
    differs between the modes; ``per_site``: ``{site: (mismatched, total)}`` in graph order (a flip at one site
    can cascade into the sites after it).
    """

    max_abs_diff: float
    mismatched: int
    total: int
    per_site: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def mismatch_rate(self) -> float:
        return self.mismatched / max(self.total, 1)

    @property
    def first_mismatch(self) -> str | None:
        """The first site (graph order) where a count differs; ``None`` when every count agrees."""
        return next((name for name, (m, _) in self.per_site.items() if m), None)

    def __str__(self) -> str:
        text = (
            f"rate and spike mode differ on {self.mismatched}/{self.total} spike counts "
            f"({100 * self.mismatch_rate:.4f} %), max |logit difference| {self.max_abs_diff:.3g}"
        )
        if self.first_mismatch is None:
            return text
        worst = max(self.per_site, key=lambda n: self.per_site[n][0] / max(self.per_site[n][1], 1))
        m, n = self.per_site[self.first_mismatch]
        wm, wn = self.per_site[worst]
        return (
            f"{text}; first at site {self.first_mismatch!r} ({m}/{n}), most at site {worst!r} "
            f"({wm}/{wn} = {100 * wm / max(wn, 1):.4f} %)"
        )


def _compare_modes(snn: nn.Module, inputs: tuple) -> tuple[RateSpikeComparison, float]:
    """Run ``snn`` in rate then spike mode (its mode is put back): the comparison of the logits and every site's
    counts, and the logit scale ``max |rate logits| + 1``."""
    original = get_mode(snn)
    try:
        set_mode(snn, "rate")
        rate_out, rate_counts = snn(*inputs), spike_counts(snn, *inputs)
        set_mode(snn, "spike")
        spike_out, spike_counts_ = snn(*inputs), spike_counts(snn, *inputs)
    finally:
        set_mode(snn, original)
    per_site = {k: (int((rate_counts[k] != spike_counts_[k]).sum()), rate_counts[k].numel()) for k in rate_counts}
    diff = float((rate_out - spike_out).abs().max()) if rate_out.numel() else 0.0
    mism = sum(m for m, _ in per_site.values())
    scale = float(rate_out.abs().max()) + 1.0 if rate_out.numel() else 1.0
    return RateSpikeComparison(diff, mism, sum(n for _, n in per_site.values()), per_site), scale


@torch.no_grad()
def check_rate_matches_spike(
    snn: nn.Module, *inputs, atol: float = 1e-3, max_mismatch_rate: float = 0.01
) -> RateSpikeComparison:
    """Rate and spike mode of a lowered network agree: at most ``max_mismatch_rate`` of the spike counts
    differ, and with no count differing the logits agree within ``atol`` (relative to the logit scale).

    In float32 the modes round ``mean_t(layer(s_t))`` (spike) and ``layer(mean_t s_t)`` (rate) differently and
    ``floor`` turns one ulp into one spike, so a small fraction of counts may differ and the flips cascade
    (measured in docs/correctness.md: up to a few percent on deep random-weight networks). Raises
    ``AssertionError`` (an explicit ``raise``, so also under ``python -O``) naming the mismatch count, the
    first and the worst site when the rate exceeds ``max_mismatch_rate``. ``max_mismatch_rate=0`` asks for
    exact agreement; :func:`check_rate_equals_spike_float64` checks it in float64. The network's mode is
    restored afterwards. Returns the measured :class:`RateSpikeComparison` (per site in ``per_site``).
    """
    if not 0 <= max_mismatch_rate <= 1 or not atol >= 0:
        raise ValueError(
            f"check_rate_matches_spike: max_mismatch_rate must be in [0, 1] and atol >= 0; got "
            f"{max_mismatch_rate!r}, {atol!r}"
        )
    result, scale = _compare_modes(snn, inputs)
    if result.mismatch_rate > max_mismatch_rate:
        raise AssertionError(f"{result} > the tolerance max_mismatch_rate={max_mismatch_rate:g}")
    if result.mismatched == 0 and result.max_abs_diff > atol * scale:
        raise AssertionError(f"rate vs spike logits differ by {result.max_abs_diff} with identical spike counts")
    return result


@torch.no_grad()
def check_rate_equals_spike_float64(snn: nn.Module, *inputs) -> RateSpikeComparison:
    """Rate and spike mode of a float64 copy of ``snn`` give **the same spike count at every neuron** (0 mismatches).

    In float32 the two modes round ``mean_t(layer(s_t))`` and ``layer(mean_t s_t)`` differently and ``floor``
    turns one ulp into one spike, so :func:`check_rate_matches_spike` bounds the mismatch rate instead. In float64
    the rounding is about 2⁻⁵³ relative, far below the bin width of any network fxsnn builds, and the two modes
    agree exactly on the random networks of fxsnn's property tests; this check asserts that (it is a measured
    property, not a theorem: an input placed within float64 rounding of a bin edge could still flip).
    ``snn`` itself is untouched (a float64 copy runs); its inputs are cast to float64. Raises ``AssertionError``
    (explicitly, also under ``python -O``) naming the first differing site.
    """
    net = copy.deepcopy(snn).double()
    xs = tuple(x.double() if torch.is_tensor(x) and x.is_floating_point() else x for x in inputs)
    result, scale = _compare_modes(net, xs)
    if result.mismatched:
        raise AssertionError(f"float64: {result}")
    if result.max_abs_diff > 1e-9 * scale:
        raise AssertionError(f"float64 rate vs spike logits differ by {result.max_abs_diff} with identical counts")
    return result
