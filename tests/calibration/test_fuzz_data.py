"""Hypothesis fuzz (issue 9): random batch shapes, dtypes and NaN/Inf placement against ``convert`` and each data
step. One property: either a clear fxsnn error, or a finite result, and the user's model is unchanged."""

from __future__ import annotations

import torch
from helpers import state, tiny_da, tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fxsnn
from fxsnn.calibration.stage1 import reestimate_bn_stats


def _finite(module) -> bool:
    return all(torch.isfinite(v).all() for v in module.state_dict().values() if v.is_floating_point())


def _steps(model_dtype):
    def convert(model, data):
        return fxsnn.convert(
            model,
            data,
            T=2,
            method="full",
            progress=False,
            config=fxsnn.ConvertConfig().override("stage1.steps=1", "stage2.steps=1"),
        )

    def calibrate(model, data):
        return fxsnn.calibrate(fxsnn.passes.insert_recorders(fxsnn.trace(model), percentile=99.0), data, progress=False)

    return {
        "convert": (lambda: tiny_model(dtype=model_dtype), convert),
        "calibrate": (lambda: tiny_model(dtype=model_dtype), calibrate),
        "evaluate": (lambda: tiny_model(dtype=model_dtype), lambda m, d: fxsnn.evaluate(m, d, progress=False)),
        "calibrate_da": (lambda: tiny_da(dtype=model_dtype), lambda m, d: fxsnn.calibrate_da(m, d, progress=False)),
        "reestimate_bn_stats": (
            lambda: tiny_da(dtype=model_dtype),
            lambda m, d: reestimate_bn_stats(m, d, progress=False),
        ),
        "recalibrate_bn": (
            lambda: tiny_da(dtype=model_dtype),
            lambda m, d: fxsnn.recalibrate_bn(m, d, steps=2, holdout=None, progress=False),
        ),
        "tune_delta_b": (
            lambda: fxsnn.passes.lower_to_paraif(tiny_da(dtype=model_dtype), T=4),
            lambda m, d: fxsnn.tune_delta_b(m, d, steps=2, holdout=None, progress=False),
        ),
    }


@st.composite
def batches(draw):
    n = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    out = []
    for _ in range(n):
        b = draw(st.integers(1, 4))
        c = draw(st.sampled_from([3, 3, 3, 2]))
        hw = draw(st.sampled_from([8, 8, 4, 1]))
        x = torch.randn(b, c, hw, hw, generator=torch.Generator().manual_seed(draw(st.integers(0, 99)))).to(dtype)
        poison = draw(st.sampled_from([None, None, float("nan"), float("inf"), -float("inf")]))
        if poison is not None:
            x.view(-1)[draw(st.integers(0, x.numel() - 1))] = poison
        y = torch.tensor(draw(st.lists(st.integers(-1, 3), min_size=b, max_size=b)), dtype=torch.long)
        out.append((x, y))
    return out


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=batches(),
    step=st.sampled_from(sorted(_steps(torch.float32))),
    model_dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_bad_data_gives_a_clear_error_or_a_finite_result_and_never_touches_the_model(data, step, model_dtype):
    make, run = _steps(model_dtype)[step]
    model = make()
    before = state(model)
    try:
        out = run(model, data)
    except fxsnn.errors.FxsnnError:
        pass
    else:
        if isinstance(out, torch.nn.Module):
            assert _finite(out)
        else:
            assert torch.isfinite(torch.tensor(out.loss))
    after = state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
