"""Property tests of the single neuron: ParallelIF vs QCFS, the exact firing rule, slots, serial IF."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fxsnn.testing as ft
from fxsnn.nn import ParallelIF

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
