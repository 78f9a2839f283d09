"""Issue 4, "no wasted work": structural checks (no timing) that the fast paths stay fast.

Rate mode never allocates a tensor with a time axis; neurons build Λ_PC / b(t)
once; calibration runs without autograd and without copying or re-tracing the
model per batch; recorders update with a fixed number of tensor ops whatever
the channel count (no per-channel Python loop), in any memory format.
"""

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile

import fxsnn
import fxsnn.testing as ft
from fxsnn.calibration import calibrate_, calibrate_da_
from fxsnn.nn import ActivationRecorder, ParallelIF
from fxsnn.nn import functional as Fx


class _Outputs(TorchFunctionMode):
    """Records the numel of every tensor any torch function returns (inside autograd Functions too)."""

    def __init__(self):
        super().__init__()
        self.numels, self.calls = [], 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.calls += 1
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numels.append(t.numel())
        return out


def _largest_tensor(fn) -> int:
    with torch.no_grad(), _Outputs() as probe:
        fn()
    return max(probe.numels)


def _largest_allocation(fn) -> int:
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(e.nbytes() for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")


def _lowered(seed: int, T: int):
    model = ft.random_cnn(seed, maxpool=True)
    x = ft.inputs_for(model, batch=8, seed=seed)
    gm = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(model)), [x, 1.5 * x], progress=False)
    q = fxsnn.calibrate_da(fxsnn.passes.to_da_qcfs(gm, levels=T), [x], progress=False)
    return q, fxsnn.passes.lower_to_paraif(q, T=T, mode="rate"), x


@pytest.mark.parametrize("seed", range(6))
def test_rate_mode_allocates_no_time_axis(seed):
    T = 7  # a prime: a [T·B, ...] tensor cannot hide behind another shape's numel
    q, snn, x = _lowered(seed, T)
    ann_like = _largest_tensor(lambda: q(x))
    assert _largest_tensor(lambda: snn(x)) <= ann_like
    assert _largest_allocation(lambda: snn(x)) <= _largest_allocation(lambda: q(x))
    # the probe does see the time axis where there is one: from the first neuron on (direct encoding: the
    # layers before it run once per image in spike mode too)
    sizes = []
    hooks = [
        n.register_forward_hook(lambda m, i, o: sizes.append(o.numel())) for n in fxsnn.modes.neurons(snn).values()
    ]
    with torch.no_grad():
        snn(x)
    for h in hooks:
        h.remove()
    fxsnn.set_mode(snn, "spike")
    assert _largest_tensor(lambda: snn(x)) >= T * max(sizes)


def test_neurons_build_their_time_tensors_once(monkeypatch):
    _, snn, x = _lowered(0, 4)
    neurons = list(fxsnn.modes.neurons(snn).values())
    before = [(n.ladder.data_ptr(), n.lambda_pc.data_ptr(), n.bias.data_ptr()) for n in neurons]

    def boom(*a, **k):
        raise AssertionError("firing_ladder called during a forward pass")

    monkeypatch.setattr(Fx, "firing_ladder", boom)
    for mode in ("rate", "spike"):
        fxsnn.set_mode(snn, mode)
        snn(x).sum()
    assert before == [(n.ladder.data_ptr(), n.lambda_pc.data_ptr(), n.bias.data_ptr()) for n in neurons]


def test_calibration_passes_run_without_autograd_or_model_copies(monkeypatch):
    model = ft.random_cnn(3)
    data = [ft.inputs_for(model, batch=4, seed=s) for s in range(5)]
    gm = fxsnn.passes.insert_recorders(fxsnn.trace(model))
    q = fxsnn.passes.to_da_qcfs(
        fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(model)), data, progress=False), levels=4
    )
    grad_seen = []
    for m in list(gm.modules()) + list(q.modules()):
        if isinstance(m, (ActivationRecorder, fxsnn.nn.DAQCFS)):
            m.register_forward_pre_hook(lambda mod, args: grad_seen.append(torch.is_grad_enabled()))
    copies = []
    monkeypatch.setattr(torch.fx.GraphModule, "recompile", lambda self: copies.append("recompile"))
    import copy

    real_deepcopy = copy.deepcopy
    monkeypatch.setattr(copy, "deepcopy", lambda *a, **k: copies.append("deepcopy") or real_deepcopy(*a, **k))
    calibrate_(gm, data, progress=False)  # in place: the copying versions deep-copy by design
    calibrate_da_(q, data, progress=False)
    assert grad_seen and not any(grad_seen)
    assert copies == []


def _ops_per_update(C: int, percentile, memory_format=torch.contiguous_format) -> int:
    rec = ActivationRecorder(percentile=percentile)
    rec.recording = True
    gen = torch.Generator().manual_seed(C)
    rec(torch.rand(4, C, 5, 5, generator=gen))  # sizes the buffers
    x = (3 * torch.randn(4, C, 5, 5, generator=gen)).contiguous(memory_format=memory_format)
    with _Outputs() as probe:
        rec(x)
    return probe.calls


@pytest.mark.parametrize("percentile", [None, 99.9])
def test_recorder_update_does_not_loop_over_channels(percentile):
    assert _ops_per_update(2, percentile) == _ops_per_update(64, percentile)


def test_recorder_accepts_channels_last_input_and_matches_contiguous():
    x = torch.randn(6, 5, 4, 3, generator=torch.Generator().manual_seed(0)) * 2 + 0.3
    recs = [ActivationRecorder(percentile=99.0) for _ in range(2)]
    for r, xi in zip(recs, (x, x.contiguous(memory_format=torch.channels_last))):
        r.recording = True
        r(xi)
        r(2 * xi)
    for k, v in recs[0].state_dict().items():
        assert torch.equal(v, recs[1].state_dict()[k]), k


def test_recorder_histogram_survives_a_channel_going_silent_while_another_grows():
    rec = ActivationRecorder(percentile=99.0)
    rec.recording = True
    rec(torch.tensor([[1.0, 1.0]]))
    rec(torch.tensor([[-1.0, 5.0]]))  # channel 0: batch max <= 0; channel 1: the range grows x8
    assert rec.theta().tolist() == [1.0, 5.0]


def test_rate_neuron_writes_its_output_into_its_one_temporary():
    """The rate-mode forward allocates one [B, ...] buffer (the count, then the rate in place)."""
    n = ParallelIF(torch.rand(3) + 0.5, T=4, psi_da=0.1 * torch.randn(3), mode="rate")
    x = torch.randn(64, 3, 16, 16)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        n(x)
    big = [
        e.nbytes() for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.nbytes() >= x.nbytes
    ]
    assert big == [x.nbytes], big
