"""Per-module training flags and requires_grad survive every data step, evaluation, analysis and convert."""

import pytest
import torch
from helpers import tiny_da, tiny_data, tiny_model

import fxsnn
from fxsnn.calibration import calibrate_, calibrate_da_, reestimate_bn_stats_
from fxsnn.calibration.state import preserved_state


def _frozen_bn(model: torch.nn.Module) -> torch.nn.Module:
    """A train-mode model whose first BatchNorm the user froze in eval mode (weights frozen too)."""
    model.train()
    model.bn1.eval()
    model.bn1.weight.requires_grad_(False)
    return model


def _flags(model: torch.nn.Module) -> list:
    return [(n, m.training) for n, m in model.named_modules()] + [
        (n, p.requires_grad) for n, p in model.named_parameters()
    ]


def test_preserved_state_restores_every_module_and_parameter_also_on_error():
    model = _frozen_bn(tiny_model())
    before = _flags(model)
    with pytest.raises(RuntimeError, match="boom"), preserved_state(model):
        model.train()
        for p in model.parameters():
            p.requires_grad_(True)
        raise RuntimeError("boom")
    assert _flags(model) == before and model.training and not model.bn1.training


def test_frozen_bn_survives_evaluate_and_convert_on_the_users_model():
    model = _frozen_bn(tiny_model())
    before = _flags(model)
    fxsnn.evaluate(model, tiny_data(), progress=False)
    assert _flags(model) == before
    config = fxsnn.ConvertConfig().override("stage1.epochs=1")
    fxsnn.convert(model, tiny_data(), T=2, method="full", config=config, progress=False)
    assert _flags(model) == before


def test_frozen_bn_survives_calibrate_calibrate_da_and_analyze_on_a_graph():
    data = tiny_data()
    gm = fxsnn.passes.insert_recorders(fxsnn.trace(tiny_model()))
    _frozen_bn(gm)
    before = _flags(gm)
    out = fxsnn.calibrate(gm, data, progress=False)
    assert _flags(gm) == before and _flags(out) == before
    calibrate_(gm, data, progress=False)
    assert _flags(gm) == before
    da = _frozen_bn(fxsnn.passes.to_da_qcfs(gm, levels=2))
    before = _flags(da)
    out = fxsnn.calibrate_da(da, data, progress=False)
    assert _flags(da) == before and _flags(out) == before
    calibrate_da_(da, data, progress=False)
    assert _flags(da) == before
    out = fxsnn.calibration.reestimate_bn_stats(da, data, progress=False)
    assert _flags(da) == before and _flags(out) == before
    reestimate_bn_stats_(da, data, progress=False)
    assert _flags(da) == before
    ann = _frozen_bn(tiny_model())
    snn = fxsnn.passes.lower_to_paraif(tiny_da(T=2), T=2, mode="rate")
    _frozen_bn(snn)
    before_ann, before_snn = _flags(ann), _flags(snn)
    fxsnn.analyze(ann, snn, data, progress=False)
    assert _flags(ann) == before_ann and _flags(snn) == before_snn


def test_frozen_bn_survives_both_stages():
    data = tiny_data()
    da = _frozen_bn(tiny_da(T=2))
    before = _flags(da)
    out = fxsnn.recalibrate_bn(da, data, epochs=1, progress=False)
    assert _flags(da) == before
    snn = _frozen_bn(fxsnn.passes.lower_to_paraif(out, T=2, mode="rate"))
    before = _flags(snn)
    fxsnn.tune_delta_b(snn, data, epochs=1, progress=False)
    assert _flags(snn) == before
