"""QCFS / DA-QCFS: Eq. 2 and 4 values, straight-through training, and the DA error calibration (Alg. 1)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fxsnn
import fxsnn.testing as ft
from fxsnn.calibration import calibrate_da_
from fxsnn.nn import DAQCFS, QCFS
from fxsnn.nn import functional as Fx


def test_qcfs_values_follow_eq2():
    q = QCFS(torch.tensor([2.0]), levels=4)  # step θ/L = 0.5, rounding at the bin midpoints (ψ = θ/2)
    x = torch.tensor([[-1.0], [0.2], [0.25], [0.74], [0.75], [1.9], [5.0]])
    assert q(x).flatten().tolist() == [0.0, 0.0, 0.5, 0.5, 1.0, 2.0, 2.0]


def test_da_qcfs_values_follow_eq4_and_reference_is_clip_relu():
    q = DAQCFS(torch.tensor([2.0]), levels=4)
    q.psi_da.fill_(0.25)
    q.phi_da.fill_(0.4)
    x = torch.tensor([[0.0], [0.5], [3.0], [-1.0]])
    # a = (θ + φ)/L · clip(⌊((x + ψ_DA)·L + θ/2)/θ⌋, 0, L) = 0.6 · clip(⌊2x + 1⌋, 0, 4)
    assert torch.allclose(q(x).flatten(), torch.tensor([0.6, 1.2, 2.4, 0.0]))
    q.reference = True
    assert torch.equal(q(x).flatten(), torch.tensor([0.0, 0.5, 2.0, 0.0]))


def test_qcfs_gradients_are_straight_through():
    theta = torch.tensor([2.0, 1.0])
    q = QCFS(theta, levels=4)
    x = torch.tensor([[0.3, 0.2], [3.0, -1.0]], requires_grad=True)
    q(x).sum().backward()
    # inside the clip range ∂a/∂x = 1; clipped above or below: 0
    assert x.grad.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    # ∂a/∂θ: 1/(2L) inside (ψ = θ/2 moves with θ), 1 when clipped above, 0 below
    assert torch.allclose(q.theta.grad, torch.tensor([0.125 + 1.0, 0.125]))


def test_a_qcfs_network_trains_from_scratch():
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = (x[:, 0] + x[:, 1] > 0).long()
    net = nn.Sequential(nn.Linear(4, 16), QCFS(torch.ones(16), levels=4), nn.Linear(16, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    theta0 = net[1].theta.detach().clone()
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert not torch.equal(net[1].theta.detach(), theta0)


def test_calibrate_da_applies_the_momentum_update_of_algorithm_1():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    x = torch.randn(64, 3)
    gm = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(model)), [x], progress=False)
    q = fxsnn.passes.to_da_qcfs(gm, levels=2)
    first, second = q.get_submodule("1"), q.get_submodule("3")
    pre = model[0](x)
    calibrate_da_(q, [x], momentum=0.9, progress=False)  # in place: first, second are its modules
    # site 1 sees the same pre-activation in both networks: e_pre = 0
    assert torch.equal(first.psi_da, torch.zeros(5))
    clip = torch.minimum(torch.relu(pre), first.theta.detach())
    da = QCFS(first.theta.detach(), levels=2)(pre)
    assert torch.allclose(first.phi_da, 0.1 * (clip.mean(0) - da.mean(0)), atol=1e-6)
    # site 2's pre-activations differ (its inputs came through different activations)
    pre_oa = model[2](clip)
    pre_da = model[2](da)
    assert torch.allclose(second.psi_da, 0.1 * (pre_oa.mean(0) - pre_da.mean(0)), atol=1e-6)
    assert not any(m.reference for m in q.modules() if isinstance(m, DAQCFS))


def test_calibrate_da_refuses_graphs_without_da_sites_and_bad_momentum():
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU())
    gm = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(model)), [torch.randn(4, 3)], progress=False)
    import pytest

    with pytest.raises(fxsnn.ConversionError, match="to_da_qcfs"):
        fxsnn.calibrate_da(gm, [torch.randn(4, 3)])
    with pytest.raises(ValueError, match="momentum"):
        fxsnn.calibrate_da(fxsnn.passes.to_da_qcfs(gm, levels=2), [torch.randn(4, 3)], momentum=1.0)


DTYPES = st.sampled_from([torch.float32, torch.float64])


@settings(max_examples=100, deadline=None)
@given(data=st.data(), dtype=DTYPES, da=st.booleans())
def test_frozen_theta_path_gives_the_general_paths_output_and_input_gradient_bit_for_bit(data, dtype, da):
    """With θ, ψ_DA, φ_DA frozen the QCFS keeps only the mask 0 < q < L for its backward (Stage 1's common case);
    its output and ∂/∂x equal those of the path that also differentiates θ, the bin edges included."""
    case = data.draw(ft.neuron_cases(dtype=dtype, da=da))
    phi = data.draw(st.floats(-0.5, 0.5)) * case.theta if da else None
    psi = case.psi_da if da else None
    x = case.x  # [B, C]
    g = torch.randn(x.shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    outs = []
    for train_theta in (False, True):
        xi = x.clone().requires_grad_(True)
        theta = case.theta.clone().requires_grad_(train_theta)
        y = Fx.qcfs(xi, theta, case.T, psi, phi)
        y.backward(g, retain_graph=True)
        once = xi.grad.clone()
        y.backward(g)  # a second backward through the same graph adds the same gradient again
        assert torch.equal(xi.grad, once + once)
        outs.append((y.detach(), once))
    (y0, g0), (y1, g1) = outs
    assert torch.equal(y0, y1)
    assert torch.equal(g0, g1)
    with torch.no_grad():  # and both equal the QCFS of Eq. 2 / 4 computed by spike_count
        k = Fx.spike_count(x, case.T, case.theta, case.theta * 0.5, psi)
        assert torch.equal(y0, Fx.count_to_rate(k, case.T, case.theta if phi is None else case.theta + phi))
