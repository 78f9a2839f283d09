"""The opt-in compiled rate neuron (fxsnn.modes.set_fused): bit-identical to the eager neuron, inference only."""

import pytest
import torch

import fxsnn
import fxsnn.testing as ft
from fxsnn.nn import ParallelIF
from fxsnn.nn import functional as Fx


def _edge_inputs(theta, T, psi_da, dtype, gen):
    """Random inputs plus inputs that put y = (x + ψ_DA)·T + ψ on, and one ulp beside, every bin edge n·θ."""
    C = theta.numel()
    x = 3 * torch.randn(16, C, 6, 6, generator=gen, dtype=dtype)
    n = torch.randint(-1, T + 2, (16, C, 6, 6), generator=gen).to(dtype)
    th, pd = theta.view(-1, 1, 1), psi_da.view(-1, 1, 1)
    edge = (n * th - th / 2) / T - pd
    x[4:8] = edge[4:8]
    x[8:12] = torch.nextafter(edge[8:12], torch.full_like(edge[8:12], float("inf")))
    x[12:16] = torch.nextafter(edge[12:16], torch.full_like(edge[12:16], -float("inf")))
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("da", [False, True])
def test_fused_rate_neuron_equals_eager_bit_for_bit(dtype, da):
    gen = torch.Generator().manual_seed(int(da) + 2 * (dtype == torch.float64))
    T, C = 4, 5
    theta = torch.rand(C, generator=gen, dtype=dtype) + 0.2
    psi_da = 0.1 * torch.randn(C, generator=gen, dtype=dtype) if da else torch.zeros(C, dtype=dtype)
    n = ParallelIF(theta, T=T, theta_post=theta * 1.3, psi_da=psi_da if da else None, mode="rate")
    with torch.no_grad():
        n.delta_b.copy_(0.05 * torch.randn(C, generator=gen, dtype=dtype))
        x = _edge_inputs(theta - n.delta_b, T, psi_da, dtype, gen)
        eager = n(x)
        n.fused = True
        fused = n(x)
    assert fused.dtype == eager.dtype
    assert torch.equal(fused, eager)


def test_fused_is_inference_only_and_keeps_gradients():
    n = ParallelIF(torch.tensor([1.0, 0.5]), T=4, mode="rate", fused=True)
    x = torch.randn(3, 2, requires_grad=True)
    n(x).sum().backward()  # grad mode: the eager autograd Function runs
    assert x.grad is not None and n.delta_b.grad is not None


def test_set_fused_on_a_network_keeps_the_logits():
    model = ft.random_cnn(1)
    x = ft.inputs_for(model, batch=8)
    gm = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(model)), [x], progress=False)
    snn = fxsnn.passes.lower_to_paraif(fxsnn.passes.to_qcfs(gm, levels=3), T=3, mode="rate")
    with torch.inference_mode():
        eager = snn(x)
        assert fxsnn.modes.set_fused(snn) is snn
        assert all(n.fused for n in fxsnn.modes.neurons(snn).values())
        assert torch.equal(snn(x), eager)


def test_fused_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(Fx, "_COMPILED_RATE", broken)
    monkeypatch.setattr(Fx, "_FUSED_BROKEN", None)
    n = ParallelIF(torch.tensor([1.0]), T=4, mode="rate", fused=True)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="fused"):
        out = n(torch.tensor([[0.3]]))
    assert out.tolist() == [[0.25]]
    with torch.no_grad():
        assert n(torch.tensor([[0.3]])).tolist() == [[0.25]]  # no second warning needed: stays eager
