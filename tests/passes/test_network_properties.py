"""Property tests on random small CNNs drawn from fxsnn.testing.small_cnns (every ReLU spelling)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fxsnn
import fxsnn.testing as ft

NET = settings(max_examples=25, deadline=None)


def _calibrated(model, x, percentile=None):
    gm = fxsnn.passes.insert_recorders(fxsnn.trace(model), percentile=percentile)
    return fxsnn.calibrate(gm, [x, x * 1.5], progress=False)


@NET
@given(model=ft.small_cnns(maxpool=True), seed=st.integers(0, 10))
def test_normalize_keeps_outputs_bit_identical_and_is_idempotent(model, seed):
    x = ft.inputs_for(model, seed=seed)
    gm = fxsnn.trace(model)
    once = ft.check_input_untouched(fxsnn.passes.normalize, gm)
    ft.check_rewrite_preserves_output(fxsnn.passes.normalize, gm, x)
    twice = ft.check_input_untouched(fxsnn.passes.normalize, once)
    assert twice.code == once.code
    assert [n for n, _ in twice.named_modules()] == [n for n, _ in once.named_modules()]
    # every ReLU is now its own out-of-place nn.ReLU call site
    sites = fxsnn.find_sites(once)
    assert all(s.kind == "ReLU" for s in sites)
    targets = [n.target for n in once.graph.nodes if n.op == "call_module"]
    assert len(set(s.name for s in sites)) == len(sites) == sum(t in {s.name for s in sites} for t in targets)
    assert not any(m.inplace for m in once.modules() if isinstance(m, torch.nn.ReLU))


@NET
@given(model=ft.small_cnns(maxpool=True), pct=st.sampled_from([None, 99.0]))
def test_insert_recorders_keeps_outputs_identical(model, pct):
    x = ft.inputs_for(model)
    gm = fxsnn.trace(model)
    rec = ft.check_input_untouched(fxsnn.passes.insert_recorders, gm, percentile=pct)
    with fxsnn.calibration.recording(rec):
        ft.check_rewrite_preserves_output(lambda g: rec, gm, x)
    assert all(s.kind == "recorder" for s in fxsnn.find_sites(rec))
    assert all(r.has_data for r in rec.modules() if isinstance(r, fxsnn.nn.ActivationRecorder))


@NET
@given(model=ft.small_cnns(), T=ft.time_steps(8), da=st.booleans())
def test_qcfs_network_and_its_parallel_lowering_give_the_same_logits(model, T, da):
    """Eq. 9 at network level: rate mode is bit-identical; spike mode agrees up to summation order."""
    x = ft.inputs_for(model)
    rec = _calibrated(model, x)
    if da:
        q = ft.check_input_untouched(fxsnn.passes.to_da_qcfs, rec, levels=T)
        q = fxsnn.calibrate_da(q, [x], progress=False)
    else:
        q = ft.check_input_untouched(fxsnn.passes.to_qcfs, rec, levels=T)
    snn = ft.check_input_untouched(fxsnn.passes.lower_to_paraif, q, T=T, mode="rate")
    with torch.no_grad():
        assert torch.equal(snn(x), q(x))
    ft.check_rate_matches_spike(snn, x, max_mismatch_rate=0.02)
    ft.check_rate_equals_spike_float64(snn, x)


@NET
@given(model=ft.small_cnns(maxpool=True), T=ft.time_steps(8))
def test_max_pool_on_a_neuron_output_commutes_with_the_time_mean(model, T):
    x = ft.inputs_for(model)
    snn = fxsnn.passes.lower_to_paraif(fxsnn.passes.to_qcfs(_calibrated(model, x), levels=T), T=T, mode="rate")
    ft.check_rate_matches_spike(snn, x, max_mismatch_rate=0.02)
    ft.check_rate_equals_spike_float64(snn, x)


def test_rate_vs_spike_mismatch_is_rare_on_many_networks():
    """Measure (not just bound) how often the two modes' spike counts differ across 40 random networks."""
    mism = total = 0
    for seed in range(40):
        model = ft.random_cnn(seed, maxpool=True)
        x = ft.inputs_for(model, batch=8, seed=seed)
        T = 1 + seed % 8
        snn = fxsnn.passes.lower_to_paraif(fxsnn.passes.to_qcfs(_calibrated(model, x), levels=T), T=T, mode="rate")
        r = ft.check_rate_matches_spike(snn, x, max_mismatch_rate=0.05)
        assert ft.check_rate_equals_spike_float64(snn, x).mismatched == 0
        mism += r.mismatched
        total += r.total
    assert total > 10_000
    assert mism / total < 0.005, f"{mism}/{total} spike counts differ between rate and spike mode"
