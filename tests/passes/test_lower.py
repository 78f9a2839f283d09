"""Lowering to ParallelIF: signature, modes, MaxPool, serial reference, printouts, bad input."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxsnn
from fxsnn.nn import ParallelIF, TimeExpand, TimeMean


class Small(nn.Module):
    def __init__(self, pool=None):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)
        self.pool = pool

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if self.pool == "after_neuron":
            x = F.max_pool2d(x, 2)
            x = F.relu(self.conv2(x))
        elif self.pool == "before_neuron":
            x = F.relu(F.max_pool2d(self.conv2(x), 2))
        else:
            x = F.relu(F.avg_pool2d(self.conv2(x), 2))
        return self.fc(torch.flatten(x, 1))


def _qcfs(model, T, x, allow_analog=False):
    gm = fxsnn.passes.insert_recorders(fxsnn.trace(model.eval()), allow_analog=allow_analog)
    gm = fxsnn.calibrate(gm, [x], progress=False)
    return fxsnn.passes.to_qcfs(gm, levels=T)


X = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_lowered_network_keeps_the_ann_signature_in_both_modes():
    q = _qcfs(Small(), 4, X)
    for mode in ("spike", "rate"):
        snn = fxsnn.passes.lower_to_paraif(q, T=4, mode=mode)
        assert snn(X).shape == (6, 3)
        assert fxsnn.modes.get_mode(snn) == mode and fxsnn.modes.time_steps(snn) == 4
    mods = [type(m) for m in snn.modules()]
    assert mods.count(ParallelIF) == 2 and mods.count(TimeExpand) == 1 and mods.count(TimeMean) == 1


def test_set_mode_switches_in_place_and_both_modes_agree():
    snn = fxsnn.passes.lower_to_paraif(_qcfs(Small(), 3, X), T=3, mode="spike")
    spike = snn(X)
    assert fxsnn.set_mode(snn, "rate") is snn
    assert torch.allclose(snn(X), spike, atol=1e-5)
    with pytest.raises(ValueError, match="mode must be one of"):
        fxsnn.set_mode(snn, "burst")


def test_maxpool_on_a_neuron_output_runs_in_rate_mode_exactly():
    q = _qcfs(Small(pool="after_neuron"), 4, X)
    snn = fxsnn.passes.lower_to_paraif(q, T=4, mode="rate")
    assert torch.equal(snn(X), q(X))
    fxsnn.set_mode(snn, "spike")
    assert torch.allclose(snn(X), q(X), atol=1e-5)


def test_maxpool_between_neurons_works_in_spike_mode_and_rate_mode_refuses_it_naming_the_node():
    q = _qcfs(Small(pool="before_neuron"), 4, X, allow_analog=True)  # a MaxPool of analog values: a hybrid
    snn = fxsnn.passes.lower_to_paraif(q, T=4, mode="spike")
    assert snn(X).shape == (6, 3)
    with pytest.raises(fxsnn.ModeError, match="node 'max_pool2d'.*mode='spike'"):
        fxsnn.set_mode(snn, "rate")
    with pytest.raises(fxsnn.ModeError, match="max_pool2d"):
        fxsnn.passes.lower_to_paraif(q, T=4, mode="rate")


def test_nonlinear_op_between_neurons_blocks_rate_mode():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = F.relu(self.a(x))
            return self.b(F.relu(torch.sigmoid(h) * h))

    x = torch.randn(5, 4)
    gm = fxsnn.passes.insert_recorders(fxsnn.trace(Gate()), allow_analog=True)  # the sigmoid gate: a hybrid
    gm = fxsnn.calibrate(gm, [x], progress=False)
    snn = fxsnn.passes.lower_to_paraif(fxsnn.passes.to_qcfs(gm, levels=2), T=2)
    blockers = fxsnn.graph.rate_mode_blockers(snn)
    assert [n.name for n, _ in blockers] == ["sigmoid", "mul"]


def test_calibrated_recorders_are_refused_by_lowering_and_fspc_is_qcfs_with_levels_equal_to_T():
    gm = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(Small().eval())), [X], progress=False)
    with pytest.raises(
        fxsnn.ConversionError, match=r"lower_to_paraif: site 'relu' .*fxsnn.passes.to_qcfs\(gm, levels=T\)"
    ):
        fxsnn.passes.lower_to_paraif(gm, T=4, mode="rate")
    q = fxsnn.passes.to_qcfs(gm, levels=4)
    b = fxsnn.passes.lower_to_paraif(q, T=4, mode="rate")
    assert torch.equal(q(X), b(X))


def test_serial_reference_matches_parallel_where_neuron_inputs_are_constant():
    """One hidden neuron layer: its input current is the (constant) analog input, so serial == parallel."""
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.randn(32, 5, dtype=torch.float64)
    model = model.double()
    gm = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(model)), [x], progress=False)
    snn = fxsnn.passes.lower_to_paraif(fxsnn.passes.to_qcfs(gm, levels=6), T=6, mode="rate")
    serial = fxsnn.passes.to_serial(snn)
    assert torch.allclose(serial(x), snn(x), atol=1e-9)
    counts = serial.spike_counts()["1"]
    assert torch.equal(counts, fxsnn.report.probes.spike_counts(snn, x)["1"])


def test_serial_reference_runs_a_deep_network_step_by_step():
    snn = fxsnn.passes.lower_to_paraif(_qcfs(Small(pool="after_neuron"), 4, X), T=4)
    out = fxsnn.passes.to_serial(snn)(X)
    assert out.shape == (6, 3) and torch.isfinite(out).all()


def test_every_stage_prints_what_happened():
    model = Small().eval()
    gm = fxsnn.passes.insert_recorders(fxsnn.trace(model))
    assert "ActivationRecorder(channels=4, theta=max, no data)" in str(gm)
    gm = fxsnn.calibrate(gm, [X], progress=False)
    assert "batches=1" in str(gm)
    q = fxsnn.passes.to_da_qcfs(gm, levels=4)
    assert "DAQCFS(channels=4, levels=4" in str(q) and "original=clip-ReLU" in str(q)
    snn = fxsnn.passes.lower_to_paraif(q, T=4)
    text = str(snn)
    assert "ParallelIF(channels=4, T=4, mode=spike" in text and "TimeExpand(T=4, mode=spike, repeat=False" in text
    assert "self.time_expand(x)" in snn.code and "self.time_mean(fc)" in snn.code
    # deterministic names: the same conversion twice prints the same
    snn2 = fxsnn.passes.lower_to_paraif(q, T=4)
    assert snn2.code == snn.code and [n for n, _ in snn2.named_modules()] == [n for n, _ in snn.named_modules()]


# -- bad input -----------------------------------------------------------------------
@pytest.mark.parametrize("T", [0, -1, 2.5, "4", True])
def test_bad_T_is_rejected_with_the_accepted_range(T):
    q = _qcfs(Small(), 2, X)
    with pytest.raises((TypeError, ValueError), match="T must be an integer >= 1"):
        fxsnn.passes.lower_to_paraif(q, T=T)


@pytest.mark.parametrize("levels", [0, -3, 1.5])
def test_bad_levels_are_rejected(levels):
    gm = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(Small())), [X], progress=False)
    with pytest.raises((TypeError, ValueError), match="levels must be an integer >= 1"):
        fxsnn.passes.to_qcfs(gm, levels=levels)


def test_model_without_relu_is_refused():
    with pytest.raises(fxsnn.ConversionError, match="no ReLU activation site"):
        fxsnn.passes.insert_recorders(fxsnn.trace(nn.Sequential(nn.Linear(3, 3), nn.Tanh())))


def test_lowering_raw_relus_or_recorders_without_data_is_refused():
    gm = fxsnn.trace(Small())
    with pytest.raises(fxsnn.ConversionError, match="insert_recorders"):
        fxsnn.passes.lower_to_paraif(fxsnn.passes.normalize(gm), T=2)
    with pytest.raises(fxsnn.ConversionError, match="functional ReLU.*normalize"):
        fxsnn.passes.lower_to_paraif(gm, T=2)
    with pytest.raises(fxsnn.CalibrationError, match="recorder 'relu' saw no data.*fxsnn.calibrate"):
        fxsnn.passes.lower_to_paraif(fxsnn.passes.insert_recorders(gm), T=2)


def test_passes_reject_things_that_are_not_modules():
    for fn in (fxsnn.passes.normalize, fxsnn.passes.insert_recorders, fxsnn.find_sites):
        with pytest.raises(TypeError, match="expects a torch.nn.Module"):
            fn([1, 2, 3])
    with pytest.raises(TypeError, match="expects a torch.nn.Module"):
        fxsnn.passes.lower_to_paraif(42, T=2)


def test_input_on_another_dtype_than_the_model_gets_a_clear_error():
    snn = fxsnn.passes.lower_to_paraif(_qcfs(Small(), 2, X), T=2, mode="rate")
    with pytest.raises(fxsnn.DataError, match="float64.*float32.*x.to"):
        snn(X.double())
    gm = fxsnn.passes.insert_recorders(fxsnn.trace(Small()))
    with pytest.raises(fxsnn.DataError, match="batch 0 is torch.float64"):
        fxsnn.calibrate(gm, [X.double()])


def test_a_plain_module_is_traced_automatically_by_passes():
    gm = fxsnn.passes.insert_recorders(Small())
    assert any(isinstance(m, fxsnn.nn.ActivationRecorder) for m in gm.modules())


def test_set_mode_on_an_unlowered_model_is_refused():
    with pytest.raises(fxsnn.ConversionError, match="lower_to_paraif"):
        fxsnn.set_mode(fxsnn.trace(Small()), "rate")


def test_lowered_network_is_in_eval_mode_even_from_a_training_model():
    model = Small().train()
    gm = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(model)), [X], progress=False)
    assert gm.training  # passes keep the model's flag...
    snn = fxsnn.passes.lower_to_paraif(fxsnn.passes.to_qcfs(gm, levels=2), T=2)
    assert not snn.training and not any(m.training for m in snn.modules())  # ...a converted SNN is for inference
