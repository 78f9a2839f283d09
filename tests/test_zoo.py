"""A zoo of real architectures (issue 10, item 10): trace → recorders → QCFS → lowering on models nobody here wrote.

Runs only with ``FXSNN_ZOO=1`` (2.4 min measured on the 2 shared cores at load ~20): torchvision models with
random weights at their smallest inputs (the heavy VGG / AlexNet classifiers are left to benchmarks/zoo.py), plus
a few timm models when timm is installed (``pip install fxsnn[zoo]``). Each case asserts, through
benchmarks/zoo.py's :func:`check_model` (which also writes docs/zoo.md): the pipeline runs, rate mode runs and is
bit-identical to the QCFS network, spike and rate mode agree on all but at most 1 % of the spike counts (float32
rounding at bin edges, the tolerance of ``fxsnn.testing.check_rate_matches_spike``), and the user's model comes
back unchanged. A model with analog nonlinearities is converted with ``allow_analog=True`` where that keyword
exists and must come back marked as a hybrid whose analog ops are listed.
"""

from __future__ import annotations

import os

import pytest
import torch

pytestmark = pytest.mark.skipif(os.environ.get("FXSNN_ZOO") != "1", reason="set FXSNN_ZOO=1 to run the model zoo")

# name: (input side, analog kinds that must be listed: a hybrid when not empty)
TORCHVISION = {
    "resnet18": (32, set()),
    "squeezenet1_1": (32, set()),
    "mobilenet_v2": (32, set()),  # ReLU6: clipped-ReLU sites
    "shufflenet_v2_x0_5": (32, set()),  # channel shuffle: x.size() and floordiv are not time-varying
    "mnasnet0_5": (32, set()),
    "regnet_x_400mf": (32, set()),
    "googlenet": (32, set()),
    "densenet121": (32, set()),
    "mobilenet_v3_small": (32, {"Hardswish", "Hardsigmoid"}),
}
TIMM = {"resnet18d": (32, set()), "repvgg_a0": (32, set()), "regnetx_002": (32, set())}


@pytest.fixture(scope="module")
def zoo():
    import zoo as zoo_module  # benchmarks/zoo.py (tests/conftest.py puts benchmarks/ on sys.path)

    torch.set_num_threads(1)
    return zoo_module


def _check(zoo, name, source, side, analog):
    row = zoo.check_model(name, zoo.build(name, source), side=side, T=4, source=source)
    assert row.error is None, row.error
    assert row.unchanged, f"{name}: the user's model was changed by the conversion"
    assert row.sites > 0
    assert analog <= set(row.analog), (analog, row.analog)
    assert row.hybrid == bool(analog), f"{name}: hybrid={row.hybrid}, analog ops {row.analog}"
    if row.hybrid:  # an analog op between neurons does not commute with the time-mean: rate mode is refused
        assert row.rate.startswith("blocked: "), row.rate
        return row
    assert row.rate_exact is True, f"{name}: rate mode vs QCFS: {row.rate}"
    assert row.counts and row.mismatch_rate <= 0.01, f"{name}: {row.mismatched}/{row.counts} spike counts differ"
    return row


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_model_converts_rate_equals_qcfs_and_spike_matches_rate(zoo, name):
    pytest.importorskip("torchvision")
    side, analog = TORCHVISION[name]
    _check(zoo, name, "torchvision", side, analog)


@pytest.mark.parametrize("name", sorted(TIMM))
def test_timm_model_converts_rate_equals_qcfs_and_spike_matches_rate(zoo, name):
    pytest.importorskip("timm")
    side, analog = TIMM[name]
    _check(zoo, name, "timm", side, analog)


def test_a_hybrid_is_marked_and_lists_its_analog_ops(zoo):
    """The page marks a hybrid as such and names its analog ops; a ReLU-only model is 'spiking'."""
    pytest.importorskip("torchvision")
    rows = [_check(zoo, n, "torchvision", *TORCHVISION[n]) for n in ("mobilenet_v3_small", "shufflenet_v2_x0_5")]
    text = zoo.page(rows, 4, "python benchmarks/zoo.py --models mobilenet_v3_small,shufflenet_v2_x0_5", 1.0)
    hybrid, spiking = (line for line in text.splitlines() if line.startswith("| torchvision"))
    assert "hybrid (allow_analog)" in hybrid and "Hardswish ×" in hybrid and "blocked: " in hybrid
    assert "| spiking |" in spiking and "bit-identical" in spiking and "| yes |" in spiking
    assert "Rate mode ran on 1 of 2 models and was bit-identical to QCFS on 1 of them." in text


def test_a_model_without_relu_is_refused_with_its_analog_ops_listed(zoo):
    """EfficientNet-B0 (SiLU, Sigmoid gates) has no ReLU site: the zoo records the refusal and what it contains."""
    pytest.importorskip("torchvision")
    row = zoo.check_model("efficientnet_b0", zoo.build("efficientnet_b0"), side=32, T=4, source="torchvision")
    assert row.error is not None and row.error.startswith("ConversionError: ") and "ReLU" in row.error
    assert {"SiLU", "Sigmoid"} <= set(row.analog) and row.hybrid and row.unchanged
    assert "| refused: ConversionError" in zoo.page([row], 4, "zoo", 1.0)
