"""Property-test your own models and passes: Hypothesis strategies plus property checks.

Needs the ``test`` extra (``pip install fxsnn[test]``) for Hypothesis.

Example — property-test a model of your own in a few lines::

    from hypothesis import given, settings, strategies as st
    import fxsnn, fxsnn.testing as ft

    @settings(max_examples=10, deadline=None)
    @given(T=ft.time_steps(8), seed=st.integers(0, 100))
    def test_my_model_converts(T, seed):
        x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
        gm = ft.check_input_untouched(fxsnn.passes.insert_recorders, fxsnn.trace(MyNet().eval()))
        gm = fxsnn.calibrate(gm, [x])
        qcfs = fxsnn.passes.to_qcfs(gm, levels=T)
        snn = fxsnn.passes.lower_to_paraif(qcfs, T=T, mode="rate")
        assert torch.equal(snn(x), qcfs(x))      # Eq. 9, network level
        ft.check_rate_matches_spike(snn, x)      # rate vs spike: at most 1 % of counts differ (float32)
        ft.check_rate_equals_spike_float64(snn, x)  # and none in float64
"""

try:
    import hypothesis  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("fxsnn.testing needs Hypothesis: pip install 'fxsnn[test]'") from exc

from .properties import (
    RateSpikeComparison,
    check_input_untouched,
    check_rate_equals_spike_float64,
    check_rate_matches_spike,
    check_rewrite_preserves_output,
    check_serial_matches_parallel,
    check_spike_count_formula,
    check_spike_count_matches_qcfs,
    check_spike_slots,
    exact_spike_count,
)
from .strategies import (
    RELU_SPELLINGS,
    NeuronCase,
    RandomCNN,
    inputs_for,
    neuron_cases,
    random_cnn,
    small_cnns,
    thresholds,
    time_steps,
)

__all__ = [
    "small_cnns",
    "random_cnn",
    "RandomCNN",
    "inputs_for",
    "time_steps",
    "thresholds",
    "neuron_cases",
    "NeuronCase",
    "RELU_SPELLINGS",
    "exact_spike_count",
    "check_spike_count_matches_qcfs",
    "check_spike_count_formula",
    "check_spike_slots",
    "check_serial_matches_parallel",
    "check_rewrite_preserves_output",
    "check_input_untouched",
    "check_rate_matches_spike",
    "check_rate_equals_spike_float64",
    "RateSpikeComparison",
]
