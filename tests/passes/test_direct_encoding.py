"""Direct encoding (issue 13, trust issue item 13): the layers before the first neuron run once per image.

The first neuron of a spike-mode network takes the time-constant current itself, so its time-mean is
exact and its spike count is the QCFS integer target on every bin edge (a float32 mean of T copies of
x is not always x: before this, T = 7, 8, 16, 32 gave counts off by one on bin edges ± 1 ulp).
"""

import pytest
import torch
from torch import nn

import fxsnn
from fxsnn.nn import QCFS, ParallelIF, TimeExpand
from fxsnn.nn import functional as Fx

TS = [1, 2, 3, 4, 5, 6, 7, 8, 16, 32]


def _bin_edges(theta: torch.Tensor, T: int) -> torch.Tensor:
    """``[N, C]`` float32 inputs on every bin edge ``x·T + θ/2 = n·θ`` (n = -1..T+1) and 1, 2 ulp either side."""
    n = torch.arange(-1, T + 2, dtype=torch.float64).view(-1, 1)
    th = theta.double().view(1, -1)
    edge = ((n * th - th / 2) / T).float()
    up, down = torch.full_like(edge, float("inf")), torch.full_like(edge, -float("inf"))
    rows = [edge]
    for direction in (up, down):
        x = edge
        for _ in range(2):
            x = torch.nextafter(x, direction)
            rows.append(x)
    return torch.cat(rows)


class _OneLayer(nn.Module):
    def __init__(self, C: int):
        super().__init__()
        self.fc = nn.Linear(C, C, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(C))  # x·1 + 0·rest: the neuron sees the input exactly
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.fc(x))


def _lowered(T: int, theta: torch.Tensor):
    model = _OneLayer(theta.numel()).eval()
    gm = fxsnn.calibrate(
        fxsnn.passes.insert_recorders(fxsnn.trace(model)), [torch.rand(4, theta.numel())], progress=False
    )
    q = fxsnn.passes.to_qcfs(gm, levels=T)
    (site,) = [m for m in q.modules() if isinstance(m, QCFS)]
    with torch.no_grad():
        site.theta.copy_(theta)
    return q, fxsnn.passes.lower_to_paraif(q, T=T, mode="spike")


@pytest.mark.parametrize("T", TS)
def test_first_neuron_counts_are_the_qcfs_target_on_bin_edges(T):
    theta = torch.tensor([1.0, 0.3, 2.7, 0.1, 1.7, 5.0])
    q, snn = _lowered(T, theta)
    x = _bin_edges(theta, T)
    (neuron,) = fxsnn.modes.neurons(snn).values()
    assert neuron.direct
    trains = []
    h = neuron.register_forward_hook(lambda m, i, o: trains.append(o))
    with torch.no_grad():
        out = snn(x)
    h.remove()
    counts = (trains[0].reshape(T, *x.shape) != 0).sum(0).to(x.dtype)  # the spikes actually written
    target = Fx.spike_count(x, T, theta, theta * 0.5)  # the QCFS integer target (what QCFS computes)
    assert torch.equal(counts, target), f"{int((counts != target).sum())} of {x.numel()} counts differ"
    assert torch.equal(fxsnn.set_mode(snn, "rate")(x), q(x))
    assert out.shape == x.shape


@pytest.mark.parametrize("T", TS)
def test_a_time_major_input_with_equal_slices_has_an_exact_mean(T):
    """Without ``direct``, a [T·B] input whose T slices are bit-identical is averaged exactly too."""
    theta = torch.tensor([1.0, 0.3, 2.7, 0.1])
    x = _bin_edges(theta, T)
    neuron = ParallelIF(theta, T=T, mode="spike")
    with torch.no_grad():
        train = neuron(x.repeat(T, 1))
    counts = (train.reshape(T, *x.shape) != 0).sum(0).to(x.dtype)
    assert torch.equal(counts, Fx.spike_count(x, T, theta, theta * 0.5))
    varying = torch.cat([x + i for i in range(T)])  # not constant: the ordinary mean
    assert torch.equal(neuron.time_mean(varying), varying.reshape(T, *x.shape).mean(0))


def test_the_stem_runs_once_per_image():
    """Conv → BN → ReLU → ...: the first conv sees [B, ...] in spike mode; the rest sees [T·B, ...]."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU()).eval()
    x = torch.randn(5, 3, 8, 8)
    gm = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(model)), [x], progress=False)
    snn = fxsnn.passes.lower_to_paraif(fxsnn.passes.to_qcfs(gm, levels=4), T=4)
    seen = {}

    def hook(module, inputs, output, name):
        seen[name] = inputs[0].shape[0]  # returns None: the output is left alone

    for name in ("0", "3"):
        snn.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: hook(m, i, o, name))
    with torch.no_grad():
        snn(x)
    assert seen == {"0": 5, "3": 20}
    expands = [m for m in snn.modules() if isinstance(m, TimeExpand)]
    assert len(expands) == 1 and not expands[0].repeat  # the input's: checks only


def test_a_time_constant_branch_is_repeated_where_it_meets_spikes():
    """x → conv → (ReLU(y) + y): y is constant over time, the sum is not; y is repeated at the add."""

    class Fork(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu, self.fc = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            y = self.conv(x)
            return self.fc(self.relu(y) + y)

    model, x = Fork().eval(), torch.randn(3, 3, 6, 6)
    gm = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(model)), [x], progress=False)
    q = fxsnn.passes.to_qcfs(gm, levels=4)
    snn = fxsnn.passes.lower_to_paraif(q, T=4)
    assert sum(isinstance(m, TimeExpand) and m.repeat for m in snn.modules()) == 1
    with torch.no_grad():
        spike = snn(x)
        rate = fxsnn.set_mode(snn, "rate")(x)
    assert torch.allclose(spike, rate, atol=1e-5) and torch.equal(rate, q(x))


def test_a_size_read_before_the_first_neuron_keeps_the_old_layout():
    """A batch size taken before the first neuron and used after it: the input is repeated at once, as before."""

    class Sized(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.relu = nn.Linear(6, 6), nn.ReLU()

        def forward(self, x):
            b = x.size(0)
            return self.relu(self.fc(x)).reshape(b, -1)

    model, x = Sized().eval(), torch.randn(4, 6)
    gm = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(model)), [x], progress=False)
    q = fxsnn.passes.to_qcfs(gm, levels=3)
    snn = fxsnn.passes.lower_to_paraif(q, T=3)
    assert not any(n.direct for n in fxsnn.modes.neurons(snn).values())
    assert [m.repeat for m in snn.modules() if isinstance(m, TimeExpand)] == [True]
