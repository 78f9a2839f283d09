"""Property-test a model of your own with fxsnn.testing (run with pytest).

pytest examples/property_test_my_model.py
"""

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fxsnn
import fxsnn.testing as ft


class MyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 2)  # MaxPool on a neuron's output: exact in rate mode too
        x = self.conv2(x).relu_() + x  # an in-place method ReLU and a residual add
        return self.fc(torch.flatten(x, 1))


@settings(max_examples=15, deadline=None)
@given(T=ft.time_steps(8), seed=st.integers(0, 1000))
def test_my_net_converts_losslessly(T, seed):
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    model = MyNet().eval()
    gm = ft.check_input_untouched(fxsnn.passes.insert_recorders, fxsnn.trace(model))
    ft.check_rewrite_preserves_output(lambda g: gm, fxsnn.trace(model), x)
    gm = fxsnn.calibrate(gm, [x], progress=False)
    q = ft.check_input_untouched(fxsnn.passes.to_qcfs, gm, levels=T)
    snn = ft.check_input_untouched(fxsnn.passes.lower_to_paraif, q, T=T, mode="rate")
    with torch.no_grad():
        assert torch.equal(snn(x), q(x))  # Eq. 9, network level
    ft.check_rate_matches_spike(snn, x)  # both execution modes agree


@settings(max_examples=50, deadline=None)
@given(case=ft.neuron_cases(delta_b="any"))
def test_the_neuron_follows_the_exact_firing_rule(case):
    ft.check_spike_count_formula(case.x, case.theta, case.T, delta_b=case.delta_b, psi_da=case.psi_da)
