"""Stage 2 (fxsnn.tune_delta_b, Algorithm 3, Eq. 17-18) on tiny networks."""

import pytest
import torch
import torch.nn.functional as F
from helpers import changed_keys, nan_loss_at, state, tiny_da, tiny_data

import fxsnn
from fxsnn.calibration.finetune import NonFiniteLossError
from fxsnn.calibration.stage2 import training_mode


def lowered(T=4, dtype=torch.float32, **kw):
    return fxsnn.passes.lower_to_paraif(tiny_da(T=T, dtype=dtype, **kw), T=T), tiny_data(dtype=dtype)


def delta_b_grads(snn, data, mode, surrogate=None):
    """The loss over ``data`` and each neuron's ∂loss/∂Δb, with the neurons' own estimator or ``surrogate``."""
    fxsnn.set_mode(snn, mode)
    kinds = {}
    for n in fxsnn.modes.neurons(snn).values():
        n.delta_b.grad = None
        kinds[n] = getattr(n, "surrogate", "triangle")
        if surrogate is not None:
            n.surrogate = surrogate
    try:
        loss = sum(F.cross_entropy(snn(x), y, reduction="sum") for x, y in data)
        loss.backward()
    finally:
        for n, kind in kinds.items():
            n.surrogate = kind
    return loss.detach(), [n.delta_b.grad.clone() for n in fxsnn.modes.neurons(snn).values()]


def test_rate_mode_gives_the_spike_mode_gradient_float64():
    snn, data = lowered(T=4, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a non-trivial Δb, inside the range Stage 2 explores
        for n in fxsnn.modes.neurons(snn).values():
            n.delta_b.copy_(0.1 * n.theta_pre * torch.randn(n.channels, generator=g, dtype=torch.float64))
    loss_r, grads_r = delta_b_grads(snn, data, "rate")
    loss_s, grads_s = delta_b_grads(snn, data, "spike")
    torch.testing.assert_close(loss_r, loss_s, rtol=1e-12, atol=1e-12)
    assert any(bool(gr.abs().gt(1e-6).any()) for gr in grads_r), "no gradient reached Δb: the test would be vacuous"
    for gr, gs in zip(grads_r, grads_s):
        torch.testing.assert_close(gr, gs, rtol=1e-9, atol=1e-12)


def test_training_in_rate_or_spike_mode_gives_the_same_delta_b_float64():
    snn, data = lowered(T=3, dtype=torch.float64)
    kw = dict(steps=3, lr=0.05, warmup=0, holdout=None, progress=False)
    rate = fxsnn.tune_delta_b(snn, data, mode="rate", **kw)
    spike = fxsnn.tune_delta_b(snn, data, mode="spike", **kw)
    assert rate.meta["fxsnn.stage2"].mode == "rate" and spike.meta["fxsnn.stage2"].mode == "spike"
    for a, b in zip(fxsnn.modes.neurons(rate).values(), fxsnn.modes.neurons(spike).values()):
        assert a.delta_b.abs().max() > 0
        torch.testing.assert_close(a.delta_b, b.delta_b, rtol=1e-9, atol=1e-12)


def test_auto_mode_is_rate_for_affine_graphs_and_spike_when_max_pool_reads_a_neuron():
    snn, _ = lowered()
    assert training_mode(snn, "auto")[0] == "rate"
    pooled, _ = lowered(pool="max")
    mode, why = training_mode(pooled, "auto")
    assert mode == "spike" and "pool" in why
    with pytest.raises(fxsnn.ModeError, match="pool.*mode='spike'"):
        training_mode(pooled, "rate")


def test_stage2_changes_only_delta_b_and_leaves_inputs_untouched():
    snn, data = lowered()
    before = state(snn)
    out = fxsnn.tune_delta_b(snn, data, epochs=2, width=0.3, holdout=None, progress=False)
    changed = changed_keys(before, state(out))
    assert changed and all(k.endswith("delta_b") for k in changed), changed
    assert not changed_keys(before, state(snn)), "the input network was modified"
    assert (
        fxsnn.modes.get_mode(out) == fxsnn.modes.get_mode(snn) == "spike"
    )  # trained in rate mode, handed back as given


@pytest.mark.parametrize("surrogate", ["ste", "triangle"])
@pytest.mark.parametrize("param", ["relative", "absolute"])
def test_first_adam_step_moves_delta_b_by_lr_times_its_scale(param, surrogate):
    snn, data = lowered()
    lr = 1e-2
    out = fxsnn.tune_delta_b(
        snn,
        data[:1],
        steps=1,
        lr=lr,
        lr_min=lr,
        warmup=0,
        clip_grad=None,
        holdout=None,
        parameterization=param,
        surrogate=surrogate,
        progress=False,
    )
    grads = delta_b_grads(snn, data[:1], "rate", surrogate)[1]
    for n, g in zip(fxsnn.modes.neurons(out).values(), grads):
        live = g.abs() > 1e-3  # Adam's first step is lr·g/(|g| + 1e-8): ±lr where |g| is not tiny
        scale = n.theta_pre if param == "relative" else torch.ones_like(n.theta_pre)
        torch.testing.assert_close(n.delta_b[live].abs(), lr * scale[live], rtol=1e-4, atol=0)
        assert torch.equal(torch.sign(n.delta_b[live]), -torch.sign(g[live]))


def test_early_stopping_keeps_the_best_held_out_state():
    snn, data = lowered()
    hold = tiny_data(n=48, seed=7)
    out = fxsnn.tune_delta_b(snn, data, epochs=3, lr=0.3, holdout=hold, patience=1, eval_every=1, progress=False)
    report = out.meta["fxsnn.stage2"]
    losses = [loss for _, loss in report.holdout]
    final = fxsnn.evaluate(out, hold, progress=False).loss
    assert final == pytest.approx(min(losses), rel=1e-5)
    assert final <= losses[0] + 1e-7  # never worse than before Stage 2
    if report.stopped_early:
        assert report.steps < report.planned_steps


def test_holdout_fraction_sets_aside_leading_batches():
    snn, data = lowered()
    out = fxsnn.tune_delta_b(snn, data, holdout=2, progress=False)  # 6 batches: 2 held out, 4 trained
    report = out.meta["fxsnn.stage2"]
    assert report.planned_steps == 4 and report.holdout[0][0] == 0


# -- bad input ----------------------------------------------------------------------------------------------


def test_T_mismatch_is_refused_naming_both():
    snn, data = lowered(T=4)
    with pytest.raises(fxsnn.ConversionError, match="T=2 was requested but the network was lowered with T=4"):
        fxsnn.tune_delta_b(snn, data, T=2, progress=False)


def test_unlowered_network_is_refused():
    data = tiny_data()
    with pytest.raises(fxsnn.ConversionError, match="lower_to_paraif"):
        fxsnn.tune_delta_b(tiny_da(), data, progress=False)


def test_data_without_targets_and_empty_data_are_refused():
    snn, _ = lowered()
    with pytest.raises(fxsnn.DataError, match="needs targets"):
        fxsnn.tune_delta_b(snn, tiny_data(targets=False), progress=False)
    with pytest.raises(fxsnn.DataError, match="no batches"):
        fxsnn.tune_delta_b(snn, [], progress=False)


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(surrogate="sigmoid"), "surrogate must be one of"),
        (dict(parameterization="log"), "parameterization must be one of"),
        (dict(mode="serial"), "mode must be one of"),
        (dict(width=0), "width"),
        (dict(clip_grad=-1), "clip_grad"),
        (dict(holdout=1.5), "holdout"),
        (dict(patience=0), "patience"),
    ],
)
def test_bad_options_are_refused_with_the_accepted_values(kw, msg):
    snn, data = lowered()
    with pytest.raises(ValueError, match=msg):
        fxsnn.tune_delta_b(snn, data, progress=False, **kw)


def test_nan_loss_stops_at_the_step_and_restores_the_last_good_state(monkeypatch):
    snn, data = lowered()
    bad = [(x.clone(), y) for x, y in data]
    bad[2][0][0, 0, 0, 0] = float("inf") * 0  # NaN in the third batch
    kw = dict(lr=0.05, lr_min=0.05, warmup=0, holdout=None, progress=False)
    with pytest.raises(fxsnn.DataError, match="batch 2 has non-finite values at the input"):
        fxsnn.tune_delta_b(snn, bad, **kw)
    nan_loss_at(monkeypatch, 3)  # finite data, the third loss NaN
    with pytest.raises(NonFiniteLossError, match="step 3") as info:
        fxsnn.tune_delta_b(snn, data, **kw)
    monkeypatch.undo()
    good = fxsnn.tune_delta_b(snn, data, steps=2, **kw)
    assert not changed_keys(state(good), state(info.value.model))
