"""Property tests of the single neuron: ParallelIF vs QCFS, the exact firing rule, slots, serial IF."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fxsnn.testing as ft
from fxsnn.errors import ModeError
from fxsnn.nn import ParallelIF
from fxsnn.nn import functional as Fx

DTYPES = st.sampled_from([torch.float32, torch.float64])
SETTINGS = settings(max_examples=150, deadline=None)


@SETTINGS
@given(data=st.data(), dtype=DTYPES)
def test_spike_count_equals_qcfs_integer_target_bit_for_bit(data, dtype):
    case = data.draw(ft.neuron_cases(dtype=dtype, da=False))
    ft.check_spike_count_matches_qcfs(case.x, case.theta, case.T)


@SETTINGS
@given(data=st.data(), dtype=DTYPES)
def test_da_spike_count_equals_da_qcfs_integer_target(data, dtype):
    case = data.draw(ft.neuron_cases(dtype=dtype, da=True))
    phi = data.draw(st.floats(-0.5, 0.5)) * case.theta
    ft.check_spike_count_matches_qcfs(case.x, case.theta, case.T, psi_da=case.psi_da, phi_da=phi)


@SETTINGS
@given(data=st.data(), dtype=DTYPES)
def test_spike_count_with_delta_b_follows_formula_and_exact_rule(data, dtype):
    case = data.draw(ft.neuron_cases(dtype=dtype, delta_b="positive_margin"))
    ft.check_spike_count_formula(case.x, case.theta, case.T, delta_b=case.delta_b, psi_da=case.psi_da)


@SETTINGS
@given(data=st.data(), dtype=DTYPES)
def test_spike_count_when_theta_minus_delta_b_is_not_positive(data, dtype):
    case = data.draw(ft.neuron_cases(dtype=dtype, delta_b="any"))
    ft.check_spike_count_formula(case.x, case.theta, case.T, delta_b=case.delta_b, psi_da=case.psi_da)


def test_nonpositive_effective_threshold_cases_by_hand():
    theta, T = torch.tensor([1.0]), 4
    neuron = ParallelIF(theta, T=T, mode="rate")
    with torch.no_grad():
        neuron.delta_b.fill_(1.0)  # θ' = 0: fire every slot iff y = 4x + 0.5 >= 0
        assert neuron.spike_count(torch.tensor([[-0.125], [-0.13], [3.0]])).flatten().tolist() == [4.0, 0.0, 4.0]
        neuron.delta_b.fill_(2.0)  # θ' = -1: fire slot n iff -n <= y, i.e. n >= -y; y = 4x + 0.5
        # y = -2 -> n in {2, 3, 4}; y = -4 -> n = 4; y = -5 -> none; y = 0.5 -> all
        x = torch.tensor([[-0.625], [-1.125], [-1.375], [0.0]])
        assert neuron.spike_count(x).flatten().tolist() == [3.0, 1.0, 0.0, 4.0]
        # and the spikes then take the *first* slots (t = 1 has the largest ladder value n = T)
        train = neuron.spike_train(torch.tensor([[-0.625]]))
        assert train.flatten().tolist() == [1.0, 1.0, 1.0, 0.0]


@SETTINGS
@given(data=st.data(), dtype=DTYPES)
def test_spikes_are_binary_and_in_the_slots_of_eq8(data, dtype):
    case = data.draw(ft.neuron_cases(dtype=dtype, delta_b="any", max_T=16))
    ft.check_spike_slots(case.x, case.theta, case.T, delta_b=case.delta_b, psi_da=case.psi_da)


@SETTINGS
@given(data=st.data(), dtype=DTYPES)
def test_serial_if_with_constant_input_matches_parallel_count(data, dtype):
    case = data.draw(ft.neuron_cases(dtype=dtype))
    ft.check_serial_matches_parallel(case.x, case.theta, case.T, psi_da=case.psi_da)


def test_exact_reference_marks_bin_edges():
    theta = torch.tensor([1.0])
    x = torch.tensor([[0.125], [0.3]])  # T=4: y = 4x + 0.5 -> 1.0 (an edge), 1.7
    counts, near = ft.exact_spike_count(x, theta, 4)
    assert counts.flatten().tolist() == [1, 1]
    assert near.flatten().tolist() == [True, False]


@SETTINGS
@given(data=st.data(), dtype=DTYPES)
def test_spike_mode_without_autograd_equals_the_autograd_forward_on_time_varying_input(data, dtype):
    """The no-grad spike forward (the potential from the time sum where T is a power of two) is bit-identical
    to the autograd forward (the potential from the time-mean), on inputs that differ from slot to slot."""
    case = data.draw(ft.neuron_cases(dtype=dtype, delta_b="any", max_T=16))
    slices = [case.x * data.draw(st.sampled_from([1.0, 0.5, 0.0, -1.0, 3.0])) for _ in range(case.T)]
    train_in = torch.cat(slices)  # [T·B, C], time-major
    neuron = ParallelIF(case.theta, T=case.T, psi_da=case.psi_da, mode="spike")
    with torch.no_grad():
        neuron.delta_b.copy_(case.delta_b)
        fast = neuron(train_in)
    reference = neuron(train_in)  # grad enabled: delta_b requires grad, so the autograd function runs
    assert reference.requires_grad and not fast.requires_grad
    assert torch.equal(fast, reference.detach())


def test_potential_from_the_time_sum_equals_the_potential_of_the_mean_for_power_of_two_T():
    gen = torch.Generator().manual_seed(0)
    for T in (1, 2, 4, 8, 16, 32):
        for dtype in (torch.float32, torch.float64):
            xt = torch.randn(T, 64, 5, generator=gen, dtype=dtype) * 10
            psi, psi_da = torch.rand(5, dtype=dtype), torch.randn(5, dtype=dtype)
            for pda in (None, psi_da):
                want = Fx.potential(xt.mean(dim=0), T, psi, pda)
                assert torch.equal(Fx.potential_from_sum(xt.sum(dim=0), T, psi, pda), want), (T, dtype, pda)


def test_spike_mode_refuses_a_batch_that_is_not_a_multiple_of_T_with_and_without_autograd():
    neuron = ParallelIF(torch.tensor([1.0, 2.0]), T=4, mode="spike")
    x = torch.rand(6, 2)  # 6 is not a multiple of T = 4
    with pytest.raises(ModeError, match=r"expects a time-major \[T\*B, \.\.\.\] input; got batch 6.*set_mode"):
        neuron(x)
    with torch.no_grad(), pytest.raises(ModeError, match=r"got batch 6, not a multiple of T"):
        neuron(x)
