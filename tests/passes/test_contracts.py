"""Passes with contracts: requires / ensures, one copy and one finish per pass, errors prefixed with the pass name."""

import pytest
import torch
from helpers import dead_recorder
from torch import nn

import fxsnn
from fxsnn.passes import base

MODEL = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2)).eval()
X = torch.randn(3, 3, 6, 6, generator=torch.Generator().manual_seed(0))


def _stages():
    rec = fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(MODEL)), [X], progress=False)
    q = fxsnn.passes.to_qcfs(rec, levels=2)
    return rec, q, fxsnn.passes.lower_to_paraif(q, T=2)


def test_every_pass_states_its_contract():
    P = fxsnn.passes
    assert P.normalize.contract.requires == () and "functional" not in P.normalize.contract.ensures
    assert (P.insert_recorders.contract.requires, P.insert_recorders.contract.ensures) == (
        ("functional", "relu"),
        ("recorder",),
    )
    assert P.to_qcfs.contract.requires == ("recorder", "qcfs", "da-qcfs") and P.to_qcfs.contract.ensures == ("qcfs",)
    assert P.to_da_qcfs.contract.ensures == ("da-qcfs",)
    assert (P.lower_to_paraif.contract.requires, P.lower_to_paraif.contract.ensures) == (
        ("qcfs", "da-qcfs"),
        ("paraif",),
    )
    with pytest.raises(ValueError, match="unknown stages"):
        base.Contract("p", ("spiking",), ())


def test_passes_refuse_the_wrong_stage_naming_the_pass_and_the_fix():
    rec, q, snn = _stages()
    with pytest.raises(
        fxsnn.ConversionError,
        match=r"^fxsnn.passes.lower_to_paraif: site '2' is a ActivationRecorder.*to_qcfs\(gm, levels=T\)",
    ):
        fxsnn.passes.lower_to_paraif(rec, T=2)
    with pytest.raises(
        fxsnn.ConversionError, match=r"^fxsnn.passes.to_qcfs: site '2' is a ParallelIF.*not been converted this far"
    ):
        fxsnn.passes.to_qcfs(snn, levels=2)
    with pytest.raises(fxsnn.ConversionError, match=r"^fxsnn.passes.insert_recorders: site '2' is a QCFS"):
        fxsnn.passes.insert_recorders(q)
    with pytest.raises(fxsnn.ConversionError, match=r"^fxsnn.passes.to_da_qcfs: site '2' is a ReLU.*insert_recorders"):
        fxsnn.passes.to_da_qcfs(fxsnn.trace(MODEL), levels=2)
    with pytest.raises(fxsnn.CalibrationError, match=r"^fxsnn.passes.to_qcfs: recorder '2' saw no data"):
        fxsnn.passes.to_qcfs(fxsnn.passes.insert_recorders(MODEL), levels=2)
    with pytest.raises(ValueError, match=r"^fxsnn.passes.lower_to_paraif: mode must be one of"):
        fxsnn.passes.lower_to_paraif(q, T=2, mode="burst")


def test_each_pass_copies_its_input_once_and_finishes_once(monkeypatch):
    calls = {"copy": 0, "finish": 0}
    real_copy, real_finish = base.copy_graph_module, base.finish

    def copy(gm):
        calls["copy"] += 1
        return real_copy(gm)

    def finish(gm):
        calls["finish"] += 1
        return real_finish(gm)

    monkeypatch.setattr(base, "copy_graph_module", copy)
    monkeypatch.setattr(base, "finish", finish)
    gm = fxsnn.trace(MODEL)
    rec = fxsnn.passes.insert_recorders(gm)  # normalises and converts, on one copy
    assert calls == {"copy": 1, "finish": 1}
    rec = fxsnn.calibrate(rec, [X], progress=False)
    for step in (
        lambda: fxsnn.passes.normalize(gm),
        lambda: fxsnn.passes.to_qcfs(rec, levels=2),
        lambda: fxsnn.passes.to_da_qcfs(rec, levels=2),
        lambda: fxsnn.passes.lower_to_paraif(fxsnn.passes.to_qcfs(rec, levels=2), T=2),
    ):
        before = dict(calls)
        step()
        per_pass = 2 if calls["copy"] - before["copy"] == 2 else 1  # the lowering line runs two passes
        assert calls["copy"] - before["copy"] == per_pass and calls["finish"] - before["finish"] == per_pass


def test_an_inner_error_keeps_the_inner_pass_name_and_is_prefixed_once():
    class Bad(nn.Module):
        def forward(self, x):
            y = x.view(-1)
            x.relu_()  # in place on a tensor that y aliases...
            return y + 1  # ...and y is read afterwards

    with pytest.raises(fxsnn.ConversionError) as info:
        fxsnn.passes.insert_recorders(fxsnn.trace(Bad()))
    assert str(info.value).startswith("fxsnn.passes.insert_recorders: node 'relu_'")
    assert str(info.value).count("fxsnn.passes.") == 1


def test_warnings_inside_a_pass_name_the_pass_like_its_errors():
    rec = dead_recorder()
    with pytest.warns(UserWarning, match=r"^fxsnn\.passes\.to_qcfs: recorder '1': no channel ever activated"):
        fxsnn.passes.to_qcfs(rec, levels=2)
